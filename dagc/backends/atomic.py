"""Pictures and traces written atomically: a temporary file beside the target, then a rename.

A failed or interrupted run leaves neither a half-written picture nor a temporary file.
Unlike a bare `tempfile.mkstemp` (mode 0600), the result gets the usual permissions for a
new file (0666 less the umask), as if it had been opened for writing directly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def temporary_beside(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path in `target`'s folder; renamed over `target` if the block succeeds."""
    final = Path(target)
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(0o666 & ~_umask())
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(
    target: str | os.PathLike[str], write: Callable[[TextIO], object]
) -> None:
    """Write text through `write(stream)` into `target`, atomically."""
    with (
        temporary_beside(target) as temporary,
        temporary.open("w", encoding="utf-8", newline="\n") as stream,
    ):
        write(stream)
