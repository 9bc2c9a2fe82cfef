"""Every edge a picture draws stands for a path of the device DAG.

For each view of each example (and a few filtered renders), the DOT text's edges are parsed
and each drawn edge A -> B is checked against the device DAG: some operation drawn under A
reaches some operation drawn under B, and (device and block views) no operation under B
reaches one under A, so the picture never shows work before what it depends on. The
reachability is computed here, from the device DAG's edges alone; the operations behind a
node come from the operation names (device view), the renderer's grouping (block view) or
the file's layer ranges (logical view).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

import dagc
from dagc.api import build_schedule
from dagc.backends.render import node_members
from dagc.backends.schedule import Schedule
from dagc.cli import app
from helpers import EXAMPLES

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.dag")) + sorted((EXAMPLES / "seed").glob("*.dag"))
QWEN = EXAMPLES / "qwen3_30b_a3b_ep8_pp2.dag"
runner = CliRunner()
Ops = npt.NDArray[np.int64]


@cache
def schedule_of(path: Path) -> Schedule:
    schedule, _ = build_schedule(dagc.compile_file(path))
    return schedule


def drawn_edges(dot: str) -> list[tuple[str, str]]:
    """The visible edges of a DOT text, without the legend and the layout helpers."""
    edges = []
    for line in dot.splitlines():
        found = re.match(r"^\t+(\S+) -> (\S+)(.*)$", line)
        if found is None or "style=invis" in found[3]:
            continue
        if not found[1].startswith(("legend_", "anchor_")):
            edges.append((found[1], found[2]))
    return edges


def drawn_nodes(dot: str) -> list[str]:
    found = re.findall(r"^\t+(\S+) \[label=", dot, flags=re.M)
    return [n for n in found if not n.startswith(("legend_", "anchor_"))]


def drawn_view(dot: str) -> str:
    """The view the picture's title names (render may draw another than asked for)."""
    found = re.search(r"\\n(device|block|logical) view", dot)
    assert found is not None, "the title names no view"
    return found[1]


