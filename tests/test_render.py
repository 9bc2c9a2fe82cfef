"""Pictures: `dagc render` (graphviz), `dagc timeline` (trace and Gantt), `analyze --render`.

Golden DOT files live in tests/golden/dot/. Regenerate them with
`DAGC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_render.py`, then look at the pictures and
read every changed line before committing: a golden file is only as right as its review.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

import dagc
from dagc.api import analyze_file, build_schedule
from dagc.backends.render import FORMATS, operation_view
from dagc.backends.schedule import Filters, Schedule
from dagc.backends.timeline import GANTT_MAX_OPS, draw_gantt, gantt_rows, write_timeline
from dagc.cli import app
from helpers import REPO, check_golden

SEED = REPO / "examples" / "seed"
BASELINE = SEED / "baseline_tp8_pp2.dag"
MA = SEED / "ma_separation.dag"
MA_MB4 = REPO / "examples" / "ma_separation_mb4.dag"
SEEDS = (BASELINE, MA)
GOLDEN = Path(__file__).resolve().parent / "golden" / "dot"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NEEDS_DOT = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is missing")

runner = CliRunner()


@cache
def schedule_of(path: Path) -> Schedule:
    schedule, _ = build_schedule(dagc.compile_file(path))
    return schedule


def dagc_ok(*args: str) -> str:
    """Run dagc in-process; fail unless it exits 0; return stderr."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr
    return result.stderr


def node_lines(dot: str) -> list[str]:
    """The node statements of a DOT text, without the legend and layout anchors."""
    found = re.findall(r"^\t+(\S+) \[label=", dot, flags=re.M)
    return [n for n in found if not n.startswith(("legend_", "anchor_"))]


# -- real pictures with dot -----------------------------------------------------------------


@NEEDS_DOT
@pytest.mark.parametrize("example", SEEDS, ids=lambda p: p.stem)
def test_png_and_svg_are_valid_images(example: Path, tmp_path: Path) -> None:
    png, svg = tmp_path / "block.png", tmp_path / "device.svg"
    dagc_ok("render", str(example), "--view", "block", "-o", str(png))
    dagc_ok("render", str(example), "--view", "device", "-o", str(svg))
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block.png", "device.svg"]


