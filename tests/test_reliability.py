"""The promises of docs/reliability.md: outputs, inputs, plugins, limits.

Each test here failed before the behaviour it pins was built.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dagc.cli import app
from dagc.outputs import temporary_beside, write_text_atomically
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
    assert f"-o names a file, not a folder, e.g. `-o {tmp_path / 'report.txt'}`" in result.stderr


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "picture.svg"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), temporary_beside(target) as temporary:
        temporary.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picture.svg"]
    assert target.read_text() == "old\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored


# -- no parser cache ----------------------------------------------------------------------------
# The parser runs from generated tables (dagc/frontend/dag_lalr.py): there is no pickle to
# keep or to plant. tests/test_startup.py checks that dagc writes no cache anywhere.


# -- no NaN or Infinity: parameters in physical ranges, plugin values checked -------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("peak_flops=1e-300", "peak_flops must be between 1e9 and 1e18 FLOP/s, not 1e-300"),
        ("peak_flops=inf", "peak_flops must be between 1e9 and 1e18 FLOP/s, not inf"),
        ("hbm_bandwidth=nan", "hbm_bandwidth must be between 1e8 and 1e16 bytes/s, not nan"),
        ("nvlink_latency=-1", "nvlink_latency must be between 1e-9 and 1 seconds, not -1"),
        ("matmul_efficiency=70", "matmul_efficiency must be between 0.001 and 1"),
    ],
)
def test_set_outside_the_physical_range_is_exit_2(setting: str, message: str) -> None:
    result = runner.invoke(app, ["analyze", str(BASELINE), "--set", setting])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_file_parameter_outside_the_physical_range_is_exit_2(tmp_path: Path) -> None:
    text = BASELINE.read_text().replace("devices {", "devices {\n  peak_flops = 1e-300", 1)
    path = tmp_path / "tiny.dag"
    path.write_text(text)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"{path}:17:16: error: `peak_flops` must be between 1e9 and 1e18 FLOP/s, not 1e-300"
    )
    assert "e.g. `peak_flops = 9.89e14`" in result.stderr


@pytest.mark.parametrize(
    ("key", "value", "limit"),
    [("hidden", 10**160, "1,048,576"), ("hidden", 10**100, "1,048,576"), ("seq", 2**40, None)],
)
def test_huge_dimensions_are_refused_at_check_time(
    tmp_path: Path, key: str, value: int, limit: str | None
) -> None:
    text = BASELINE.read_text()
    path = tmp_path / "huge.dag"
    path.write_text(_set_key(text, key, value))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    assert f"`{key}` must be at most" in result.stderr
    if limit is not None:
        assert limit in result.stderr
    assert "digit number" in result.stderr or str(value) in result.stderr


def _set_key(text: str, key: str, value: int) -> str:
    """`text` with `key = N` replaced by `key = value` (the seed files write `key = N`)."""
    new, count = re.subn(rf"\b{key}(\s*)=(\s*)\d+", rf"{key}\g<1>=\g<2>{value}", text, count=1)
    assert count == 1, key
    return new


def _plugin(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plugin.py"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("raise SystemExit(3)\n", "the cost plugin failed while loading: SystemExit: 3"),
        (
            "def get_time(m, k, n):\n    raise SystemExit(0)\n",
            "get_time(2097152, 4096, 512) raised SystemExit: 0",
        ),
        ("def get_time(m, k, n):\n    return 1e308\n", "get_time(2097152, 4096, 512) returned"),
        ("def get_time(m, k, n):\n    return 10**400\n", "not a number (OverflowError"),
        (
            "class Bad:\n    def __float__(self):\n        raise RuntimeError('no')\n"
            "def get_time(m, k, n):\n    return Bad()\n",
            "not a number (RuntimeError: no)",
        ),
        ("def get_time(m, k, n):\n    return float('nan')\n", "returned nan"),
    ],
)
def test_plugin_failures_are_exit_2_naming_the_call(
    tmp_path: Path, body: str, message: str
) -> None:
    plugin = _plugin(tmp_path, body)
    result = runner.invoke(app, ["analyze", str(BASELINE), "--cost-plugin", str(plugin)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_plugin_prints_go_to_stderr_and_json_stays_valid(tmp_path: Path) -> None:
    body = "print('loading')\ndef get_time(m, k, n):\n    print('call', m)\n    return 1e-3\n"
    plugin = _plugin(tmp_path, body)
    args = ["analyze", str(BASELINE), "--format", "json", "--cost-plugin", str(plugin)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # nothing but the report on stdout
    assert report["critical_path"]["time_s"] > 0
    assert "loading" in result.stderr and "call 2097152" in result.stderr


# -- limits before the work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "option", [["--max-ops", "-5"], ["--max-ops", "0"], ["--path-limit", "-1"]]
)
def test_negative_limits_are_usage_errors(option: list[str]) -> None:
    result = runner.invoke(app, ["analyze", str(BASELINE), *option])
    assert result.exit_code == 2
    assert option[0] in result.stderr
    assert result.stdout == ""


def test_cycle_search_on_a_large_graph_returns_a_real_cycle() -> None:
    import numpy as np

    from dagc.ir.toposort import find_cycle

    # A chain of 100,000 nodes with one edge back from the end to the middle, and a tail
    # hanging off the cycle (stuck too, but not on it).
    n = 100_000
    src = np.concatenate([np.arange(n - 1), [n - 1], [n // 2]]).astype(np.int64)
    dst = np.concatenate([np.arange(1, n), [n // 2], [n]]).astype(np.int64)
    cycle = find_cycle(n + 1, src, dst)
    assert sorted(cycle) == list(range(n // 2, n))
    edges = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert all((a, b) in edges for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True))
    assert find_cycle(3, np.array([0, 1]), np.array([1, 2])) == []


# -- input files --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_not_read(device: str) -> None:
    result = runner.invoke(app, ["check", device])
    assert result.exit_code == 2
    assert f"{device}: error: is not a regular file" in result.stderr


def test_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "model.dag"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "dagc", "check", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "is not a regular file" in done.stderr


def test_cost_table_that_is_a_device_is_refused() -> None:
    result = runner.invoke(app, ["analyze", str(BASELINE), "--cost-table", "/dev/zero"])
    assert result.exit_code == 2
    assert "/dev/zero: error: is not a regular file (a device, a pipe or a socket)" in (
        result.stderr
    )


def test_input_larger_than_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.dag"
    path.write_text(BASELINE.read_text() + "#" * 2000 + "\n")
    monkeypatch.setenv("DAGC_MAX_INPUT_BYTES", "1000")
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    assert "the file is larger than 1,000 bytes" in result.stderr
    assert "DAGC_MAX_INPUT_BYTES" in result.stderr
    monkeypatch.setenv("DAGC_MAX_INPUT_BYTES", str(10**6))
    assert runner.invoke(app, ["check", str(path)]).exit_code == 0


# -- output failures ----------------------------------------------------------------------------

MA = REPO / "examples" / "seed" / "ma_separation.dag"


@pytest.mark.parametrize(
    "command", [["lower", "--emit", "device"], ["lower", "--emit", "json"], ["analyze"]]
)
def test_a_reader_that_stops_early_ends_dagc_quietly(command: list[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dagc", *command, str(MA)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(10)
    process.stdout.close()  # like `| head -c 10`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0
    assert "Traceback" not in stderr and "error" not in stderr.replace("warning", "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_device_on_stdout_is_one_line_and_exit_2() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "dagc", "analyze", str(BASELINE)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "dagc: error: cannot write the output: No space left on device"
    )
    assert "Traceback" not in done.stderr


# -- smaller ones -------------------------------------------------------------------------------


def test_a_million_character_name_is_an_error_with_a_short_excerpt(tmp_path: Path) -> None:
    name = "m" + "x" * 1_000_000
    path = tmp_path / "long.dag"
    path.write_text(BASELINE.read_text().replace("model dense_4l", f"model {name}"))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    first, excerpt, caret, *_ = result.stderr.splitlines()
    assert first == (
        f"{path}:2:7: error: this name is 1,000,001 characters long; names are at most 128"
    )
    assert len(excerpt) < 140 and excerpt.endswith("…")
    assert caret.index("^") == excerpt.index("mxx")


def test_excerpt_of_a_long_line_is_a_window_around_the_caret() -> None:
    from dagc.diagnostics import EXCERPT_WIDTH, DiagnosticBag
    from dagc.source import SourceFile, Span

    line = "a" * 500 + "BAD" + "b" * 500
    bag = DiagnosticBag(SourceFile("t.dag", line + "\n"))
    bag.error(Span(1, 501, 1, 504), "bad")
    _, excerpt, caret = bag.diagnostics[0].render().splitlines()
    text = excerpt.split(" | ", 1)[1]
    carets = caret.split(" | ", 1)[1]
    assert text.startswith("…") and text.endswith("…")
    assert len(text) == EXCERPT_WIDTH + 2
    assert text[carets.index("^") :].startswith("BAD") and carets.count("^") == 3


def test_profile_checks_its_folder_before_measuring() -> None:
    result = runner.invoke(app, ["profile", "-o", "/proc/table.csv", "--m", "64"])
    assert result.exit_code == 2
    assert "cannot write /proc/table.csv: its folder cannot be written" in result.stderr
    assert "profiling" not in result.stderr  # nothing was measured


# -- streamed outputs ---------------------------------------------------------------------------


class _CountingStream(io.StringIO):
    """A text stream that counts its writes and the largest one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.largest = 0

    def write(self, text: str) -> int:
        self.writes += 1
        self.largest = max(self.largest, len(text))
        return super().write(text)


