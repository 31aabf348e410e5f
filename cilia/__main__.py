"""``python3 -m cilia``: the ``cilia`` command."""

from cilia.cli.main import main

main()
