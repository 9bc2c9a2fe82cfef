"""microbatch: the step program, repeated for every micro-batch, becomes the device DAG.

Data edges join each step to the next one: on every GPU the two share, or every operation
of one to every operation of the other when they share none (a transfer's two sides).
The edges of one micro-batch form a template that numpy repeats m times.
"""

from __future__ import annotations

import numpy as np

from dagc.ir.device import DATA_EDGE, DeviceGraph
from dagc.ir.steps import Step, StepProgram


def microbatch(steps: StepProgram) -> DeviceGraph:
    """The device DAG with data edges only (program order is the `order` pass's job)."""
    all_steps = tuple(steps.steps())
    src_t, dst_t = template_data_edges(all_steps)
    width = sum(step.width for step in all_steps)
    count = steps.program.workload.microbatches
    base = np.arange(count, dtype=np.int64)[:, None] * width
    src = (base + np.asarray(src_t, dtype=np.int64)[None, :]).ravel()
    dst = (base + np.asarray(dst_t, dtype=np.int64)[None, :]).ravel()
    kinds = np.full(len(src), DATA_EDGE, dtype=np.uint8)
    return DeviceGraph(steps.program, all_steps, count, src, dst, kinds)


def template_data_edges(steps: tuple[Step, ...]) -> tuple[list[int], list[int]]:
    """(sources, destinations) of the data edges of one micro-batch, as template indices."""
    src: list[int] = []
    dst: list[int] = []
    offset = 0
    previous: Step | None = None
    previous_offset = 0
    for step in steps:
        if previous is not None:
            for a, b in _joins(previous, step):
                src.append(previous_offset + a)
                dst.append(offset + b)
        previous, previous_offset = step, offset
        offset += step.width
    return src, dst


def _joins(first: Step, second: Step) -> list[tuple[int, int]]:
    """(rank in first, rank in second) pairs that carry data from `first` to `second`."""
    rank_in_second = {gpu: (0 if second.joint else i) for i, gpu in enumerate(second.gpus)}
    pairs = []
    for i, gpu in enumerate(first.gpus):
        if gpu in rank_in_second:
            pairs.append((0 if first.joint else i, rank_in_second[gpu]))
    if pairs:
        return sorted(set(pairs))
    return [(a, b) for a in range(first.width) for b in range(second.width)]
