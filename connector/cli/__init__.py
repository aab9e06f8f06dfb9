"""The ``helpdesk-connector`` command line.

One module per area holds that area's commands as module-level functions and
adds them in its ``register(app)``: :mod:`.daemon` (``run``, ``check-config``,
``classify``, ``retry-failed``, ``status``), :mod:`.sandbox`, :mod:`.model`
(``train``, ``evaluate``, ``models``), :mod:`.learning` (``export``,
``retrain``), :mod:`.api` (``serve``) and :mod:`.demo`.  Every command finds
its configuration through :mod:`.config`, the one loader.
"""

from __future__ import annotations

import typer

from connector.cli import api, daemon, demo, learning, model, sandbox

app = typer.Typer(
    name="helpdesk-connector",
    help="Route helpdesk tickets with a local transformer model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: the areas, in the order their commands are listed in ``--help``
AREAS = (daemon, sandbox, model, learning, api, demo)

for _area in AREAS:
    _area.register(app)


def main() -> None:
    app()


__all__ = ["app", "main"]
