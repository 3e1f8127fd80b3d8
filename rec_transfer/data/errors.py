"""Errors raised on bad input data."""

from __future__ import annotations

from pathlib import Path

from rec_transfer.utils.errors import UserInputError


class DataFormatError(UserInputError, ValueError):
    """Bad input data: names the file, the line (1-based, if known) and what was expected."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")
