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
    return DeviceGraph(steps.program, steps.blocks, count, src, dst, kinds, steps.symmetry)


def template_data_edges(steps: tuple[Step, ...]) -> tuple[list[int], list[int]]:
    """(sources, destinations) of the data edges of one micro-batch, as template indices."""
    offsets: dict[int, int] = {}
    offset = 0
    for index, step in enumerate(steps):
        offsets[index] = offset
        offset += step.width
    src: list[int] = []
    dst: list[int] = []
    for source, target in _step_dependencies(steps):
        for a, b in _joins(steps[source], steps[target]):
            src.append(offsets[source] + a)
            dst.append(offsets[target] + b)
    return src, dst


def _step_dependencies(steps: tuple[Step, ...]) -> list[tuple[int, int]]:
    """(source step, target step) pairs: each step reads the one before it, except that
    branches fork from the step before their group and join at the step after it."""
    pairs: list[tuple[int, int]] = []
    group: str | None = None
    fork: list[int] = []
    ends: dict[int, int] = {}
    for index, step in enumerate(steps):
        if index == 0:
            sources: list[int] = []
        elif step.branch is None:
            sources = list(ends.values()) if group is not None else [index - 1]
            group, ends = None, {}
        else:
            name, branch = step.branch
            if name != group:
                fork = list(ends.values()) if group is not None else [index - 1]
                group, ends = name, {}
            sources = [ends[branch]] if branch in ends else fork
            ends[branch] = index
        pairs += [(source, index) for source in sources]
    return pairs


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
