"""Invariants of the device DAG (DeviceGraph).

- Arrays: src, dst and edge_kind have one entry per edge; endpoints are operation ids;
  edge kinds are DATA or ORDER only; no edge is listed twice or joins an op to itself.
- Names: the operation names are unique.
- Data edges stay inside one micro-batch and go forward in template order (every input is
  produced by an operation that comes earlier in the step program). The once-per-iteration
  tail (ITERATION steps, last in the step program, operations m·W onward) reads from any
  micro-batch or from an earlier tail operation; nothing per micro-batch reads the tail.
- Acyclic: a topological order exists (dagc.ir.toposort).
- Program order (once the order pass has run): the operations of one stream of one GPU form
  a single chain of edges, so the stream runs them one at a time in one order; in particular
  a joint operation (collective or transfer) has an edge from each participant's previous
  operation on its stream and to its next one.
- FLOP conservation: per layer and block, the matmul FLOPs summed over every GPU equal what
  the program alone says they must be (dagc.ir.verify.flops); the micro-batches repeat one
  template, so the check runs once per template, not per operation.

Everything per edge or per operation is numpy over the arrays, so graphs of millions of
operations verify in about the time they take to build.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dagc.ir.device import DATA_EDGE, ORDER_EDGE, DeviceGraph
from dagc.ir.steps import Phase, Stream
from dagc.ir.toposort import find_cycle
from dagc.ir.verify.errors import VerificationError
from dagc.ir.verify.flops import FlopTable, expected_training_flops

IntArray = npt.NDArray[np.int64]


def verify_device(graph: DeviceGraph, *, ordered: bool = True) -> None:
    """Check the device DAG's invariants; raise VerificationError naming the culprit.

    `ordered` says whether the order pass has run: before it, the graph has data edges
    only and a GPU's operations need not form a chain yet.
    """
    _check_arrays(graph)
    _check_steps(graph)
    _check_unique_names(graph)
    _check_edges_unique(graph)
    _check_data_edges(graph)
    levels = _check_acyclic(graph)
    if ordered:
        _check_program_order(graph, levels)
    _check_flops(graph)


def _edge(graph: DeviceGraph, index: int) -> str:
    """An edge as its endpoints' names."""
    return f"{graph.name(int(graph.src[index]))} -> {graph.name(int(graph.dst[index]))}"


def _check_arrays(graph: DeviceGraph) -> None:
    n = graph.num_ops
    if not len(graph.src) == len(graph.dst) == len(graph.edge_kind):
        raise VerificationError(
            f"{len(graph.src)} edge sources, {len(graph.dst)} destinations and"
            f" {len(graph.edge_kind)} edge kinds"
        )
    once = [step.phase is Phase.ITERATION for step in graph.steps]
    if any(once) and not all(once[once.index(True) :]):
        raise VerificationError("an iteration step comes before a per-micro-batch step")
    width = sum(step.width for step, tail in zip(graph.steps, once, strict=True) if not tail)
    if width != graph.template_size:
        raise VerificationError(f"the template has {graph.template_size} ops, its steps {width}")
    tail = sum(step.width for step, tail in zip(graph.steps, once, strict=True) if tail)
    if tail != graph.tail_size or n != width * graph.microbatches + tail:
        raise VerificationError(f"the tail has {graph.tail_size} ops, its steps {tail}")
    if len(graph.src) == 0:
        return
    outside = (graph.src < 0) | (graph.src >= n) | (graph.dst < 0) | (graph.dst >= n)
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        raise VerificationError(
            f"edge {index} joins {int(graph.src[index])} and {int(graph.dst[index])},"
            f" outside the {n} operations"
        )
    unknown = (graph.edge_kind != DATA_EDGE) & (graph.edge_kind != ORDER_EDGE)
    if unknown.any():
        index = int(np.flatnonzero(unknown)[0])
        raise VerificationError(
            f"edge {_edge(graph, index)} has kind {int(graph.edge_kind[index])},"
            " neither data nor order"
        )


def _check_steps(graph: DeviceGraph) -> None:
    for step in graph.steps:
        if len(set(step.gpus)) != len(step.gpus):
            raise VerificationError(
                f"step {step.op_name(0, None)} lists a GPU twice: {list(step.gpus)}"
            )


def _check_unique_names(graph: DeviceGraph) -> None:
    """Template names are unique; with m > 1 the `_mb{j}` suffix keeps the copies apart."""
    suffix = 0 if graph.microbatches > 1 else None  # micro-batch 0's names, as printed
    seen: set[str] = set()
    for step in graph.steps:  # names straight from the steps: graph.name() is per-op slow
        for rank in range(step.width):
            name = step.op_name(rank, None if step.phase is Phase.ITERATION else suffix)
            if name in seen:
                raise VerificationError(f"two operations are named {name}")
            seen.add(name)


def _check_edges_unique(graph: DeviceGraph) -> None:
    """No self-loop, and no (source, destination) pair twice (data and order merge)."""
    loops = graph.src == graph.dst
    if loops.any():
        raise VerificationError(f"edge {_edge(graph, int(np.flatnonzero(loops)[0]))} is a loop")
    keys = graph.src * np.int64(graph.num_ops) + graph.dst
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if repeated.size:
        raise VerificationError(f"edge {_edge(graph, int(order[repeated[0] + 1]))} is listed twice")