@NEEDS_DOT
def test_logical_view_pdf(tmp_path: Path) -> None:
    pdf = tmp_path / "logical.pdf"
    dagc_ok("render", str(MA), "--view", "logical", "-o", str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF")


@NEEDS_DOT
def test_analyze_render_writes_report_and_picture(tmp_path: Path) -> None:
    picture = tmp_path / "report.png"
    result = runner.invoke(app, ["analyze", str(BASELINE), "--render", str(picture)])
    assert result.exit_code == 0, result.stderr
    assert "critical path" in result.stdout
    assert picture.read_bytes().startswith(PNG_MAGIC)
    assert f"dagc: wrote {picture}" in result.stderr


# -- golden DOT -----------------------------------------------------------------------------


def render_dot(example: Path, view: str, tmp_path: Path) -> str:
    out = tmp_path / f"{example.stem}.{view}.dot"
    dagc_ok("render", str(example), "--view", view, "-o", str(out))
    return out.read_text(encoding="utf-8")


@pytest.mark.parametrize("view", ["block", "logical"])
@pytest.mark.parametrize("example", SEEDS, ids=lambda p: p.stem)
def test_golden_dot(example: Path, view: str, tmp_path: Path) -> None:
    actual = render_dot(example, view, tmp_path)
    review = f"the picture and the DOT of the {view} view of {example.name}"
    check_golden(GOLDEN / f"{example.stem}.{view}.dot", actual, review)


def test_dot_is_deterministic_across_processes(tmp_path: Path) -> None:
    """Different hash seeds, byte-identical DOT: nothing depends on set order."""
    texts = []
    for seed in ("0", "4242"):
        out = tmp_path / f"{seed}.dot"
        subprocess.run(
            [sys.executable, "-m", "dagc", "render", str(MA), "-o", str(out), "--view", "device"],
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
            timeout=120,
        )
        texts.append(out.read_bytes())
    assert texts[0] == texts[1]


# -- what the views contain -----------------------------------------------------------------


def test_device_view_draws_each_collective_once_joined_to_its_participants() -> None:
    schedule = schedule_of(BASELINE)
    graph = schedule.graph
    view = operation_view(schedule, "device", schedule.select(Filters()))
    by_id = {node.id: node for node in view.nodes}
    joint = {graph.name(op): graph.gpus_of(op) for op in range(graph.num_ops)
             if graph.step_of(op).joint}  # fmt: skip
    assert len(joint) == 10  # 8 all-reduces, send_stage1, recv_stage1
    assert len(by_id) == len(view.nodes)
    for name, participants in joint.items():
        assert name in by_id and by_id[name].cluster in {("stage0",), ("stage1",), ()}
        before = {by_id[e.src].cluster[-1] for e in view.edges if e.dst == name}
        after = {by_id[e.dst].cluster[-1] for e in view.edges if e.src == name}
        gpus = {f"gpu{g}" for g in participants}
        if name.startswith("all_reduce"):
            assert before == gpus and after == gpus, name
        elif name == "send_stage1":
            assert before == gpus and after == {"stage1"}  # on to recv_stage1
        else:
            assert before == {"stage0"} and after == gpus


def test_device_view_merges_the_products_of_one_node() -> None:
    schedule = schedule_of(BASELINE)
    view = operation_view(schedule, "device", schedule.select(Filters()))
    qkv = next(node for node in view.nodes if node.id == "qkv_l0_gpu0")
    assert qkv.lines[1] == "3 × Get_Time(1024×2048, 4096, 512)"
    assert qkv.kind == "matmul" and qkv.critical
    assert not any(".q" in node.id for node in view.nodes)


def test_block_view_nodes_and_critical_path() -> None:
    schedule = schedule_of(BASELINE)
    view = operation_view(schedule, "block", schedule.select(Filters()))
    names = [node.lines[0] for node in view.nodes]
    # Each GPU's operations are cut at its 5 collectives and transfers (4 all-reduces and
    # the send or the receive) into 5 runs; plus the 10 collectives and transfers.
    assert len(names) == 16 * 5 + 10
    assert "attention l0 gpu3" in names
    critical = [node.lines[0] for node in view.nodes if node.critical]
    assert "attention l0 gpu0" in critical and "attention l2 gpu8" in critical
    assert "attention l0 gpu3" not in critical
    hot = [(e.src, e.dst) for e in view.edges if e.critical]
    assert ("send_stage1", "recv_stage1") in hot
    assert len(hot) == len(critical) - 1  # one chain through every critical node


def test_filters_select_layers_gpus_and_microbatches(tmp_path: Path) -> None:
    out = tmp_path / "f.dot"
    dagc_ok("render", str(BASELINE), "--view", "block", "--layers", "0..1", "--gpus", "0..3",
            "-o", str(out))  # fmt: skip
    dot = out.read_text()
    labels = re.findall(r'label="(\w+ l\d+ gpu\d+)', dot)
    assert labels and all(re.search(r" l[01] gpu[0-3]$", label) for label in labels)
    assert "layers 0..1, gpus 0..3" in dot
    assert "all_reduce_attn_l0" in dot and "all_reduce_attn_l2" not in dot
    dagc_ok("render", str(MA_MB4), "--view", "block", "--microbatch", "2", "--layers", "1",
            "-o", str(out))  # fmt: skip
    names = [n for n in node_lines(out.read_text())]
    assert names and all(n.endswith("_mb2") for n in names), names


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--layers", "1..0", "--layers expects N or FIRST..LAST"),
        ("--gpus", "x", "--gpus expects N or FIRST..LAST"),
        ("--microbatch", "-1", "--microbatch expects N or FIRST..LAST"),
        ("--layers", "9", "the filters (layer 9) select no operations"),
        ("--microbatch", "1", "the filters (micro-batch 1) select no operations"),
    ],
)
def test_bad_filters_exit_2_without_a_file_position(
    flag: str, value: str, message: str, tmp_path: Path
) -> None:
    out = tmp_path / "x.dot"
    result = runner.invoke(app, ["render", str(BASELINE), flag, value, "-o", str(out)])
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("dagc: error: ") and message in first, result.stderr
    assert "= help:" in result.stderr
    assert not out.exists()


