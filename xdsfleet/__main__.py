"""`python -m xdsfleet`: the same as the `xdsfleet` console script."""

from xdsfleet.cli import main

main()
