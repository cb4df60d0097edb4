"""`python -m esm` runs the command line."""

import sys

from esm.cli import main

sys.exit(main())
