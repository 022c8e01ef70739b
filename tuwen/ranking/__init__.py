"""Ranking, one path for every place that ranks: the top-k primitive, exact search over
shards, the scorer of a ranking (one channel or a fusion recipe), fusion's tables and its
tuning on validation, the approximate index, and recall."""
