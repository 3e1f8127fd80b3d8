"""Errors in the user's input as the command line says them: one line naming the file, no traceback; and Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml

from rec_transfer.utils.errors import UserInputError, exception_chain


class ConfigError(UserInputError, ValueError):
    """The configuration cannot be used: a ``--config`` file is not valid YAML, or a class of it refused its settings
    (e.g. ``DomainTransfer reinit must be between 0 and 1``). The console says where and stops, without a traceback."""


def refused_setting(err: ValueError, files: Sequence[str]) -> ConfigError:
    """``err``, raised while the config's classes were built, as the error the class itself raised (jsonargparse wraps
    it in its union and subclass errors), prefixed with the config ``files``."""
    where = f"{', '.join(files)}: " if files else ""
    return ConfigError(f"{where}{list(exception_chain(err))[-1]}")


def check_yaml(args: Sequence[str]) -> None:
    """Raises ``ConfigError`` naming file, line and column for a ``--config`` file of ``args`` that is not valid YAML
    (the parser's own message, after its usage text, does not name the file)."""
    paths = [b for a, b in zip(args, args[1:], strict=False) if a in ("--config", "-c")]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in map(Path, paths):
        if not path.is_file():
            continue  # the parser says so itself
        try:
            yaml.safe_load(path.read_text())
        except (yaml.scanner.ScannerError, yaml.parser.ParserError, yaml.composer.ComposerError) as err:  # syntax
            mark = err.problem_mark or err.context_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML: {err.problem or err.context}") from err


@contextmanager
def said_in_one_line() -> Iterator[None]:
    """A ``UserInputError`` (a config, data file, checkpoint or model name the user gave) becomes one
    ``rec-transfer: error:`` line on stderr and exit status 2, as the parser's own errors; anything else keeps its
    traceback. A file or folder the run may not read or write is one line and status 1; Ctrl-C outside training
    (which says for itself where it stopped) one line and status 130."""
    try:
        yield
    except UserInputError as err:
        print(f"rec-transfer: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except PermissionError as err:  # a file or folder the run reads or writes (data, logs, cache): not a bug here
        print(f"rec-transfer: error: {err.strerror}: {err.filename}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("rec-transfer: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
