"""order: program-order edges, so each GPU runs its operations one at a time.

Program order comes from the file, never from costs. A training program (a file with a
`training` section) follows its pipeline schedule, per stage: see passes/schedules.py.
A prefill program:
- GPUs of a pipeline stage run micro-batch by micro-batch (GPipe forward);
- GPUs of groups that alternate with another group inside a layer (attention/MoE
  separation) run ping-pong units in (layer, micro-batch) order. Within a layer, a GPU's
  work comes in segments separated by the other group's work: the attention GPUs run
  attention and broadcast (segment 0), the MoE GPUs run their part, and the attention GPUs
  finish with res2 (segment 1). A later segment joins the unit of the next layer for the
  same micro-batch: unit (l, j) on the attention GPUs is res2 of layer l-1 for j, then
  layer l's attention and broadcast for j. So the attention GPUs take micro-batch j+1, or
  micro-batch j of layer l+1, while the MoE GPUs still work on micro-batch j of layer l.

Each GPU has two streams (compute and communication, see passes/streams.py). Program order
is per (GPU, stream): the order above, restricted to the operations of one stream. Without
`overlap` every operation is on the compute stream, so the order is exactly the per-GPU one.
Each order edge joins two operations that the per-GPU order already ordered the same way, so
streams can only remove waiting, never create a cycle.
"""

from __future__ import annotations

import numpy as np

from dagc.ir.device import DATA_EDGE, ORDER_EDGE, DeviceGraph
from dagc.ir.steps import Phase, Step, Stream
from dagc.passes.schedules import training_chains


def order(graph: DeviceGraph) -> DeviceGraph:
    """Add an edge from each operation to the next one on the same GPU and stream."""
    if graph.program.training is not None:
        src, dst = training_chains(graph)
        src, dst = order_iteration(graph, src, dst)
        return _merge(graph, src, dst)
    occ_template, occ_gpu, occ_step, occ_segment = _occurrences(graph.steps)
    per_mb = occ_template < graph.template_size  # the tail is ordered by order_iteration
    occ_template, occ_gpu = occ_template[per_mb], occ_gpu[per_mb]
    occ_step, occ_segment = occ_step[per_mb], occ_segment[per_mb]
    pingpong = np.asarray(sorted(_pingpong_gpus(graph.steps)), dtype=np.int64)
    layer_of_step = np.asarray([s.layer for s in graph.steps], dtype=np.int64)
    on_comm = np.asarray([s.stream is Stream.COMM for s in graph.steps], dtype=np.int64)
    # one chain per (GPU, stream), a lane: a GPU's streams are 2·gpu and 2·gpu + 1
    lane = occ_gpu * 2 + on_comm[occ_step]
    # A lane runs its units in turn, each unit for every micro-batch, each micro-batch's
    # part of a unit in step order. A pipeline stage's GPUs have one unit (micro-batch by
    # micro-batch); ping-pong GPUs one per layer, a later segment joining the next layer's.
    unit = np.where(np.isin(occ_gpu, pingpong), layer_of_step[occ_step] + (occ_segment > 0), 0)
    sort = np.lexsort((occ_step, unit, lane))
    template, lane, unit = occ_template[sort], lane[sort], unit[sort]
    src, dst = _chains(template, lane, unit, graph.microbatches, graph.template_size)
    src, dst = order_iteration(graph, src, dst)
    return _merge(graph, src, dst)


