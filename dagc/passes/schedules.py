"""Pipeline schedules: the program order of a training step on each pipeline stage.

A training program's step IR holds one micro-batch: its forward blocks, then its backward
blocks in reverse (phases `Step.phase`), then once-per-iteration steps (ITERATION). The
forward cuts into *chunks*: runs of consecutive blocks on one group (a moe block on another
group, an excursion, joins the run of the block before it), each started by the stage
transfer into it. The backward's runs mirror them, last chunk first. A *stage* is the set
of GPUs of a chunk; when the C chunks repeat p GPU sets with period p (chunk c on stage
c mod p, the sets disjoint), a stage runs v = C/p chunks, its *local* chunks k (global
chunk s + k·p).

A *unit* is one micro-batch's work of one phase group on one chunk: F (forward), B
(recomputation, input gradients, the backward's communication, and the weight gradients
unless the schedule defers them) and W (weight gradients, ZB-H1 only). Each stage runs its
units in the order of `stage_order`; a unit's operations on a GPU and stream (a lane) run in
template (step) order. ITERATION operations are the device DAG's tail (once per iteration,
not per micro-batch): they are left out here, and order.order_iteration chains them after
each lane's last operation.

Layouts that do not repeat with a period (a GPU in two stages that are not one stage's
chunks) run every forward unit in (chunk, micro-batch) order, then every backward unit in
(backward run, micro-batch) order: GPipe over the program order, acyclic whatever the
layout.

The edges are built per lane from its sequence of (unit, micro-batch) items with numpy:
each unit's operations on a lane are a template chain repeated for every micro-batch
(shifted by W operations per micro-batch), and one edge joins each item's last operation to
the next item's first. Nothing per operation runs in Python.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dagc.ir.device import DeviceGraph
from dagc.ir.logical import Schedule
from dagc.ir.steps import BlockSteps, Phase, Stream, TransferKind


class Part(enum.Enum):
    """The phase group of a unit."""

    F = "F"  # forward
    B = "B"  # backward: recompute, input gradients, communication (and W unless deferred)
    W = "W"  # deferred weight gradients (ZB-H1)


# (phase group, micro-batch, local chunk): one unit of a stage's schedule
Unit = tuple[Part, int, int]


# -- the schedules as pure functions ------------------------------------------------------


def stage_order(schedule: Schedule, p: int, s: int, m: int, v: int = 1) -> list[Unit]:
    """The units stage `s` of `p` runs, in order, for `m` micro-batches and `v` local chunks.

    GPipe: every forward (chunk by chunk, micro-batches in order), then every backward
    (last chunk first, micro-batches in order). 1F1B (Megatron's non-interleaved): min(p −
    s − 1, m) warm-up forwards, then forward/backward pairs, then the cool-down backwards.
    ZB-H1: 1F1B whose weight gradients W are split from B; stage s leaves W out of its
    first s forward/backward pairs, then runs one W (the oldest pending) after each B, and
    the rest at the end (as the zero-bubble authors' DeepSpeed schedule). Interleaved
    (Megatron's interleaved 1F1B, v > 1): see `_interleaved`; with v = 1 it is 1F1B. With
    v > 1, 1F1B and ZB-H1 run the interleaved order (W not deferred). Interleaving needs m
    divisible by p (as in Megatron-LM: with a smaller last group of micro-batches the order
    can deadlock); a layout with v > 1 and m not divisible by p runs GPipe (the `pp=` sugar
    refuses it).
    """
    if schedule is Schedule.GPIPE:
        forwards = [(Part.F, j, k) for k in range(v) for j in range(m)]
        return forwards + [(Part.B, j, k) for k in reversed(range(v)) for j in range(m)]
    if v > 1 and m % p:  # Megatron's interleaving needs it; GPipe is always deadlock-free
        return stage_order(Schedule.GPIPE, p, s, m, v)
    if v > 1:
        return _interleaved(p, s, m, v)
    warmup = min(p - s - 1, m)
    units: list[Unit] = [(Part.F, j, 0) for j in range(warmup)]
    weights = 0  # W units done (ZB-H1)
    for i in range(m):
        forward = warmup + i
        if forward < m:
            units.append((Part.F, forward, 0))
        units.append((Part.B, i, 0))
        if schedule is Schedule.ZB_H1 and (forward >= m or i >= s):
            units.append((Part.W, weights, 0))
            weights += 1
    if schedule is Schedule.ZB_H1:
        units += [(Part.W, j, 0) for j in range(weights, m)]
    return units


def _interleaved(p: int, s: int, m: int, v: int) -> list[Unit]:
    """Megatron's interleaved 1F1B on stage s: v local chunks, virtual micro-batches.

    The k-th forward is micro-batch/chunk `table[k]`: micro-batches in groups of p (m is a
    multiple of p), each group through chunk 0, then chunk 1, ...; the k-th
    backward is the same entry with the chunk reversed. Warm-up: min(2·(p − s − 1) + (v −
    1)·p, m·v) forwards, then forward/backward pairs, then the cool-down backwards.
    """
    table = [(j, k) for first in range(0, m, p) for k in range(v) for j in range(first, first + p)]
    total = m * v
    warmup = min(2 * (p - s - 1) + (v - 1) * p, total)
    units: list[Unit] = [(Part.F, *table[k]) for k in range(warmup)]
    for k in range(total - warmup):
        units.append((Part.F, *table[warmup + k]))
        j, chunk = table[k]
        units.append((Part.B, j, v - 1 - chunk))
    for k in range(total - warmup, total):
        j, chunk = table[k]
        units.append((Part.B, j, v - 1 - chunk))
    return units


# -- chunks and units of a training program ------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Every template operation's lane and unit kind, and the stages that run them."""

    template: np.ndarray  # template operation of each occurrence (op on one GPU)
    lane: np.ndarray  # lane of each occurrence: 2·GPU (+ 1 on the communication stream)
    kind: np.ndarray  # unit kind id of each occurrence
    kinds: list[tuple[str, int]]  # kind id -> (part: "F", "B", "W" or "I", global chunk)
    stage_of_gpu: dict[int, int]  # regular layouts: each GPU's stage
    periods: tuple[int, int] | None  # (p, v) of a regular layout, None otherwise
    chunks: int


def _direction(block: BlockSteps) -> str:
    """'F' for a forward block, 'B' for a backward one, 'I' for once-per-iteration work."""
    phases = {step.phase for step in block.steps} - {Phase.ITERATION}
    if not phases:
        return "I"
    return "F" if phases == {Phase.FORWARD} else "B"


def _runs(blocks: Sequence[BlockSteps]) -> tuple[list[int], list[set[int]]]:
    """The run of each block of one direction, and each run's GPUs (transfers excluded).

    A run is a chunk: consecutive blocks on one group, an excursion joining the run it is
    in (the backward's first block may be one: the last layer's moe); a transfer block
    belongs to the run of the block after it.
    """
    run_of: list[int] = [0] * len(blocks)
    members: list[set[int]] = []
    home: frozenset[int] | None = None
    pending: list[int] = []
    for index, block in enumerate(blocks):
        if block.kind is TransferKind.TRANSFER:
            pending.append(index)
            continue
        gpus = frozenset(block.gpus)
        if block.excursion:  # joins the run it is in (the backward's may start with one)
            if not members:
                members.append(set())
        elif gpus != home:
            if home is not None or not members:
                members.append(set())
            home = gpus
        members[-1] |= gpus
        for waiting in [*pending, index]:
            run_of[waiting] = len(members) - 1
        pending = []
    if not members:
        members.append(set())
    for waiting in pending:
        run_of[waiting] = len(members) - 1
    return run_of, members


def _layout(graph: DeviceGraph) -> _Layout:
    training = graph.program.training
    assert training is not None
    defer_w = training.schedule is Schedule.ZB_H1
    directions = [_direction(block) for block in graph.blocks]
    run_of_block: dict[int, int] = {}
    members: dict[str, list[set[int]]] = {}
    for direction in "FB":
        indices = [i for i, d in enumerate(directions) if d == direction]
        runs, sets = _runs([graph.blocks[i] for i in indices])
        run_of_block.update(zip(indices, runs, strict=True))
        members[direction] = sets
    forward_sets = members["F"]
    backward_sets = members["B"] if any(d == "B" for d in directions) else []
    chunks = len(forward_sets)
    periods = _periods(forward_sets, backward_sets)

    kind_ids: dict[tuple[str, int], int] = {}
    template: list[int] = []
    gpus: list[int] = []
    kinds: list[int] = []
    streams: list[int] = []
    offset = 0
    for block_index, block in enumerate(graph.blocks):
        direction = directions[block_index]
        run = run_of_block.get(block_index, 0)
        sets = members.get(direction, [])
        for step in block.steps:
            if step.phase is Phase.ITERATION or direction == "I":
                # once per iteration: the device DAG's tail, after every per-micro-batch
                # operation; order.order_iteration chains it after each lane's last one
                offset += step.width
                continue
            for rank, gpu in enumerate(step.gpus):
                own = run
                if sets and gpu not in sets[run]:  # the sending side of a transfer
                    earlier = [r for r in range(run) if gpu in sets[r]]
                    own = earlier[-1] if earlier else run
                if direction == "F":
                    key = ("F", own)
                else:
                    part = "W" if defer_w and step.phase is Phase.WEIGHT_GRAD else "B"
                    # the backward's runs go from the last chunk to the first
                    chunk = len(sets) - 1 - own if periods is not None else own
                    key = (part, chunk)
                kind = kind_ids.setdefault(key, len(kind_ids))
                template.append(offset + (0 if step.joint else rank))
                gpus.append(gpu)
                kinds.append(kind)
                streams.append(1 if step.stream is Stream.COMM else 0)
            offset += step.width
    stage_of_gpu: dict[int, int] = {}
    if periods is not None:
        p, _ = periods
        for stage in range(p):
            for gpu in forward_sets[stage]:
                stage_of_gpu[gpu] = stage
    gpu_array = np.asarray(gpus, dtype=np.int64)
    return _Layout(
        template=np.asarray(template, dtype=np.int64),
        lane=gpu_array * 2 + np.asarray(streams, dtype=np.int64),
        kind=np.asarray(kinds, dtype=np.int64),
        kinds=list(kind_ids),
        stage_of_gpu=stage_of_gpu,
        periods=periods,
        chunks=chunks,
    )


def _periods(forward: list[set[int]], backward: list[set[int]]) -> tuple[int, int] | None:
    """(p, v) when chunk c runs on stage c mod p (disjoint stages), else None.

    The backward's runs must mirror the forward's (or be absent: a forward-only program).
    """
    count = len(forward)
    if backward and [frozenset(s) for s in backward] != [frozenset(s) for s in reversed(forward)]:
        return None
    for p in range(1, count + 1):
        if count % p or any(forward[c] != forward[c % p] for c in range(count)):
            continue
        stages = forward[:p]
        if sum(len(s) for s in stages) != len(set().union(*stages)):
            return None
        return p, count // p
    return None


# -- edges ---------------------------------------------------------------------------------


def training_chains(graph: DeviceGraph) -> tuple[np.ndarray, np.ndarray]:
    """The program-order edges of a training program (see the module docstring)."""
    training = graph.program.training
    assert training is not None
    layout = _layout(graph)
    m, width = graph.microbatches, np.int64(graph.template_size)
    sort = np.lexsort((layout.template, layout.kind, layout.lane))
    template, lane, kind = layout.template[sort], layout.lane[sort], layout.kind[sort]
    # inside a (lane, kind) group: template order, repeated for every micro-batch
    shift = np.arange(m, dtype=np.int64)[:, None] * width
    same = (lane[1:] == lane[:-1]) & (kind[1:] == kind[:-1])
    inside_src = (shift + template[:-1][same][None, :]).ravel()
    inside_dst = (shift + template[1:][same][None, :]).ravel()
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.concatenate((starts[1:] - 1, [len(template) - 1])).astype(np.int64)
    group_lane, group_kind = lane[starts], kind[starts]
    first, last = template[starts], template[ends]

    kinds_count = len(layout.kinds)
    sequences = _kind_sequences(layout, training.schedule, m)
    across_src: list[np.ndarray] = []
    across_dst: list[np.ndarray] = []
    lane_bounds = np.flatnonzero(np.concatenate(([True], group_lane[1:] != group_lane[:-1])))
    lane_ends = np.concatenate((lane_bounds[1:], [len(group_lane)]))
    for begin, end in zip(lane_bounds.tolist(), lane_ends.tolist(), strict=True):
        gpu = int(group_lane[begin]) // 2
        present = np.full(kinds_count, -1, dtype=np.int64)
        present[group_kind[begin:end]] = np.arange(begin, end)
        item_kind, item_mb = sequences(gpu)
        slot = present[item_kind]
        keep = slot >= 0
        slot, mb = slot[keep], item_mb[keep]
        if slot.size < 2:
            continue
        across_src.append(last[slot[:-1]] + mb[:-1] * width)
        across_dst.append(first[slot[1:]] + mb[1:] * width)
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.concatenate([inside_src, *across_src, empty]),
        np.concatenate([inside_dst, *across_dst, empty]),
    )


def _kind_sequences(
    layout: _Layout, schedule: Schedule, m: int
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A function from a GPU to its lane's items: (kind ids, micro-batches) in order."""
    ids = {key: index for index, key in enumerate(layout.kinds)}
    iteration = ids.get(("I", 0))
    tail_kind = np.full(m if iteration is not None else 0, iteration or 0, dtype=np.int64)
    tail_mb = np.arange(len(tail_kind), dtype=np.int64)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def as_arrays(items: list[tuple[tuple[str, int], int]]) -> tuple[np.ndarray, np.ndarray]:
        kind = np.asarray([ids.get(key, -1) for key, _ in items], dtype=np.int64)
        mb = np.asarray([j for _, j in items], dtype=np.int64)
        keep = kind >= 0
        return (
            np.concatenate([kind[keep], tail_kind]),
            np.concatenate([mb[keep], tail_mb]),
        )

    periods = layout.periods
    if periods is None:
        keys = sorted(
            (key for key in layout.kinds if key[0] != "I"),
            key=lambda key: (key[0] != "F", key[1], key[0] == "W"),
        )
        fallback = as_arrays([(key, j) for key in keys for j in range(m)])
        return lambda gpu: fallback
    p, v = periods

    def sequence(gpu: int) -> tuple[np.ndarray, np.ndarray]:
        stage = layout.stage_of_gpu.get(gpu)
        if stage is None:  # a GPU with once-per-iteration work only
            return tail_kind, tail_mb
        if stage not in cache:
            units = stage_order(schedule, p, stage, m, v)
            cache[stage] = as_arrays([((part.value, stage + k * p), j) for part, j, k in units])
        return cache[stage]

    return sequence
