"""Errors that are the user's to fix: the CLI prints them on one line and exits with code 2."""


class DcvError(Exception):
    """A bad input (params, data file, model dir): the message names the file and the key or line."""