def order_iteration(
    graph: DeviceGraph, src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The program order `src`→`dst` of the per-micro-batch operations, plus the tail's:
    on each lane (GPU and stream) the once-per-iteration operations run after everything
    else, in step order, the first after the lane's last per-micro-batch operation.

    A lane's last operation is the one with no order edge to another operation of the same
    lane, whatever schedule made the chains.
    """
    if not graph.tail_size:
        return src, dst
    width, start = graph.template_size, graph.tail_start
    template: list[int] = []
    lanes: list[int] = []
    offset = 0
    for step in graph.steps:
        for rank, gpu in enumerate(step.gpus):
            template.append(offset + (0 if step.joint else rank))
            lanes.append(2 * gpu + (step.stream is Stream.COMM))
        offset += step.width
    occ_t = np.asarray(template, dtype=np.int64)
    occ_lane = np.asarray(lanes, dtype=np.int64)
    count = np.int64(occ_lane.max() + 1 if occ_lane.size else 1)
    body = occ_t < width
    # every (per-micro-batch operation, lane) pair, as op·count + lane
    shift = np.arange(graph.microbatches, dtype=np.int64)[:, None] * width
    body_ops = (shift + occ_t[body][None, :]).ravel()
    body_lanes = np.broadcast_to(occ_lane[body], (graph.microbatches, int(body.sum()))).ravel()
    keys = np.sort(body_ops * count + body_lanes)
    # the (source, lane) pairs whose order edge stays on that lane
    by_t = np.argsort(occ_t[body], kind="stable")
    sorted_t, sorted_lane = occ_t[body][by_t], occ_lane[body][by_t]
    first = np.searchsorted(sorted_t, np.arange(width + 1))
    src_t = src % width
    repeats = first[src_t + 1] - first[src_t]
    edge_src = np.repeat(src, repeats)
    edge_dst = np.repeat(dst, repeats)
    within = np.arange(len(edge_src)) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    edge_lane = sorted_lane[np.repeat(first[src_t], repeats) + within]
    followed = _contains(keys, edge_dst * count + edge_lane)
    not_last = _sorted_unique(edge_src[followed] * count + edge_lane[followed])
    last_keys = keys[~_contains(not_last, keys)]
    last_of_lane: dict[int, int] = {}
    for key in last_keys.tolist():  # ascending: the largest op of a lane wins
        last_of_lane[key % int(count)] = key // int(count)
    new_src: list[int] = []
    new_dst: list[int] = []
    for t, lane in zip(occ_t[~body].tolist(), occ_lane[~body].tolist(), strict=True):
        op = start + t - width
        previous = last_of_lane.get(lane)
        if previous is not None:
            new_src.append(previous)
            new_dst.append(op)
        last_of_lane[lane] = op
    return (
        np.concatenate([src, np.asarray(new_src, dtype=np.int64)]),
        np.concatenate([dst, np.asarray(new_dst, dtype=np.int64)]),
    )


def _chains(
    template: np.ndarray, lane: np.ndarray, unit: np.ndarray, m: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The program-order edges of every lane, from its template operations in order.

    Works on one micro-batch's template and repeats it arithmetically, so nothing of the
    size of the whole graph is sorted: inside a (lane, unit) group each micro-batch's
    operations follow each other; the group's last operation of micro-batch j leads to its
    first of micro-batch j + 1; the last of micro-batch m − 1 leads to the lane's next
    group's first of micro-batch 0.
    """
    shift = np.arange(m, dtype=np.int64)[:, None] * np.int64(width)
    same_group = (lane[1:] == lane[:-1]) & (unit[1:] == unit[:-1])
    inside_src = (shift + template[:-1][same_group][None, :]).ravel()
    inside_dst = (shift + template[1:][same_group][None, :]).ravel()
    starts = np.flatnonzero(np.concatenate(([True], ~same_group)))
    ends = np.concatenate((starts[1:] - 1, [len(template) - 1]))
    first, last = template[starts], template[ends]
    across_src = (shift[:-1] + last[None, :]).ravel()
    across_dst = (shift[1:] + first[None, :]).ravel()
    next_in_lane = lane[starts[1:]] == lane[starts[:-1]]
    units_src = (m - 1) * np.int64(width) + last[:-1][next_in_lane]
    units_dst = first[1:][next_in_lane]
    return (
        np.concatenate([inside_src, across_src, units_src]),
        np.concatenate([inside_dst, across_dst, units_dst]),
    )


def _occurrences(
    steps: tuple[Step, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(template op, GPU, step, segment) for every GPU each template operation occupies.

    A GPU's segment within a layer grows each time it comes back to the layer's work after
    another group's work: some per-GPU step ran, since the GPU's own last per-GPU step, on
    GPUs disjoint from that step's. A step on part of the GPU's own group (a decode step's
    experts on the ranks that have tokens) is not another group's work.
    """
    template: list[int] = []
    gpus: list[int] = []
    step_ids: list[int] = []
    segments: list[int] = []
    segment_of: dict[int, int] = {}
    last_own: dict[int, int] = {}  # GPU -> index of its last per-GPU step in the layer
    away: dict[tuple[int, int], bool] = {}
    layer: tuple[int, bool] | None = None
    offset = 0
    for index, step in enumerate(steps):
        key = (step.layer, step.phase is Phase.FORWARD)  # the backward starts anew
        if key != layer:
            layer, segment_of, last_own, away = key, {}, {}, {}
        for rank, gpu in enumerate(step.gpus):
            last = last_own.get(gpu)
            if gpu not in segment_of:
                segment_of[gpu] = 0
            elif last is not None and _ran_elsewhere(steps, last, index, away):
                segment_of[gpu] += 1
            if not step.joint:
                last_own[gpu] = index
            template.append(offset + (0 if step.joint else rank))
            gpus.append(gpu)
            step_ids.append(index)
            segments.append(segment_of[gpu])
        offset += step.width
    return (
        np.asarray(template, dtype=np.int64),
        np.asarray(gpus, dtype=np.int64),
        np.asarray(step_ids, dtype=np.int64),
        np.asarray(segments, dtype=np.int64),
    )


def _ran_elsewhere(
    steps: tuple[Step, ...], last: int, now: int, memo: dict[tuple[int, int], bool]
) -> bool:
    """Whether a per-GPU step between `last` and `now` ran on GPUs disjoint from step
    `last`'s (another group's work came in between)."""
    found = memo.get((last, now))
    if found is None:
        own = frozenset(steps[last].gpus)
        found = memo[last, now] = any(
            not steps[i].joint and own.isdisjoint(steps[i].gpus) for i in range(last + 1, now)
        )
    return found


def _pingpong_gpus(steps: tuple[Step, ...]) -> set[int]:
    """GPUs of groups that share a layer's compute with another group."""
    per_layer: dict[int, set[tuple[int, ...]]] = {}
    for step in steps:
        if not step.joint:
            per_layer.setdefault(step.layer, set()).add(step.gpus)
    gpus: set[int] = set()
    for groups in per_layer.values():
        distinct = {frozenset(g) for g in groups}
        if len(distinct) > 1:
            for group in distinct:
                gpus |= group
    return gpus


def _merge(graph: DeviceGraph, order_src: np.ndarray, order_dst: np.ndarray) -> DeviceGraph:
    """Data edges plus the program-order edges that are not data edges already."""
    n = np.int64(graph.num_ops)
    order_key = _sorted_unique(order_src * n + order_dst)
    data_key = _sorted_data_keys(graph, n)
    new = order_key[~_contains(data_key, order_key)]
    src = np.concatenate([graph.src, new // n])
    dst = np.concatenate([graph.dst, new % n])
    kinds = np.concatenate(
        [np.full(len(graph.src), DATA_EDGE, np.uint8), np.full(len(new), ORDER_EDGE, np.uint8)]
    )
    return graph.with_edges(src, dst, kinds)


def _sorted_data_keys(graph: DeviceGraph, n: np.int64) -> np.ndarray:
    """The data edges' keys src·n + dst, sorted.

    The microbatch pass lays edges out micro-batch by micro-batch, each a copy of the first
    shifted by W operations, so sorting the first copy is enough: micro-batch j's keys are
    the first's plus j·W·(n + 1), and every copy's keys exceed the previous copy's.
    """
    m, width = graph.microbatches, graph.template_size
    per_copy = len(graph.src) // m if m else 0
    if m <= 1 or per_copy * m != len(graph.src) or graph.tail_size:
        return np.sort(graph.src * n + graph.dst)
    first = np.sort(graph.src[:per_copy] * n + graph.dst[:per_copy])
    shifts = np.arange(m, dtype=np.int64) * np.int64(width) * (n + 1)
    return (shifts[:, None] + first[None, :]).ravel()


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique's hash path is several times slower than a sort at millions of keys
    values = np.sort(values)
    if values.size == 0:
        return values
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _contains(sorted_haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """For each needle, whether it occurs in `sorted_haystack`."""
    if sorted_haystack.size == 0:
        return np.zeros(needles.size, dtype=bool)
    position = np.searchsorted(sorted_haystack, needles)
    position = np.minimum(position, sorted_haystack.size - 1)
    found: np.ndarray = sorted_haystack[position] == needles
    return found
