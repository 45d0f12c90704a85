"""`python -m ptalign` = the `ptalign` command (for machines where the package is on PYTHONPATH only)."""

import sys

from ptalign.cli import main

sys.exit(main())
