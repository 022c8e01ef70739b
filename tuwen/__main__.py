"""`python -m tuwen ...`: the command line of a finished run (see tuwen.cli)."""

import sys

from tuwen.cli import main

sys.exit(main())
