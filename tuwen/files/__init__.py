"""The one reader and writer of each file format tuwen touches: atomic writes, Parquet (the
feature-shard contract), images, users' tables, and image folders."""
