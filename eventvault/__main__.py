"""``python -m eventvault``: the command line."""

import sys

from eventvault.cli import main

sys.exit(main())