def test_size_cap_collapses_to_the_block_view_then_a_slice(tmp_path: Path) -> None:
    out = tmp_path / "capped.dot"
    stderr = dagc_ok("render", str(BASELINE), "--max-nodes", "100", "-o", str(out))
    # The baseline's 458 operations, less the k and v products drawn within qkv's node:
    # 2 per GPU and layer, 8 GPUs per stage, 4 layers.
    assert f"the device view has {458 - 2 * 8 * 4} nodes, too many for one legible" in stderr
    assert "drawing the block view (90 nodes) instead" in stderr
    assert len(node_lines(out.read_text())) == 90
    stderr = dagc_ok("render", str(BASELINE), "--max-nodes", "50", "-o", str(out))
    # Every layer (the ends of both stages are all 4), on fewer GPUs: the critical path's
    # (gpu0, then gpu8) and the first and last GPU of each stage: 5 runs on each GPU,
    # and the 10 collectives and transfers.
    assert "drawing the block view of gpus {0, 7..8, 15} (30 nodes)" in stderr
    assert "leaving out gpus 1..6, 9..14" in stderr and "--all" in stderr
    assert len(node_lines(out.read_text())) == 4 * 5 + 10
    stderr = dagc_ok("render", str(BASELINE), "--max-nodes", "25", "-o", str(out))
    assert "drawing the block view of gpus {0, 8} (20 nodes)" in stderr
    stderr = dagc_ok("render", str(BASELINE), "--max-nodes", "14", "-o", str(out))
    assert "drawing the block view of layers {0, 3}, gpus {0, 8}, micro-batch 0" in stderr
    assert "leaving out layers 1..2; gpus 1..7, 9..15" in stderr
    assert len(node_lines(out.read_text())) <= 14
    stderr = dagc_ok("render", str(BASELINE), "--max-nodes", "10", "--all", "-o", str(out))
    assert "note" not in stderr and len(node_lines(out.read_text())) == 394


# -- timeline -------------------------------------------------------------------------------


