"""Errors raised for bad input data (defined in :mod:`ccdn.errors`, re-exported here for the parsers)."""

from ccdn.errors import DataFormatError, FetchError

__all__ = ["DataFormatError", "FetchError"]
