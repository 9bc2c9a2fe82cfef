"""How long each GPU's two streams run at the same time, for per-GPU busy time.

A GPU is busy while at least one of its streams runs an operation. Without `overlap` every
operation is on the compute stream and busy time is the sum of the GPU's costs; with it the
communication stream may run alongside the compute stream, and that overlap is counted once.
Each stream runs one operation at a time (program order is per stream), so the overlap is
the sum of both streams' busy times minus the length of their union.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import numpy.typing as npt

from dagc.analysis.critical_path import CriticalPath
from dagc.ir.device import DeviceGraph
from dagc.ir.steps import Stream

FloatArray = npt.NDArray[np.float64]


def stream_overlap(graph: DeviceGraph, path: CriticalPath) -> dict[int, float]:
    """Seconds during which both streams of a GPU run an operation, per GPU (0 if absent).

    Times are those of the as-soon-as-possible schedule the critical path computes. GPUs a
    symmetric collapse left out get their representative's figure: they run the same
    operations at the same times.
    """
    if not any(step.stream is Stream.COMM for step in graph.steps):
        return {}
    starts: dict[int, list[FloatArray]] = defaultdict(list)
    ends: dict[int, list[FloatArray]] = defaultdict(list)
    offset = 0
    for step in graph.steps:
        for rank in range(step.width):
            ops = graph.template_ops(offset + rank)
            for gpu in step.gpus if step.joint else (step.gpus[rank],):
                starts[gpu].append(path.start[ops])
                ends[gpu].append(path.finish[ops])
        offset += step.width
    overlap = {
        gpu: _summed(ends[gpu], starts[gpu]) - _union(starts[gpu], ends[gpu]) for gpu in starts
    }
    return _spread(graph, overlap)


def _summed(ends: list[FloatArray], starts: list[FloatArray]) -> float:
    return float(np.concatenate(ends).sum() - np.concatenate(starts).sum())


def _union(starts: list[FloatArray], ends: list[FloatArray]) -> float:
    """The length of the union of intervals [start, end)."""
    start, end = np.concatenate(starts), np.concatenate(ends)
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)  # how far the intervals so far reach
    begin = np.maximum(start, np.concatenate([[start[0]], reach[:-1]]))
    return float(np.maximum(end - begin, 0.0).sum())


def _spread(graph: DeviceGraph, overlap: dict[int, float]) -> dict[int, float]:
    """Give each GPU left out by a symmetric collapse the figure of its representative."""
    if graph.symmetry is None:
        return overlap
    kept = graph.symmetry.representative
    return {gpu: overlap.get(kept[gpu], 0.0) for gpu in kept}
