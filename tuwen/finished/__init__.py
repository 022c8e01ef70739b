"""The one reader of a finished run: only a complete, consistent state of its files, for
the server, the export and the command line."""
