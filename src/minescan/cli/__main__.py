"""``python -m minescan.cli``: the same as the ``minescan`` command."""

from minescan.cli import main

main()
