"""`python -m tuwen ...`: the command line of a finished run (see tuwen.cli)."""

import os
import sys

if sys.argv[1:2] == ["serve"]:
    # The server runs requests side by side, one thread each: BLAS and torch threads per
    # request would only fight over the cores (8 clients at 50,000 images: 265 queries/s
    # with one thread each, 114 with the default; one client is as fast either way).
    # Set before numpy and torch load; a value given by the user wins.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

from tuwen.cli import main  # noqa: E402 - after the thread settings above

sys.exit(main())