def _check_data_edges(graph: DeviceGraph) -> None:
    """Data stays in its micro-batch and flows forward in the step program."""
    data = graph.edge_kind == DATA_EDGE
    width = np.int64(graph.template_size)
    start = np.int64(graph.tail_start)
    out_of_tail = data & (graph.src >= start) & (graph.dst < start)
    if out_of_tail.any():
        index = int(np.flatnonzero(out_of_tail)[0])
        raise VerificationError(f"data edge {_edge(graph, index)} leaves the iteration's tail")
    into_tail = data & (graph.dst >= start)
    backwards = into_tail & (graph.src >= graph.dst)
    if backwards.any():
        index = int(np.flatnonzero(backwards)[0])
        raise VerificationError(f"data edge {_edge(graph, index)} goes backwards in the tail")
    data &= graph.dst < start
    if not width:
        return
    crossing = data & (graph.src // width != graph.dst // width)
    if crossing.any():
        index = int(np.flatnonzero(crossing)[0])
        raise VerificationError(f"data edge {_edge(graph, index)} crosses micro-batches")
    backwards = data & (graph.src % width >= graph.dst % width)
    if backwards.any():
        index = int(np.flatnonzero(backwards)[0])
        raise VerificationError(
            f"data edge {_edge(graph, index)} goes backwards in the step program: its input"
            " is produced after it is read"
        )


def _check_acyclic(graph: DeviceGraph) -> list[IntArray]:
    """The topological levels; a cycle is a bug here, since expansion rejects deadlocks."""
    levels = graph.levels
    if levels is None:
        cycle = find_cycle(graph.num_ops, graph.src, graph.dst)
        shown = " -> ".join(graph.name(op) for op in cycle[:6])
        more = f" -> ... ({len(cycle)} ops)" if len(cycle) > 6 else f" -> {graph.name(cycle[0])}"
        raise VerificationError(f"the graph has a cycle: {shown}{more}")
    return levels


def _template_occurrences(graph: DeviceGraph) -> tuple[IntArray, IntArray]:
    """(template op, lane) for every GPU each template operation occupies.

    A lane is one stream of one GPU, 2·gpu + 0 for its compute stream and 2·gpu + 1 for
    its communication stream: program order is a chain per lane.
    """
    ops: list[IntArray] = []
    lanes: list[IntArray] = []
    offset = 0
    for step in graph.steps:
        on = np.asarray(step.gpus, dtype=np.int64)
        ranks = np.zeros(len(on), np.int64) if step.joint else np.arange(len(on), dtype=np.int64)
        ops.append(offset + ranks)
        lanes.append(2 * on + (1 if step.stream is Stream.COMM else 0))
        offset += step.width
    if not ops:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ops), np.concatenate(lanes)


def _lane_occurrences(graph: DeviceGraph) -> tuple[IntArray, IntArray]:
    """(operation, lane) for every lane each operation occupies, the tail's included."""
    m, width = graph.microbatches, graph.template_size
    template, lane = _template_occurrences(graph)
    body = template < width
    op = (np.arange(m, dtype=np.int64)[:, None] * width + template[body][None, :]).ravel()
    tail_ops = template[~body] - width + graph.tail_start
    return np.concatenate([op, tail_ops]), np.concatenate([np.tile(lane[body], m), lane[~body]])


def _check_program_order(graph: DeviceGraph, levels: list[IntArray]) -> None:
    """Each stream's operations on each GPU form one chain of edges.

    In a DAG, a set of nodes lies on one path exactly when sorting them by topological
    level puts an edge between every two consecutive ones: along a path levels strictly
    increase, so the sort recovers the path, and two nodes of equal level are unordered.
    """
    n = graph.num_ops
    level_of = np.empty(n, dtype=np.int64)
    for index, level in enumerate(levels):
        level_of[level] = index
    op, lane = _lane_occurrences(graph)
    sort = np.lexsort((op, level_of[op], lane))
    op, lane = op[sort], lane[sort]
    same = lane[1:] == lane[:-1]
    first, second = op[:-1][same], op[1:][same]
    keys = np.sort(graph.src * np.int64(n) + graph.dst)
    wanted = first * np.int64(n) + second
    found = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    missing = np.flatnonzero(keys[found] != wanted) if len(keys) else np.arange(len(wanted))
    if missing.size:
        index = int(missing[0])
        _raise_unchained(graph, int(first[index]), int(second[index]), int(lane[1:][same][index]))


