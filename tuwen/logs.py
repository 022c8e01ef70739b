"""Run a Snakemake script with its output in the rule's log and user errors as one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from tuwen.errors import TuwenError


def run_logged(main: Callable[[object], None], snakemake: object) -> None:
    """Call `main(snakemake)` with stdout, stderr and logging going to the rule's log file.

    A `TuwenError` ends the job with its message in the log and on the console, where
    Snakemake users look first, instead of a traceback.
    """
    console = sys.__stderr__
    log_file = open(snakemake.log[0], "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    sys.stdout = sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        main(snakemake)
    except TuwenError as error:
        logging.getLogger("tuwen").error("%s", error)
        print(f"tuwen error: {error}", file=console)
        sys.exit(1)
    finally:
        log_file.flush()
