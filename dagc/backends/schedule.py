"""The timed device DAG that pictures draw: costs, critical path, blocks and filters.

`dagc render` and `dagc timeline` both need, besides the device DAG, when each operation
runs (its critical-path start time), which block it belongs to, and which operations the
user's filters (`--layers 0..1 --gpus 0..3 --microbatch 0`) keep. A Schedule holds all of
that; `make_schedule` builds it from an expanded graph and a cost model alone (the graph
keeps its blocks), once per file. Compiling and expanding is the library's job:
dagc.api.build_schedule does all of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from dagc.analysis.costs import CostModel
from dagc.analysis.critical_path import CriticalPath, critical_path, op_costs
from dagc.backends.style import KINDS
from dagc.diagnostics import DiagnosticError
from dagc.diagnostics import option_error as input_error
from dagc.ir.device import DeviceGraph
from dagc.ir.steps import BlockSteps
from dagc.ir.terms import OpKind
from dagc.outputs import check_output, write_error

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Span = tuple[int, int]


def parse_span(text: str | None, option: str) -> Span | None:
    """`3` or `0..3` as an inclusive (first, last) pair; None when the option is absent."""
    if text is None:
        return None
    found = re.fullmatch(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?", text)
    if found is None or (found[2] is not None and int(found[2]) < int(found[1])):
        raise input_error(
            f"{option} expects N or FIRST..LAST (non-negative, FIRST <= LAST), got `{text}`",
            f"e.g. {option} 0..1",
        )
    first = int(found[1])
    return first, int(found[2]) if found[2] is not None else first


def format_span(span: Span) -> str:
    return str(span[0]) if span[0] == span[1] else f"{span[0]}..{span[1]}"


def format_set(values: tuple[int, ...]) -> str:
    """`0, 19..20, 39`: sorted values with consecutive runs as ranges."""
    runs: list[list[int]] = []
    for value in sorted(set(values)):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(format_span((a, b)) for a, b in runs)


@dataclass(frozen=True)
class Filters:
    """Which layers, GPUs and micro-batches to keep (inclusive ranges; None keeps all).

    `layer_set` and `gpu_set` narrow further to single layers and GPUs: the automatic
    slice of a large picture (the ends of every stage, the GPUs of the critical path)."""

    layers: Span | None = None
    gpus: Span | None = None
    microbatches: Span | None = None
    layer_set: tuple[int, ...] | None = None
    gpu_set: tuple[int, ...] | None = None

    def describe(self) -> str:
        """`layers 0..1, gpu 3`, `layers {0, 23..24, 47}, micro-batch 0`, or "" when
        nothing is filtered."""
        parts = [
            _describe(one, many, span, chosen)
            for one, many, span, chosen in (
                ("layer", "layers", self.layers, self.layer_set),
                ("gpu", "gpus", self.gpus, self.gpu_set),
                ("micro-batch", "micro-batches", self.microbatches, None),
            )
            if span is not None or chosen is not None
        ]
        return ", ".join(parts)


def _describe(one: str, many: str, span: Span | None, chosen: tuple[int, ...] | None) -> str:
    if chosen is not None:
        return f"{one} {chosen[0]}" if len(chosen) == 1 else f"{many} {{{format_set(chosen)}}}"
    assert span is not None
    return f"{one if span[0] == span[1] else many} {format_span(span)}"


@dataclass(frozen=True)
class Schedule:
    """A device DAG with its per-operation costs and critical path.

    An operation runs [path.start[op], path.start[op] + costs[op]]: the earliest start the
    critical-path computation found. Blocks, layers and kinds come from the graph.
    """

    graph: DeviceGraph
    costs: FloatArray
    path: CriticalPath
    cost_model: str
    gpu_preset: str
    # Values the picture back ends derive once per schedule (their groupings).
    memo: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def total_s(self) -> float:
        return self.path.time

    @property
    def blocks(self) -> tuple[BlockSteps, ...]:
        """The step IR's blocks, in execution order."""
        return self.graph.blocks

    @property
    def step_block(self) -> npt.NDArray[np.int32]:
        """`step_block[s]`: the index in `blocks` of the block that step s belongs to."""
        return self.graph.step_block

    @cached_property
    def critical(self) -> BoolArray:
        """True for every operation on the critical path."""
        mask = np.zeros(self.graph.num_ops, dtype=np.bool_)
        mask[list(self.path.ops)] = True
        return mask

    @property
    def template_kind(self) -> tuple[OpKind, ...]:
        """The kind (matmul, elementwise, collective, transfer) of every template operation."""
        return self.graph.template_kind

    @property
    def template_layer(self) -> IntArray:
        """The layer of every template operation."""
        return self.graph.template_layer

    @cached_property
    def group_of_gpu(self) -> dict[int, str]:
        """Each GPU's home group: the first group (in file order) whose blocks run on it."""
        used = {block.group for block in self.blocks}
        home: dict[int, str] = {}
        for group in self.graph.program.groups:
            if group.name in used:
                for gpu in group.gpus:
                    home.setdefault(gpu, group.name)
        return home

    def block_of(self, op: int) -> int:
        """The index in `blocks` of the block operation `op` belongs to."""
        return self.graph.block_index(op)

    def select(self, filters: Filters) -> IntArray:
        """The ids of the operations the filters keep, ascending; an error if none.

        The once-per-iteration tail belongs to no micro-batch: a micro-batch filter drops it.
        """
        graph = self.graph
        keep = np.ones(len(graph.template_step), dtype=np.bool_)
        if filters.layers is not None:
            first, last = filters.layers
            keep &= (self.template_layer >= first) & (self.template_layer <= last)
        if filters.layer_set is not None:
            keep &= np.isin(self.template_layer, filters.layer_set)
        if filters.gpus is not None or filters.gpu_set is not None:
            keep &= self._on_gpus(filters)
        mbs = np.arange(graph.microbatches)
        if filters.microbatches is not None:
            mbs = mbs[(mbs >= filters.microbatches[0]) & (mbs <= filters.microbatches[1])]
        width = graph.template_size
        ops = (mbs[:, None] * width + np.flatnonzero(keep[:width])[None, :]).ravel()
        if filters.microbatches is None:
            ops = np.concatenate([ops, graph.tail_start + np.flatnonzero(keep[width:])])
        if ops.size == 0:
            raise self._empty_selection(filters)
        return np.sort(ops.astype(np.int64))

    def _on_gpus(self, filters: Filters) -> BoolArray:
        """For every template operation: does it run on a GPU the filters keep? (A
        collective does when any participant is kept.)"""
        graph = self.graph
        wanted = set(filters.gpu_set if filters.gpu_set is not None else graph.gpus())
        if filters.gpus is not None:
            wanted &= set(range(filters.gpus[0], filters.gpus[1] + 1))
        by_step = np.asarray(
            [any(g in wanted for g in step.gpus) for step in graph.steps], dtype=np.bool_
        )
        mask = np.zeros(max(graph.gpus(), default=0) + 1, dtype=np.bool_)
        mask[[g for g in wanted if g < len(mask)]] = True
        per_gpu = mask[self.template_gpu]
        return np.where(self.template_joint, by_step[graph.template_step], per_gpu)

    @cached_property
    def template_gpu(self) -> IntArray:
        """The GPU of every per-GPU template operation (a joint one's first participant)."""
        graph = self.graph
        ranks = graph.template_rank.tolist()
        steps = [graph.steps[int(i)] for i in graph.template_step]
        first = [s.gpus[0 if s.joint else r] for s, r in zip(steps, ranks, strict=True)]
        return np.asarray(first, dtype=np.int64)

    @cached_property
    def template_joint(self) -> BoolArray:
        """True for the collectives and transfers of the template."""
        joint = np.asarray([step.joint for step in self.graph.steps], dtype=np.bool_)
        return joint[self.graph.template_step]

    def _empty_selection(self, filters: Filters) -> DiagnosticError:
        graph = self.graph
        gpus = graph.gpus()
        return input_error(
            f"the filters ({filters.describe()}) select no operations",
            f"this configuration has layers 0..{graph.program.model.layers - 1},"
            f" gpus {gpus[0]}..{gpus[-1]} and micro-batches 0..{graph.microbatches - 1}",
        )


def make_schedule(graph: DeviceGraph, model: CostModel, gpu_preset: str) -> Schedule:
    """The schedule of an expanded graph: every operation priced by `model`, then timed.

    `gpu_preset` names the GPU in titles. Takes the graph as built: pictures want the
    full expansion (every GPU), which is the caller's choice (dagc.api.build_schedule).
    """
    seconds = op_costs(graph, model.term_costs(graph.terms.terms))
    return Schedule(
        graph=graph,
        costs=seconds,
        path=critical_path(graph, seconds),
        cost_model=model.name,
        gpu_preset=gpu_preset,
    )


__all__ = [
    "KINDS",
    "Filters",
    "Schedule",
    "check_output",
    "format_span",
    "input_error",
    "make_schedule",
    "parse_span",
    "write_error",
]