def reach_bits(schedule: Schedule, members: dict[str, Ops]) -> tuple[list[str], np.ndarray]:
    """For every operation, a bit set of the drawn nodes it reaches (its own included),
    propagated backwards over the device DAG's topological levels."""
    graph = schedule.graph
    names = sorted(members)
    words = (len(names) + 63) // 64
    bits = np.zeros((graph.num_ops, words), dtype=np.uint64)
    for index, name in enumerate(names):
        bits[members[name], index // 64] |= np.uint64(1) << np.uint64(index % 64)
    order = np.argsort(graph.src, kind="stable")
    src, dst = graph.src[order], graph.dst[order]
    starts = np.searchsorted(src, np.arange(graph.num_ops + 1))
    levels = graph.levels
    assert levels is not None
    for level in reversed(levels):
        counts = starts[level + 1] - starts[level]
        if not counts.sum():
            continue
        owner = np.repeat(level, counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        succ = dst[np.repeat(starts[level], counts) + within]
        np.bitwise_or.at(bits, owner, bits[succ])
    return names, bits


def check_edges(schedule: Schedule, dot: str, members: dict[str, Ops], strict: bool) -> int:
    """Assert every drawn edge of `dot` is a path of the device DAG; returns the count."""
    edges = drawn_edges(dot)
    assert edges, "the picture draws no edge"
    for node in drawn_nodes(dot):
        assert node in members and members[node].size, f"{node} stands for no operation"
    names, bits = reach_bits(schedule, members)
    index = {name: i for i, name in enumerate(names)}

    def reaches(a: str, b: str) -> bool:
        i = index[b]
        row = np.bitwise_or.reduce(bits[members[a]][:, i // 64])
        return bool(row & (np.uint64(1) << np.uint64(i % 64)))

    for a, b in edges:
        assert reaches(a, b), f"{a} -> {b} is drawn but no operation of {a} reaches {b}"
        if strict:
            assert not reaches(b, a), f"{a} -> {b} is drawn but {b} feeds {a}"
    return len(edges)


def render_dot(example: Path, tmp_path: Path, *args: str) -> str:
    out = tmp_path / "picture.dot"
    result = runner.invoke(app, ["render", str(example), *args, "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    return out.read_text(encoding="utf-8")


def logical_members(schedule: Schedule) -> dict[str, Ops]:
    """The operations of every (layer range, block) of the file, by the logical view's id."""
    graph = schedule.graph
    ranges = graph.program.ranges
    by_step: list[str | None] = []
    for step in range(len(graph.steps)):
        block = schedule.blocks[int(schedule.step_block[step])]
        name = None
        for r, layer_range in enumerate(ranges):
            if layer_range.first <= block.layer <= layer_range.last:
                for b, logical in enumerate(layer_range.blocks):
                    if (logical.kind.value, logical.group) == (block.kind, block.group):
                        name = f"r{r}_{block.kind}_{b}"
        by_step.append(name)
    ops = np.arange(graph.num_ops, dtype=np.int64)
    names = np.asarray([by_step[int(s)] or "" for s in graph.template_step], dtype=object)
    of_op = names[ops % graph.template_size]
    return {str(n): ops[of_op == n] for n in sorted(set(of_op.tolist()) - {""})}


def device_members(schedule: Schedule, ops: Ops) -> dict[str, Ops]:
    """The device view's nodes: one per operation name without its product suffix."""
    graph = schedule.graph
    found: dict[str, list[int]] = {}
    for op in ops.tolist():
        found.setdefault(graph.node_name(op), []).append(op)
    return {name: np.asarray(members, dtype=np.int64) for name, members in found.items()}


CASES = [
    (example, view, ()) for example in EXAMPLE_FILES for view in ("device", "block", "logical")
] + [
    (QWEN, "block", ("--layers", "23..24", "--microbatch", "0")),
    (QWEN, "device", ("--layers", "23", "--microbatch", "1", "--gpus", "0..3")),
    (EXAMPLES / "seed" / "baseline_tp8_pp2.dag", "block", ("--layers", "0..1", "--gpus", "0..3")),
    (EXAMPLES / "ma_separation_mb4.dag", "block", ("--microbatch", "1..2")),
    (EXAMPLES / "ma_separation_mb4.dag", "device", ("--layers", "1..2", "--gpus", "12..15")),
    (EXAMPLES / "llama70b_tp8_pp4.dag", "block", ("--layers", "19..20", "--microbatch", "0..1")),
    # Drawn whole: the default pictures of these are slices of the block view.
    (EXAMPLES / "seed" / "baseline_tp8_pp2.dag", "device", ("--all",)),
    (EXAMPLES / "seed" / "ma_separation.dag", "device", ("--all",)),
    (EXAMPLES / "ma_separation_mb4.dag", "device", ("--all",)),
    (EXAMPLES / "ma_separation_mb4.dag", "block", ("--all",)),
    (EXAMPLES / "mixtral_8x7b_ep8.dag", "device", ("--layers", "0..1", "--microbatch", "0..1")),
]


def case_id(case: object) -> str:
    if isinstance(case, Path):
        return case.stem
    return " ".join(case) if isinstance(case, tuple) else str(case)


@pytest.mark.parametrize("example, view, args", CASES, ids=case_id)
def test_every_drawn_edge_is_a_path_of_the_device_dag(
    example: Path, view: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    schedule = schedule_of(example)
    dot = render_dot(example, tmp_path, "--view", view, *args)
    view = drawn_view(dot)
    if view == "logical":
        check_edges(schedule, dot, logical_members(schedule), strict=False)
        return
    ops = np.arange(schedule.graph.num_ops, dtype=np.int64)
    grouped = device_members(schedule, ops) if view == "device" else None
    members = grouped if grouped is not None else node_members(schedule, "block", ops)
    drawn = set(drawn_nodes(dot))
    shown = {name: m for name, m in members.items() if name in drawn}
    assert check_edges(schedule, dot, shown, strict=True) > 0
