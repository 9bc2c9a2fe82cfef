"""Default pictures are legible as they come: at most about 4,000 pixels on the long side.

Every example is drawn as `dagc render FILE -o picture.png` draws it, by the real `dot`,
and the PNG header's width and height are read back. A picture too big for that is a
representative slice: the critical path's operations within the slice's layers and
micro-batches are all drawn and highlighted, and a note says what was left out.
"""

from __future__ import annotations

import shutil
import struct
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dagc
from dagc.api import build_schedule
from dagc.backends.render import operation_view, plan, render
from dagc.backends.schedule import Filters, Schedule
from dagc.cli import app
from helpers import EXAMPLES

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.dag")) + sorted((EXAMPLES / "seed").glob("*.dag"))
LONG_SIDE_PX = 4000
NEEDS_DOT = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is missing")
runner = CliRunner()


@cache
def schedule_of(path: Path) -> Schedule:
    schedule, _ = build_schedule(dagc.compile_file(path))
    return schedule


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def kept(schedule: Schedule, filters: Filters) -> np.ndarray:
    """Which operations lie in the filters' layers and micro-batches (any GPU)."""
    graph = schedule.graph
    micro, template = np.divmod(np.arange(graph.num_ops), graph.template_size)
    layer = np.asarray([graph.steps[int(s)].layer for s in graph.template_step])[template]
    inside = np.ones(graph.num_ops, dtype=bool)
    if filters.layers is not None:
        inside &= (layer >= filters.layers[0]) & (layer <= filters.layers[1])
    if filters.layer_set is not None:
        inside &= np.isin(layer, filters.layer_set)
    if filters.microbatches is not None:
        inside &= (micro >= filters.microbatches[0]) & (micro <= filters.microbatches[1])
    return inside


@NEEDS_DOT
@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_default_picture_is_legible(example: Path, tmp_path: Path) -> None:
    schedule = schedule_of(example)
    out = tmp_path / "picture.png"
    notes = render(schedule, out)
    width, height = png_size(out)
    assert max(width, height) <= LONG_SIDE_PX, (width, height, notes)
    view, filters, ops, note = plan(schedule, "device", Filters(), 2000)
    assert notes == ([note] if note else [])
    if note is None:
        assert ops.size == schedule.graph.num_ops
        return
    assert "leaving out" in note or "block view (" in note
    for option in ("--layers", "--microbatch", "--max-nodes", "--all"):
        assert option in note
    # The critical path is kept whole within the slice's layers and micro-batches.
    critical = np.asarray(schedule.path.ops)
    inside = critical[kept(schedule, filters)[critical]]
    assert inside.size and np.isin(inside, ops).all()
    drawn = operation_view(schedule, view, ops)
    hot = {node.id for node in drawn.nodes if node.critical}
    assert hot and len(hot) <= len(drawn.nodes)
    assert sum(edge.critical for edge in drawn.edges) == len(hot) - 1


@NEEDS_DOT
def test_the_note_names_what_was_left_out(tmp_path: Path) -> None:
    out = tmp_path / "llama.png"
    result = runner.invoke(app, ["render", str(EXAMPLES / "llama70b_tp8_pp4.dag"), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    note = result.stderr.splitlines()[0]
    # Device-view nodes (q, k and v drawn as one qkv node): per layer 8 ranks x 13 nodes
    # (ln1, qkv, scores, softmax, out, o_proj, res1, ln2, up, gate, act, down, res2) and 2
    # all-reduces; 80 layers, plus embed and lm_head on 8 ranks each and 6 stage transfers
    # (send and recv at 3 boundaries); 8 micro-batches.
    nodes = 8 * (80 * (13 * 8 + 2) + 16 + 6)
    assert nodes == 68_016
    assert note.startswith(f"dagc: note: the device view has {nodes:,} nodes")
    # Llama-70B's four stages hold layers 0..19, 20..39, 40..59 and 60..79: the slice is
    # the first layer, the first stage boundary and the last layer, in micro-batch 0.
    assert "block view of layers {0, 19..20, 79}" in note
    assert "leaving out layers 1..18, 21..78;" in note and "micro-batches 1..7" in note
    assert max(png_size(out)) <= LONG_SIDE_PX


def test_filters_that_fit_are_drawn_as_asked(tmp_path: Path) -> None:
    out = tmp_path / "moe.dot"
    args = ["--view", "block", "--layers", "23..24", "--microbatch", "0", "-o", str(out)]
    result = runner.invoke(app, ["render", str(EXAMPLES / "qwen3_30b_a3b_ep8_pp2.dag"), *args])
    assert result.exit_code == 0, result.stderr
    assert "note" not in result.stderr
    assert "block view of layers 23..24, micro-batch 0" in out.read_text()


def test_critical_edges_over_left_out_layers_say_so() -> None:
    """Where the critical path leaves the slice and comes back, one dashed critical edge
    joins the two drawn nodes and says how many of the path's operations it stands for."""
    schedule = schedule_of(EXAMPLES / "llama70b_tp8_pp4.dag")
    view, _, ops, _ = plan(schedule, "device", Filters(), 2000)
    drawn = operation_view(schedule, view, ops)
    vias = [edge for edge in drawn.edges if edge.via]
    assert vias and all(edge.critical for edge in vias)
    counted = sum(int(edge.via.split()[1].replace(",", "")) for edge in vias)
    path = np.asarray(schedule.path.ops)
    inside = np.flatnonzero(np.isin(path, ops))
    between = path[inside[0] : inside[-1] + 1]
    assert counted == int((~np.isin(between, ops)).sum()) > 0
