"""Errors raised for bad input data: the message names the file (and line) and the fix."""


class DataFormatError(ValueError):
    """A dataset file is missing, truncated or malformed."""


class FetchError(RuntimeError):
    """A download, checksum or extraction failed; nothing half-written is left behind."""
