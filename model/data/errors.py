"""Domain errors of the data package (pure stdlib, imported by every reader)."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file is missing, malformed or inconsistent; the message names the file."""
