"""Live search over a finished run: `python -m tuwen serve` (tuwen.serve.app) over the run
held in memory (tuwen.serve.loaded_run)."""