def test_device_ir_and_json_are_written_as_they_are_made() -> None:
    import dagc
    from dagc.backends.device_json import write_device_json
    from dagc.expand import expand
    from dagc.ir.device import print_device, write_device

    graph = expand(dagc.compile_file(MA)).graph
    for write in (write_device, write_device_json):
        stream = _CountingStream()
        write(graph, stream)
        # One write per line or record, none holding more than a line's worth: memory
        # stays that of the graph, whatever the number of operations.
        assert stream.writes > graph.num_ops
        assert stream.largest < 2_000
    text = _CountingStream()
    write_device(graph, text)
    assert text.getvalue() == print_device(graph) + "\n"


def test_trace_is_written_as_it_is_made(tmp_path: Path) -> None:
    import dagc
    from dagc.api import build_schedule
    from dagc.backends.timeline import write_trace

    schedule, _ = build_schedule(dagc.compile_file(MA))
    stream = _CountingStream()
    write_trace(schedule, stream)
    events = json.loads(stream.getvalue())["traceEvents"]
    assert stream.writes > len(events) and stream.largest < 2_000
    op_events = [e for e in events if e["ph"] == "X"]
    keys = [(e["tid"], e["ts"], e["name"]) for e in op_events]
    assert keys == sorted(keys)  # by GPU, start, then name


