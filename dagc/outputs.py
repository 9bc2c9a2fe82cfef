"""Output files: written safely, and checked before any work is done.

A base module: back ends, `dagc profile` and the CLI all write through it.

A failed or interrupted run never leaves a half-written file.

What `-o PATH` does depends on what PATH is:
- a regular file, or nothing yet: the output goes to a temporary file beside it, which is
  renamed over PATH once complete. A file that existed keeps its permission bits; a new one
  gets the usual permissions (0666 less the umask), as if opened for writing directly.
- a symbolic link: the file it points to is what gets written (by the rule above); the link
  itself stays a link.
- a device, a FIFO or a socket (`/dev/null`, `/dev/stdout`, a named pipe): renaming would
  replace it with a regular file, so the output is made in a private temporary folder and
  then copied into PATH in place.
- a folder: an error (IsADirectoryError, which callers report with exit 2).
The temporary file is removed on any failure, and on SIGTERM as on Ctrl-C (see
`terminate_as_interrupt`).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from dagc.diagnostics import DiagnosticError, option_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def temporary_beside(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write the output to; on success it becomes `target`.

    See the module docstring for what happens with each kind of target.
    """
    final = Path(os.path.realpath(target))
    try:
        status = final.stat()
    except FileNotFoundError:
        status = None
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(21, os.strerror(21), str(target))
    if status is not None and not stat.S_ISREG(status.st_mode):
        with _copied_into(final) as temporary:
            yield temporary
        return
    mode = stat.S_IMODE(status.st_mode) if status is not None else 0o666 & ~_umask()
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        with terminate_as_interrupt():
            yield temporary
        temporary.chmod(mode)
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def _copied_into(special: Path) -> Iterator[Path]:
    """A temporary path in a private folder whose content is then written into `special`."""
    folder = Path(tempfile.mkdtemp(prefix="dagc-"))
    try:
        temporary = folder / f"output{special.suffix}"
        with terminate_as_interrupt():
            yield temporary
        with temporary.open("rb") as source, special.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration, so cleanup code runs.

    Python's default SIGTERM handling ends the process without unwinding, which would leave
    the temporary file behind. Only the main thread may set handlers; elsewhere this is a
    no-op.
    """
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def write_text_atomically(
    target: str | os.PathLike[str], write: Callable[[TextIO], object]
) -> None:
    """Write text through `write(stream)` into `target`, safely (see the module docstring)."""
    with (
        temporary_beside(target) as temporary,
        temporary.open("w", encoding="utf-8", newline="\n") as stream,
    ):
        write(stream)


def check_output(path: str | os.PathLike[str], formats: tuple[str, ...]) -> str:
    """The output format named by `path`'s extension, after checking its folder is writable.

    Run before the work that makes the output, so that a typo costs no expansion.
    """
    name = os.fspath(path)
    extension = os.path.splitext(name)[1].lower().lstrip(".")
    if extension not in formats:
        shown = ", ".join(f".{f}" for f in formats)
        raise option_error(
            f"cannot tell the output format of `{name}`"
            + (f": unknown extension `.{extension}`" if extension else ": it has no extension"),
            f"name the output with one of {shown}",
        )
    folder = os.path.dirname(name) or "."
    if os.path.isdir(name):
        raise option_error(f"cannot write {name}: it is a folder", "name a file")
    if not os.path.isdir(folder):
        raise option_error(
            f"cannot write {name}: the folder {folder} does not exist", "create it first"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise option_error(
            f"cannot write {name}: the folder {folder} is not writable", "check its permissions"
        )
    return extension


def write_error(path: str | os.PathLike[str], error: OSError) -> DiagnosticError:
    """A file-free diagnostic for an output file that could not be written."""
    return option_error(
        f"cannot write {os.fspath(path)}: {error.strerror or error}",
        "check that the folder exists and is writable",
    )
