"""``python -m connector.sandbox --db FILE --fd N``: serve on an inherited socket (used by ``running_sandbox(process=True)``)."""

from __future__ import annotations

from connector.sandbox.server import _main

if __name__ == "__main__":
    _main()
