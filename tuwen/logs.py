"""Run a Snakemake script with its output in the rule's log and user errors as one line."""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from tuwen.errors import TuwenError

# The bench (bench/scale.py) reads these two lines from every job's log.
STARTUP_LINE = "job start-up: %.3f s from process start to the script's work"
PEAK_RSS_LINE = "job peak RSS: %.1f MB (largest child process %.1f MB)"
WALL_LINE = "job wall: %.3f s from process start"


def run_logged(main: Callable[[Any], None], snakemake: Any) -> None:
    """Call `main(snakemake)` with stdout, stderr and logging going to the rule's log file.

    A `TuwenError` ends the job with its message in the log and on the console, where
    Snakemake users look first, instead of a traceback. The log records the job's fixed
    start-up (interpreter, imports, Snakemake's script preamble) and its peak memory.
    """
    console = sys.__stderr__
    log_file = open(snakemake.log[0], "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    sys.stdout = sys.stderr = log_file
    logging.basicConfig(
        stream=log_file, level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(message)s"
    )
    log = logging.getLogger("tuwen")
    log.info(STARTUP_LINE, time.time() - _process_start())
    try:
        main(snakemake)
    except TuwenError as error:
        log.error("%s", error)
        print(f"tuwen error: {error}", file=console)
        sys.exit(1)
    finally:
        log.info(PEAK_RSS_LINE, *peak_rss_mb())
        log.info(WALL_LINE, time.time() - _process_start())
        log_file.flush()


def _process_start() -> float:
    import psutil  # Snakemake's own dependency

    return psutil.Process().create_time()


def peak_rss_mb() -> tuple[float, float]:
    """Give the peak resident memory of this process and of its largest child so far, in MB."""
    own, child = (
        resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own / 1024, child / 1024
