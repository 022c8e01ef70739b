"""What a run shows its user: result tables, figures, the accounting of every input, the
closing summary and the static browse page."""
