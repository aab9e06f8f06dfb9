"""A small helpdesk on 127.0.0.1 (SQLite + REST) to try helpdesk-connector and to test adapters against.

``running_sandbox(...)`` serves one in a background thread for tests and
benchmarks; ``helpdesk-connector sandbox`` serves one in the foreground.
"""

from __future__ import annotations

from connector.sandbox.app import Fault, FaultInjector, create_app
from connector.sandbox.db import SandboxDB
from connector.sandbox.server import SandboxHandle, running_sandbox, serve

__all__ = ["Fault", "FaultInjector", "SandboxDB", "SandboxHandle", "create_app", "running_sandbox", "serve"]
