"""Grouping operations into picture nodes, shared by `dagc render` and `dagc timeline`.

The device view draws one node per node name (the products of `qkv_l0_gpu3` together); the
block view and the Gantt chart's block bars one per run of a GPU's work between two of its
collectives or transfers. A grouping is computed once per schedule (`grouping_for`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from dagc.backends.schedule import IntArray, Schedule


@dataclass(frozen=True)
class Grouping:
    """The picture node of every template position (the tail's included); micro-batch j's
    copy of template node k is node j·size + k, a tail operation's node m·size + k.
    `names[k]` is the (DOT id stem, name, main block) of template node k when the grouping
    names its nodes itself (the block view's runs)."""

    key: IntArray
    size: int
    names: tuple[tuple[str, str, int], ...] = ()
    width: int = 0  # W: template positions per micro-batch (0: len(key), no tail)
    tail_start: int = -1  # m·W, the first tail operation (-1: no tail)

    def nodes_of(self, ops: IntArray) -> IntArray:
        width = self.width or len(self.key)
        micro, template = np.divmod(ops, width)
        if self.tail_start >= 0:
            tail = ops >= self.tail_start
            micro = np.where(tail, self.tail_start // max(width, 1), micro)
            template = np.where(tail, ops - self.tail_start + width, template)
        return micro * self.size + self.key[template]


def _positions(schedule: Schedule) -> list[int]:
    """For every template position (the tail's included), the operation that stands for it:
    micro-batch 0's copy, or the tail operation."""
    graph = schedule.graph
    width = graph.template_size
    return list(range(width)) + [graph.tail_start + i for i in range(graph.tail_size)]


def _with_tail(schedule: Schedule, grouping: Grouping) -> Grouping:
    graph = schedule.graph
    if not graph.tail_size:
        return grouping
    return replace(grouping, width=graph.template_size, tail_start=graph.tail_start)


def _intern(keys: Sequence[object]) -> Grouping:
    ids: dict[object, int] = {}
    key = np.asarray([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
    return Grouping(key, len(ids))


def device_grouping(schedule: Schedule) -> Grouping:
    """One node per node name: the products of `qkv_l0_gpu3` share one."""
    graph = schedule.graph
    return _with_tail(schedule, _intern([graph.node_name(op) for op in _positions(schedule)]))


def block_grouping(schedule: Schedule) -> Grouping:
    """One node per run of a GPU's operations between two of its collectives or transfers
    (per micro-batch); every collective or transfer is a node of its own.

    Cutting at the GPU's collectives, not at block boundaries, keeps every drawn edge a
    path of the device DAG: an MoE block's router, experts and residual add, which its
    dispatch and combine separate, become three nodes, and the residual add after an
    all-reduce joins the next block's node instead of pretending to precede the
    all-reduce. The template is in execution order on every GPU (edges inside a
    micro-batch go from lower to higher template index), so counting a GPU's joint
    operations while sweeping the template numbers its runs."""
    graph = schedule.graph
    seen: dict[int, int] = defaultdict(int)  # GPU -> joint operations met so far
    keys: list[object] = []
    for t, op in enumerate(_positions(schedule)):
        gpus = graph.gpus_of(op)
        if graph.steps[int(graph.template_step[t])].joint:
            keys.append(("joint", t))
            for gpu in gpus:
                seen[gpu] += 1
        else:
            keys.append((gpus[0], seen[gpus[0]]))
    grouping = _with_tail(schedule, _intern(keys))
    return replace(grouping, names=_run_names(schedule, grouping))


def _run_names(schedule: Schedule, grouping: Grouping) -> tuple[tuple[str, str, int], ...]:
    """(DOT id stem, name, main block) of every template node of the block grouping: a
    run is named after the block that takes most of its time (`moe l23 gpu0`), numbered
    when that block is cut into several runs (`moe l23 gpu0 (2/3)`: its experts)."""
    graph = schedule.graph
    members: dict[int, list[int]] = defaultdict(list)  # node -> the ops standing for it
    for t, op in enumerate(_positions(schedule)):
        members[int(grouping.key[t])].append(op)
    main: dict[int, int] = {}
    for node, ts in members.items():
        seconds: dict[int, float] = defaultdict(float)
        for t in ts:
            seconds[schedule.block_of(t)] += float(schedule.costs[t])
        main[node] = min(seconds, key=lambda b: (-seconds[b], b))
    parts: dict[tuple[int, int], list[int]] = defaultdict(list)  # (block, gpu) -> its runs
    for node, ts in sorted(members.items()):
        if not graph.step_of(ts[0]).joint:
            parts[(main[node], graph.gpus_of(ts[0])[0])].append(node)
    names: list[tuple[str, str, int]] = []
    for node in range(grouping.size):
        ts = members[node]
        if graph.step_of(ts[0]).joint:
            names.append((graph.node_name(ts[0]), graph.node_name(ts[0]), -1))
            continue
        names.append(_run_name(schedule, node, ts, main[node], parts))
    return tuple(names)


def _run_name(
    schedule: Schedule,
    node: int,
    ts: list[int],
    main: int,
    parts: dict[tuple[int, int], list[int]],
) -> tuple[str, str, int]:
    gpu = schedule.graph.gpus_of(ts[0])[0]
    block = schedule.blocks[main]
    ident = f"b{main}_{block.kind}_l{block.layer}_gpu{gpu}"
    name = f"{block.kind} l{block.layer} gpu{gpu}"
    runs = parts[(main, gpu)]
    if len(runs) > 1:
        ident += f"_p{runs.index(node) + 1}"
        name += f" ({runs.index(node) + 1}/{len(runs)})"
    return ident, name, main


def grouping_for(schedule: Schedule, view: str) -> Grouping:
    """The device or block grouping, computed once per schedule."""
    found = schedule.memo.get(f"grouping {view}")
    if not isinstance(found, Grouping):
        found = device_grouping(schedule) if view == "device" else block_grouping(schedule)
        schedule.memo[f"grouping {view}"] = found
    return found


def count_nodes(grouping: Grouping, ops: IntArray) -> int:
    """How many picture nodes the operations `ops` make."""
    return int(np.unique(grouping.nodes_of(ops)).size)