def test_a_run_that_takes_no_time_reports_no_rate(tmp_path: Path) -> None:
    names = ["get_time", "elem_time", "all_reduce_time", "all_to_all_time"]
    names += ["broadcast_time", "p2p_time"]
    plugin = _plugin(tmp_path, "".join(f"def {n}(*args):\n    return 0\n" for n in names))
    args = ["analyze", str(BASELINE), "--cost-plugin", str(plugin)]
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "throughput     unbounded: the critical path takes no time" in text.stdout
    report = json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)
    assert report["totals"]["tokens_per_s"] is None
    assert report["critical_path"]["time_s"] == 0


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("model m { layers = 2; hid\0den = 64 }", 1, 26),
        ("model m { layers = 2; hidden = 6\0" + "4 }", 1, 33),
        ("# a comment\nmodel m\0 { layers = 2 }", 2, 8),
    ],
)
def test_a_nul_byte_is_reported_where_it_is(text: str, line: int, column: int) -> None:
    from helpers import diagnostics_of

    first = diagnostics_of(text)[0]
    assert first.message == "unexpected character U+0000"
    assert first.span is not None and (first.span.line, first.span.column) == (line, column)


def test_a_plugin_that_is_a_fifo_or_folder_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "costs.py"
    os.mkfifo(fifo)
    for plugin, message in ((fifo, "is not a regular file"), (tmp_path, "is a directory")):
        done = subprocess.run(
            [sys.executable, "-m", "dagc", "analyze", str(BASELINE), "--cost-plugin", str(plugin)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert f"{plugin}: error: {message}" in done.stderr
