"""Errors a user can act on: the message names the file, row or id, and what to do."""


class TuwenError(Exception):
    """An error shown to the user as one clear line, without a traceback."""
