"""``python -m spfde_search.cli``: the same as the ``spfde`` command."""

from . import main

main()