def test_trace_has_a_track_per_gpu_and_spans_the_critical_path(tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    dagc_ok("timeline", str(BASELINE), "-o", str(out))
    trace = json.loads(out.read_text())
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    ops = [e for e in events if e["ph"] == "X"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert sorted(names) == sorted({e["tid"] for e in ops}) == list(range(16))
    assert names[3] == "gpu3 (stage0)" and names[12] == "gpu12 (stage1)"
    span = max(e["ts"] + e["dur"] for e in ops) - min(e["ts"] for e in ops)
    assert span == pytest.approx(analyze_file(BASELINE).total_s * 1e6, rel=1e-6)
    reduce = [e for e in ops if e["name"] == "all_reduce_attn_l0"]
    assert sorted(e["tid"] for e in reduce) == list(range(8))
    qkv = next(e for e in ops if e["name"] == "qkv_l0_gpu0.q")
    assert qkv["args"]["critical"] is True and qkv["args"]["flops"] == 2 * 1024 * 2048 * 4096 * 512
    assert qkv["args"]["term"] == "Get_Time(1024×2048, 4096, 512)"
    assert {"shape", "bytes", "microbatch", "layer"} <= set(qkv["args"])


def test_trace_follows_the_cost_options(tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    dagc_ok("timeline", str(BASELINE), "--matmul-only", "-o", str(out))
    ops = [e for e in json.loads(out.read_text())["traceEvents"] if e["ph"] == "X"]
    assert all(e["dur"] == 0 for e in ops if e["cat"] != "matmul")


def test_gantt_png(tmp_path: Path) -> None:
    out = tmp_path / "gantt.png"
    dagc_ok("timeline", str(MA_MB4), "-o", str(out))
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["gantt.png"]


# -- errors ---------------------------------------------------------------------------------


def test_missing_dot_exits_2_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "x.png"
    result = runner.invoke(app, ["render", str(BASELINE), "-o", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith("dagc: error: graphviz's `dot` program is needed")
    assert "apt-get install graphviz" in result.stderr
    assert "brew install graphviz" in result.stderr
    assert not out.exists()
    dagc_ok("render", str(BASELINE), "-o", str(tmp_path / "still.dot"))  # DOT needs no dot


@pytest.mark.parametrize("command", ["render", "timeline"])
def test_unwritable_output_exits_2_and_leaves_nothing(command: str, tmp_path: Path) -> None:
    afile = tmp_path / "a_file"
    afile.write_text("")
    for target in (tmp_path / "missing" / "x.svg", afile / "x.svg"):
        result = runner.invoke(app, [command, str(BASELINE), "-o", str(target)])
        assert result.exit_code == 2
        assert result.stderr.startswith(f"dagc: error: cannot write {target}")
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_unknown_extension_exits_2() -> None:
    result = runner.invoke(app, ["render", str(BASELINE), "-o", "picture.gif"])
    assert result.exit_code == 2
    assert "unknown extension `.gif`" in result.stderr
    assert ".svg, .png, .pdf, .dot" in result.stderr
    assert FORMATS == ("svg", "png", "pdf", "dot")
    result = runner.invoke(app, ["timeline", str(BASELINE), "-o", "trace"])
    assert result.exit_code == 2 and "it has no extension" in result.stderr


@NEEDS_DOT
def test_a_failing_dot_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "dot"
    script.write_text("#!/bin/sh\necho 'dot: out of memory' >&2\nexit 3\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    out = tmp_path / "pictures"
    out.mkdir()
    result = runner.invoke(app, ["render", str(BASELINE), "-o", str(out / "x.png")])
    assert result.exit_code == 2
    assert "graphviz's dot failed: dot: out of memory" in result.stderr
    assert list(out.iterdir()) == []


def test_gpu_columns_follow_program_order(tmp_path: Path) -> None:
    """Ping-pong GPUs run a layer's micro-batches before the next layer: the invisible edges
    that keep a GPU's column straight must follow that order, or dot gets a cycle (and takes
    minutes on what should take a second)."""
    import networkx as nx

    out = tmp_path / "mb4.dot"
    dagc_ok("render", str(MA_MB4), "--view", "block", "-o", str(out))
    edges = re.findall(r"^\t+(\S+) -> (\S+)", out.read_text(), flags=re.M)
    assert nx.is_directed_acyclic_graph(nx.DiGraph(edges))


# -- Gantt rows: only GPUs with identical work share one ---------------------------------


def work_partition(trace_path: Path) -> list[tuple[int, ...]]:
    """GPUs grouped by their trace events (start, duration, cost term), in GPU order: the
    Gantt chart's rows, derived from the trace alone."""
    events = json.loads(trace_path.read_text())["traceEvents"]
    work: dict[int, list[tuple[float, float, str]]] = {}
    for e in events:
        if e["ph"] == "X":
            work.setdefault(e["tid"], []).append((e["ts"], e["dur"], e["args"]["term"]))
    groups: dict[tuple[tuple[float, float, str], ...], list[int]] = {}
    for gpu in sorted(work):
        groups.setdefault(tuple(sorted(work[gpu])), []).append(gpu)
    return [tuple(g) for g in groups.values()]


def test_gantt_rows_merge_only_gpus_with_identical_work(tmp_path: Path) -> None:
    """32 heads over tp=12: ranks 0-7 hold 3 heads, ranks 8-11 two. Above 20,000
    operations (32 micro-batches of 736) the chart draws block bars; GPUs 8-11 must still
    get a row of their own, however alike their bars look."""
    text = MA_MB4.read_text().replace("microbatches = 4", "microbatches = 32")
    schedule, _ = build_schedule(dagc.compile_text(text, "ma_mb32.dag"))
    assert schedule.graph.num_ops == 32 * 736 > GANTT_MAX_OPS
    trace = tmp_path / "trace.json"
    write_timeline(schedule, trace)
    expected = work_partition(trace)
    assert expected == [tuple(range(8)), tuple(range(8, 12)), tuple(range(12, 16))]
    rows = gantt_rows(schedule, blocks=True)
    assert [row.gpus for row in rows] == expected
    labels = [row.label(schedule.group_of_gpu) for row in rows]
    assert labels == [
        "gpu[0..7] ×8 identical (attn)",
        "gpu[8..11] ×4 identical (attn)",
        "gpu[12..15] ×4 identical (moe)",
    ]
    busy = [sum(b.length for b in row.bars if b.kind != "collective") for row in rows]
    assert busy[0] > busy[1]  # three heads take longer than two
    chart = tmp_path / "gantt.png"
    notes = write_timeline(schedule, chart)
    assert notes and "more than 20,000" in notes[0]
    assert chart.read_bytes().startswith(PNG_MAGIC)


def test_gantt_block_regime_threshold_is_a_parameter(tmp_path: Path) -> None:
    schedule = schedule_of(MA_MB4)
    chart = tmp_path / "gantt.png"
    notes = draw_gantt(schedule, chart, max_ops=1000)
    assert notes == [
        "2,944 operations are more than 1,000: the Gantt chart draws one bar per block run,"
        " GPU and micro-batch"
    ]
    assert draw_gantt(schedule, chart) == []
    rows = gantt_rows(schedule, blocks=True)
    assert [row.gpus for row in rows] == [
        tuple(range(8)),
        tuple(range(8, 12)),
        tuple(range(12, 16)),
    ]
