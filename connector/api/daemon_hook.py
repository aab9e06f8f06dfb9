"""Serving the REST API inside ``helpdesk-connector run`` (one process: daemon + API).

Listed in :data:`connector.daemon.JOB_PROVIDERS` as
``"connector.api.daemon_hook:register_jobs"``: when ``api.enabled`` is true the
daemon runs the API as a background task sharing its store, classifier holder
and model reloader; the daemon's shutdown cancels the task, which stops the
server gracefully.
"""

from __future__ import annotations

import logging
from typing import Any

from connector.api.auth import check_bind_address
from connector.api.server import serve_in_background

log = logging.getLogger(__name__)


def register_jobs(daemon: Any) -> None:
    config = daemon.config
    if not config.api.enabled:
        return
    # refuse an unprotected non-loopback address before the daemon starts working
    check_bind_address(config.api.host, config.api.tokens)

    async def serve() -> None:
        await serve_in_background(config, daemon.store, daemon.holder, daemon.reloader)

    daemon.add_task(serve)
