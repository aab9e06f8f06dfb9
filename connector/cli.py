"""The ``helpdesk-connector`` command line.

Each area registers its own commands from its own module, so this file only
assembles them: the daemon (``run``, ``check-config``, ``status``,
``classify``), the sandbox helpdesk, the model lifecycle (``train``,
``evaluate``, ``models``), the learning loop (``export``, ``retrain``) and the
REST API (``serve``).
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="helpdesk-connector",
    help="Route helpdesk tickets with a local transformer model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: modules with a ``register(app)`` function adding their commands
COMMAND_MODULES = (
    "connector.daemon_cli",
    "connector.sandbox.cli",
    "connector.model.cli",
    "connector.learning.cli",
    "connector.api.cli",
    "connector.demo",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
