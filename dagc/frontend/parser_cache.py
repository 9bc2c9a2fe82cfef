"""Where the LALR tables are cached between runs: a private, per-user folder, or nowhere.

Building dagc's parser takes ~150 ms; loading it from lark's cache ~5 ms. lark's cache is a
pickle, and loading a pickle runs whatever code it names, so the cache must live where only
the user can write: lark's own default (a predictable name in the shared temporary folder)
would let any local user run code inside the next `dagc` of any other user. dagc uses
`$XDG_CACHE_HOME/dagc` (default `~/.cache/dagc`), created 0700, and only when that folder is
a real folder owned by the user and closed to others, and the cache file a regular file owned
by the user that nobody else can write. Otherwise it builds the parser without a cache.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import lark


def private_cache_file() -> str | None:
    """The cache file to give lark, or None when no safe place exists."""
    try:
        folder = _private_folder()
        if folder is None:
            return None
        version = f"{sys.version_info[0]}{sys.version_info[1]}"
        path = folder / f"parser-lark{lark.__version__}-py{version}.pickle"
        return str(path) if _safe_file(path) else None
    except OSError:
        return None  # no home, a read-only one, ...: build the parser every time


def cache_folder() -> Path:
    """`$XDG_CACHE_HOME/dagc`, or `~/.cache/dagc`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dagc"


def _private_folder() -> Path | None:
    folder = cache_folder()
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.lstat()
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid():
        return None
    if status.st_mode & 0o077:
        return None  # others can read or plant files there
    return folder


def _safe_file(path: Path) -> bool:
    """True when `path` is absent, or a regular file of the user's that only they can write."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return True
    return (
        stat.S_ISREG(status.st_mode)
        and status.st_uid == os.geteuid()
        and not status.st_mode & 0o022
    )