def _raise_unchained(graph: DeviceGraph, before: int, after: int, lane: int) -> None:
    """Say which operation of a GPU's stream lost its link: only on failure, so plain Python."""
    ops, local = _lane_edges(graph, lane)
    gpu = f"{lane // 2}'s communication stream" if lane % 2 else str(lane // 2)
    has_pred = {d for _, d in local}
    has_succ = {s for s, _ in local}
    # The GPU's first and last operations are those of the first and last micro-batch's
    # earliest and latest steps: the smallest and largest ids. Any other op without a
    # predecessor or successor on the GPU is where the chain breaks.
    orphans = [(op, "from the op before it") for op in ops[1:] if op not in has_pred]
    dead_ends = [(op, "to the op after it") for op in ops[:-1] if op not in has_succ]
    candidates = orphans[:1] + dead_ends[:1]
    # One lost edge often leaves both ends unlinked; a joint op is the more telling one.
    joint = [c for c in candidates if graph.step_of(c[0]).joint]
    for op, side in joint or candidates:
        raise VerificationError(_unlinked(graph, op, gpu, side))
    raise VerificationError(
        f"program order on gpu {gpu} is not a chain: nothing orders {graph.name(before)}"
        f" and {graph.name(after)}"
    )


def _unlinked(graph: DeviceGraph, op: int, gpu: str, side: str) -> str:
    what = "joint op" if graph.step_of(op).joint else "op"
    return f"{what} {graph.name(op)} has no edge {side} on gpu {gpu}"


def _lane_edges(graph: DeviceGraph, lane: int) -> tuple[list[int], list[tuple[int, int]]]:
    """The operations of one lane (a GPU's stream), ascending, and the edges between them."""
    every, lanes = _lane_occurrences(graph)
    ops = sorted(every[lanes == lane].tolist())
    on = np.zeros(graph.num_ops, dtype=bool)
    on[ops] = True
    both = on[graph.src] & on[graph.dst]
    local = list(zip(graph.src[both].tolist(), graph.dst[both].tolist(), strict=True))
    return ops, local


def _step_kinds(graph: DeviceGraph) -> list[str]:
    """The kind of block each step belongs to (`attention`, `transfer`, ...)."""
    return [str(graph.blocks[index].kind) for index in graph.step_block.tolist()]


def _check_flops(graph: DeviceGraph) -> None:
    """Matmul FLOPs per (layer, block) of one micro-batch template, against the program:
    the forward's, and for a training program the backward's (twice the forward's), the
    fused attention backward's own recompute and activation recomputation's, each apart."""
    expected = expected_training_flops(graph.program)
    actual = _template_flops(graph)
    parts = (
        ("", expected.forward),
        ("backward ", expected.backward),
        ("attention-backward recompute ", expected.kernel_recompute),
        ("recomputed ", expected.recompute),
    )
    for (what, want_table), have_table in zip(parts, actual, strict=True):
        if want_table is expected.recompute:
            # a full recompute reruns a layer's blocks before the layer's first backward
            # block on the group: compare per layer
            want_table, have_table = _per_layer(want_table), _per_layer(have_table)
        for key in sorted(set(want_table) | set(have_table)):
            have, want = have_table.get(key, 0), want_table.get(key, 0)
            if have != want:
                layer, kind = key
                raise VerificationError(
                    f"layer {layer} {kind}: {what}matmul FLOPs per micro-batch are"
                    f" {have:,}, the program needs {want:,} ({want - have:+,})"
                )


def _per_layer(table: FlopTable) -> FlopTable:
    """A table's FLOPs summed over each layer's blocks (key (layer, "layer"))."""
    out: FlopTable = {}
    for (layer, _), flops in table.items():
        out[layer, "layer"] = out.get((layer, "layer"), 0) + flops
    return out


def _template_flops(graph: DeviceGraph) -> tuple[FlopTable, FlopTable, FlopTable, FlopTable]:
    """FLOPs of the template's operations as the graph holds them (their interned terms),
    a kept GPU counting for its whole class after a symmetric collapse: forward, backward
    (input and weight gradients, without the fused kernel's recompute), the fused attention
    backward's recompute, and recomputed forward steps.

    Python integers: a large model's total passes 2**63.
    """
    class_size = graph.symmetry.class_size if graph.symmetry else {}
    step_kinds = _step_kinds(graph)
    term_flops = [term.flops() for term in graph.terms.terms]
    term_recomputed = [term.recomputed_flops() for term in graph.terms.terms]
    tables: tuple[FlopTable, FlopTable, FlopTable, FlopTable] = ({}, {}, {}, {})
    part = {
        Phase.FORWARD: 0,
        Phase.BACKWARD: 1,
        Phase.WEIGHT_GRAD: 1,
        Phase.RECOMPUTE: 3,
        Phase.ITERATION: 1,
    }
    for step_index, rank, term in zip(
        graph.template_step.tolist(),
        graph.template_rank.tolist(),
        graph.template_term.tolist(),
        strict=True,
    ):
        flops = term_flops[term]
        step = graph.steps[step_index]
        if not flops or step.phase is Phase.ITERATION:
            continue
        weight = 1 if step.joint else class_size.get(step.gpus[rank], 1)
        key = (step.layer, step_kinds[step_index])
        table = tables[part[step.phase]]
        recomputed = term_recomputed[term]
        table[key] = table.get(key, 0) + (flops - recomputed) * weight
        if recomputed:
            tables[2][key] = tables[2].get(key, 0) + recomputed * weight
    return tables
