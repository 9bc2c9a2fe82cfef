"""microbatch: the step program, repeated for every micro-batch, becomes the device DAG.

Data edges join the step that writes each value to every step that reads it (dataflow, from
the values the steps name): on every GPU the two share, or every operation of one to every
operation of the other when they share none (a transfer's two sides). The edges of one
micro-batch form a template that numpy repeats m times.
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
    for source, target in _value_dependencies(steps):
        for a, b in _joins(steps[source], steps[target]):
            src.append(offsets[source] + a)
            dst.append(offsets[target] + b)
    return src, dst


def _value_dependencies(steps: tuple[Step, ...]) -> list[tuple[int, int]]:
    """(writer, reader) step pairs: one for each step and each distinct step that wrote a
    value it reads (the verifier checks that every value read was written before)."""
    writer: dict[str, int] = {}
    pairs: list[tuple[int, int]] = []
    for index, step in enumerate(steps):
        unwritten = [value.name for value in step.reads if value.name not in writer]
        if unwritten:  # a pass's bug: an edge dropped silently would shorten the path
            raise ValueError(f"step {step.base}{step.part} reads {unwritten[0]}, never written")
        sources = dict.fromkeys(writer[value.name] for value in step.reads)
        pairs += [(source, index) for source in sources]
        for value in step.writes:
            writer[value.name] = index
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
