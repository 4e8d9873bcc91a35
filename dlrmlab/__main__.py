"""``python -m dlrmlab``: the ``dlrmlab`` command, for a checkout that is not pip-installed."""

from dlrmlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
