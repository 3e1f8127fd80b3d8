"""The user's-input errors, and walking an exception's chain: what a library wrapped around the error that says what
went wrong."""

from __future__ import annotations

from collections.abc import Iterator


class UserInputError(Exception):
    """Base of the errors that are the user's input (a data file, a checkpoint, a setting, a model name), not a bug:
    the message names the file or setting and what was expected, and the command line prints it as one line, without
    a traceback. Each subclass also derives from the builtin error it is (``ValueError``, ``FileNotFoundError``)."""


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from, and so on to the first error: the chain Python's traceback prints
    (``__cause__``, else ``__context__`` unless suppressed by ``raise ... from None``), each exception once."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        yield cur
        seen.add(id(cur))
        cur = cur.__cause__ if cur.__cause__ is not None else (None if cur.__suppress_context__ else cur.__context__)
