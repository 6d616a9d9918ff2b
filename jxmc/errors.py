"""Errors that the command line reports in one line, without a traceback."""

from __future__ import annotations

import os


class JxmcError(Exception):
    """Base of the errors jxmc reports to a user (the CLI exits with status 2)."""


class DataError(JxmcError, ValueError):
    """Bad input data, located by file and 1-based line number.

    ``str(err)`` is ``"<path>:<line>: <what is wrong>"`` (or ``"<path>: ..."`` when
    the problem concerns the whole file).
    """

    def __init__(self, path: str | os.PathLike | None, line: int | None, message: str):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


class ModelError(JxmcError):
    """A model directory that is missing, incomplete or from an incompatible version."""


class ConfigError(JxmcError, ValueError):
    """A bad option or a problem the chosen method refuses (e.g. over the memory budget)."""
