"""Benchmarks: each prints a table of ratios against a baseline run in the same invocation."""

import os
from pathlib import Path

# The real contest sample (the contest layout with ground_truth.csv), named by TUWEN_SAMPLE;
# every benchmark that reads it also takes --sample.
DEFAULT_SAMPLE = Path(os.environ.get("TUWEN_SAMPLE", "teddy2024-sample")).expanduser()
