"""`python -m geotune.cli`."""

from geotune.cli.main import main

main()
