"""Reading the user's input files (.dag files, cost tables, plugins, Hugging Face configs)
with the same promises for each.

- Only regular files are read: a FIFO would hang and `/dev/zero` would fill the memory.
- At most `max_input_bytes()` bytes (DAGC_MAX_INPUT_BYTES, default 8 MiB) are read; a larger
  file is an error saying how to raise the limit. Real inputs are a few kilobytes.
- The text must be UTF-8 (a byte-order mark is dropped); the first byte that is not is
  pointed at.
Every failure raises DiagnosticError (exit 2 at the command line).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dagc.diagnostics import DiagnosticBag, DiagnosticError
from dagc.source import SourceFile, Span, undecodable

DEFAULT_MAX_INPUT_BYTES = 8 * 1024 * 1024
MAX_INPUT_VARIABLE = "DAGC_MAX_INPUT_BYTES"

Fail = Callable[..., DiagnosticError]


@dataclass(frozen=True)
class InputKind:
    """How messages name one kind of input file."""

    noun: str  # "file", "table": `the file is not UTF-8 text`
    what: str  # "a .dag file": `is a directory, not a .dag file`
    example: str  # "model.dag"
    missing: str  # "no such file"
    missing_help: str


DAG_FILE = InputKind("file", "a .dag file", "model.dag", "no such file", "check the path")
COST_PLUGIN = InputKind(
    "plugin",
    "a cost plugin",
    "costs.py",
    "no such cost plugin",
    "check the path given to --cost-plugin",
)
HF_CONFIG = InputKind(
    "config",
    "a Hugging Face config.json",
    "config.json",
    "no such config",
    "check the path given to --hf",
)
COST_TABLE = InputKind(
    "table",
    "a cost table",
    "table.csv",
    "no such cost table",
    "check the path, or write one with `dagc profile`",
)


def max_input_bytes() -> int:
    """The input size limit: DAGC_MAX_INPUT_BYTES if set to a positive integer, else 8 MiB."""
    value = os.environ.get(MAX_INPUT_VARIABLE, "")
    return int(value) if value.isdecimal() and int(value) > 0 else DEFAULT_MAX_INPUT_BYTES


def read_input(path: str | os.PathLike[str], kind: InputKind) -> SourceFile:
    """The file's text as a SourceFile; see the module docstring for what is refused."""
    name = os.fspath(path)

    def fail(message: str, help: str, span: Span | None = None, text: str = "") -> DiagnosticError:
        bag = DiagnosticBag(SourceFile(name, text))
        bag.error(span, message, help=help)
        return DiagnosticError(bag.diagnostics)

    data = _read_bytes(Path(name), kind, fail)
    try:
        return SourceFile(name, data.decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        span, good = undecodable(data, error)
        raise fail(
            f"the {kind.noun} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset"
            f" {error.start})",
            "save it as UTF-8",
            span,
            good,
        ) from None


def _read_bytes(file: Path, kind: InputKind, fail: Fail) -> bytes:
    limit = max_input_bytes()
    is_dir = (f"is a directory, not {kind.what}", f"name a file, e.g. `{kind.example}`")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise fail(*is_dir) from None
    except FileNotFoundError:
        raise fail(kind.missing, kind.missing_help) from None
    except OSError as error:
        raise fail(
            f"cannot read the {kind.noun}: {error.strerror}", "check its permissions"
        ) from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise fail(*is_dir)
        raise fail(
            f"is not a regular file (a device, a pipe or a socket), not {kind.what}",
            f"dagc reads regular files only: save the input to a file, e.g."
            f" `{kind.example}`, and name that",
        )
    with os.fdopen(descriptor, "rb") as stream:
        try:
            data = stream.read(limit + 1)
        except OSError as error:
            raise fail(f"cannot read the {kind.noun}: {error.strerror}", "check it") from None
    if len(data) > limit:
        raise fail(
            f"the {kind.noun} is larger than {limit:,} bytes",
            f"a real input is a few kilobytes; if this one is meant, raise the limit with"
            f" {MAX_INPUT_VARIABLE}=BYTES",
        )
    return data
