"""The promises of docs/reliability.md: outputs, inputs, plugins, limits.

Each test here failed before the behaviour it pins was built.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dagc.backends.atomic import temporary_beside, write_text_atomically
from dagc.cli import app
from helpers import REPO

BASELINE = REPO / "examples" / "seed" / "baseline_tp8_pp2.dag"
runner = CliRunner()


def _write(target: Path, text: str = "new\n") -> None:
    write_text_atomically(target, lambda stream: stream.write(text))


# -- -o and the kind of its target --------------------------------------------------------------


def test_output_through_a_symlink_writes_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    _write(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"


def test_output_through_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "made.txt")
    _write(link)
    assert link.is_symlink() and (tmp_path / "made.txt").read_text() == "new\n"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_replacing_a_file_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "report.txt"
    target.write_text("old\n")
    target.chmod(mode)
    if mode == 0o444 and os.geteuid() != 0:
        pytest.skip("only root may replace a read-only file")
    _write(target)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_output_into_a_fifo_writes_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    _write(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert received == [b"through the pipe\n"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_output_into_a_device_writes_in_place(tmp_path: Path) -> None:
    # A private null device (1, 3), so that a failure cannot harm the system's /dev/null.
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    result = runner.invoke(app, ["analyze", str(BASELINE), "-o", str(null)])
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(null.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_output_into_a_folder_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(BASELINE), "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert f"cannot write {tmp_path}" in result.stderr


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "picture.svg"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), temporary_beside(target) as temporary:
        temporary.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.svg"]
    assert target.read_text() == "old\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored


# -- the parser cache ---------------------------------------------------------------------------

_PLANT = """\
import pickle, sys
class Boom:
    def __reduce__(self):
        return (open, (sys.argv[1], "w"))
with open(sys.argv[2], "wb") as f:
    f.write(b"not-the-hash\\n")
    pickle.dump(Boom(), f)
"""


def _dagc_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagc", "check", str(BASELINE)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_parser_cache_is_private_and_never_in_the_shared_temp_folder(tmp_path: Path) -> None:
    shared, cache = tmp_path / "tmp", tmp_path / "cache"
    shared.mkdir()
    result = _dagc_check({"TMPDIR": str(shared), "XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 0, result.stderr
    assert list(shared.iterdir()) == []  # lark's default would have put its pickle here
    folder = cache / "dagc"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.suffix for p in folder.iterdir()] == [".pickle"]
    again = _dagc_check({"TMPDIR": str(shared), "XDG_CACHE_HOME": str(cache)})
    assert again.returncode == 0, again.stderr  # and loads from it the second time


@pytest.mark.parametrize("how", ["folder open to others", "file writable by others"])
def test_parser_cache_planted_by_someone_else_is_not_loaded(tmp_path: Path, how: str) -> None:
    cache = tmp_path / "cache"
    _dagc_check({"XDG_CACHE_HOME": str(cache)})  # make the folder and learn the file's name
    folder = cache / "dagc"
    (planted,) = folder.iterdir()
    marker = tmp_path / "code-ran"
    subprocess.run([sys.executable, "-c", _PLANT, str(marker), str(planted)], check=True)
    if how == "folder open to others":
        folder.chmod(0o777)
    else:
        planted.chmod(0o666)
    result = _dagc_check({"XDG_CACHE_HOME": str(cache)})
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
