"""microbatch: the step program, repeated for every micro-batch, becomes the device DAG.

Data edges join the step that writes each value to every step that reads it (dataflow, from
the values the steps name): on every GPU the two share, or every operation of one to every
operation of the other when they share none (a transfer's two sides). The edges of one
micro-batch form a template that numpy repeats m times.

A training program's ITERATION steps (last in the step program) are not repeated: they make
the graph's tail, operations m·W onward, once per iteration. A tail operation that reads a
value a per-micro-batch step writes gets a data edge from that writer in EVERY micro-batch
(a layer's gradient reduction waits for every micro-batch's weight gradients); one that
reads a tail value, from the tail operation that wrote it.

The program's inputs (`StepProgram.inputs`: a decode step's KV cache) have no writer in the
step: reading one makes no data edge.
"""

from __future__ import annotations

import numpy as np

from dagc.ir.device import DATA_EDGE, DeviceGraph
from dagc.ir.steps import Phase, Step, StepProgram


def microbatch(steps: StepProgram) -> DeviceGraph:
    """The device DAG with data edges only (program order is the `order` pass's job)."""
    all_steps = tuple(steps.steps())
    once = [step.phase is Phase.ITERATION for step in all_steps]
    first_once = once.index(True) if any(once) else len(all_steps)
    if not all(once[first_once:]):
        raise ValueError("iteration steps must come after every per-micro-batch step")
    inputs = frozenset(value.name for value in steps.inputs)
    src_t, dst_t = template_data_edges(all_steps, inputs)
    width = sum(step.width for step in all_steps[:first_once])
    count = steps.program.workload.microbatches
    src_a = np.asarray(src_t, dtype=np.int64)
    dst_a = np.asarray(dst_t, dtype=np.int64)
    inside = dst_a < width  # edges of one micro-batch (their source is in it too)
    base = np.arange(count, dtype=np.int64)[:, None] * width
    src_parts = [(base + src_a[inside][None, :]).ravel()]
    dst_parts = [(base + dst_a[inside][None, :]).ravel()]
    # into the tail: from every micro-batch's copy of a template source, or from the tail
    tail_src, tail_dst = src_a[~inside], dst_a[~inside] - width + count * width
    from_template = tail_src < width
    src_parts.append((base + tail_src[from_template][None, :]).ravel())
    dst_parts.append(
        np.broadcast_to(tail_dst[from_template], (count, int(from_template.sum()))).ravel()
    )
    src_parts.append(tail_src[~from_template] - width + count * width)
    dst_parts.append(tail_dst[~from_template])
    src = np.concatenate(src_parts)
    dst = np.concatenate(dst_parts)
    kinds = np.full(len(src), DATA_EDGE, dtype=np.uint8)
    return DeviceGraph(steps.program, steps.blocks, count, src, dst, kinds, steps.symmetry)


def template_data_edges(
    steps: tuple[Step, ...], inputs: frozenset[str] = frozenset()
) -> tuple[list[int], list[int]]:
    """(sources, destinations) of the data edges of one micro-batch, as template indices;
    reads of the program's `inputs` (value names) make none."""
    offsets: dict[int, int] = {}
    offset = 0
    for index, step in enumerate(steps):
        offsets[index] = offset
        offset += step.width
    src: list[int] = []
    dst: list[int] = []
    for source, target in _value_dependencies(steps, inputs):
        for a, b in _joins(steps[source], steps[target]):
            src.append(offsets[source] + a)
            dst.append(offsets[target] + b)
    return src, dst


def _value_dependencies(steps: tuple[Step, ...], inputs: frozenset[str]) -> list[tuple[int, int]]:
    """(writer, reader) step pairs: one for each step and each distinct step that wrote a
    value it reads (the verifier checks that every value read was written before, or is
    one of the program's `inputs`, which no step writes)."""
    writer: dict[str, int] = {}
    pairs: list[tuple[int, int]] = []
    for index, step in enumerate(steps):
        reads = [value.name for value in step.reads if value.name not in inputs]
        unwritten = [name for name in reads if name not in writer]
        if unwritten:  # a pass's bug: an edge dropped silently would shorten the path
            raise ValueError(f"step {step.base}{step.part} reads {unwritten[0]}, never written")
        sources = dict.fromkeys(writer[name] for name in reads)
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
