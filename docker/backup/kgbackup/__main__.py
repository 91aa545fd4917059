"""Entry point for ``python -m kgbackup``."""

import sys

from kgbackup.cli import main

sys.exit(main())
