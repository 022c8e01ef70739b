"""A finished run's galleries outside tuwen: Milvus (a server, or a Milvus Lite file) and
clip-retrieval's layout."""
