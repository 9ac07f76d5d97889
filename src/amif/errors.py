"""Error types shared by the library: every data error names the file and the record."""

from __future__ import annotations


class AmifError(Exception):
    """Base class of the errors amif raises on purpose."""


class ConfigError(AmifError, ValueError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(AmifError, ValueError):
    """A data file or one of its records is invalid.

    The message always names the file and, where there is one, the record (row number and id), so a
    user can find and fix it.
    """

    def __init__(self, message: str, *, path: object = None, record: object = None) -> None:
        self.path = None if path is None else str(path)
        self.record = record
        where = []
        if self.path is not None:
            where.append(f"file {self.path}")
        if record is not None:
            where.append(f"record {record}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)


class CheckpointError(AmifError, ValueError):
    """A checkpoint folder is missing, incomplete, or holds tensors of the wrong shape."""
