"""The critical path: the longest path through the device DAG, nodes weighted by cost.

Computed level by level with numpy, so it scales to millions of operations. Ties break by
the lowest GPU id (a joint operation's lowest participant), then by name, so the path is
reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dagc.ir.device import DeviceGraph
from dagc.ir.toposort import NARROW, csr, gather

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CriticalPath:
    """The longest path: its length in seconds, its operations, and every op's times."""

    time: float
    ops: tuple[int, ...]
    start: FloatArray
    finish: FloatArray


def op_costs(graph: DeviceGraph, term_costs: FloatArray) -> FloatArray:
    """Seconds of every operation, from the seconds of every distinct term."""
    return term_costs[graph.op_term]


def critical_path(graph: DeviceGraph, costs: FloatArray) -> CriticalPath:
    """Longest path of `graph` with operation `costs` (seconds per op id)."""
    n = graph.num_ops
    levels = graph.levels
    if levels is None:
        raise ValueError("the device graph has a cycle")
    offsets, preds = csr(n, graph.dst, graph.src)
    start = np.zeros(n, dtype=np.float64)
    finish = np.zeros(n, dtype=np.float64)
    # Narrow levels (a deep program's chain) node by node, where numpy's cost per call would
    # dominate; the same float64 max and sum either way.
    for level in levels:
        if level.size < NARROW:
            for op in level.tolist():
                ready = 0.0
                for p in preds[offsets[op] : offsets[op + 1]].tolist():
                    ready = max(ready, float(finish[p]))
                start[op] = ready
                finish[op] = ready + costs[op]
            continue
        owner, pred = gather(offsets, preds, level)
        if pred.size:
            latest = np.zeros(len(level), dtype=np.float64)
            np.maximum.at(latest, owner, finish[pred])
            start[level] = latest
        finish[level] = start[level] + costs[level]
    path = _trace(graph, offsets, preds, start, finish)
    return CriticalPath(float(finish.max()) if n else 0.0, path, start, finish)


def _tie_key(graph: DeviceGraph, op: int) -> tuple[int, str]:
    return (min(graph.gpus_of(op)), graph.name(op))


def _trace(
    graph: DeviceGraph,
    offsets: npt.NDArray[np.int64],
    preds: npt.NDArray[np.int64],
    start: FloatArray,
    finish: FloatArray,
) -> tuple[int, ...]:
    if not len(finish):
        return ()
    ends = np.flatnonzero(finish == finish.max())
    sinks = set(np.flatnonzero(np.bincount(graph.src, minlength=len(finish)) == 0).tolist())
    last = [int(e) for e in ends if int(e) in sinks] or [int(e) for e in ends]
    op = min(last, key=lambda e: _tie_key(graph, e))
    path = [op]
    while True:
        candidates = preds[offsets[op] : offsets[op + 1]]
        tight = [int(p) for p in candidates if finish[p] == start[op]]
        if not tight:
            break
        op = min(tight, key=lambda p: _tie_key(graph, p))
        path.append(op)
    return tuple(reversed(path))
