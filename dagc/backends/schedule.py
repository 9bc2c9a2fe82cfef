"""The timed device DAG that pictures draw: costs, critical path, blocks and filters.

`dagc render` and `dagc timeline` both need, besides the device DAG, when each operation
runs (its critical-path start time), which block it belongs to, and which operations the
user's filters (`--layers 0..1 --gpus 0..3 --microbatch 0`) keep. A Schedule holds all of
that; it is built once per file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from dagc.analysis.critical_path import CriticalPath, critical_path, op_costs
from dagc.api import CostOptions, cost_model
from dagc.compiler import CompileResult
from dagc.diagnostics import Diagnostic, DiagnosticBag, DiagnosticError
from dagc.expand import DEFAULT_MAX_OPS, expand
from dagc.ir.device import DeviceGraph
from dagc.ir.steps import BlockSteps, op_kind
from dagc.passes.manager import lower_to_steps

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Span = tuple[int, int]
KINDS = ("matmul", "elementwise", "collective", "transfer")


def input_error(message: str, help: str | None = None) -> DiagnosticError:
    """A file-free diagnostic (`dagc: error: ...`) about options or output paths."""
    bag = DiagnosticBag(None)
    bag.error(None, message, help=help)
    return DiagnosticError(bag.diagnostics)


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
    """A device DAG with its per-operation costs, critical path and blocks.

    An operation runs [path.start[op], path.start[op] + costs[op]]: the earliest start the
    critical-path computation found. `step_block[s]` is the index in `blocks` of the block
    that step s belongs to.
    """

    graph: DeviceGraph
    blocks: tuple[BlockSteps, ...]
    step_block: IntArray
    costs: FloatArray
    path: CriticalPath
    cost_model: str
    gpu_preset: str

    @property
    def total_s(self) -> float:
        return self.path.time

    @cached_property
    def critical(self) -> BoolArray:
        """True for every operation on the critical path."""
        mask = np.zeros(self.graph.num_ops, dtype=np.bool_)
        mask[list(self.path.ops)] = True
        return mask

    @cached_property
    def template_kind(self) -> tuple[str, ...]:
        """The kind (matmul, elementwise, collective, transfer) of every template operation."""
        graph = self.graph
        return tuple(op_kind(graph.term_of(t)) for t in range(graph.template_size))

    @cached_property
    def template_layer(self) -> IntArray:
        steps = self.graph.steps
        return np.asarray([steps[int(s)].layer for s in self.graph.template_step], np.int64)

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
        graph = self.graph
        return int(self.step_block[int(graph.template_step[op % graph.template_size])])

    def select(self, filters: Filters) -> IntArray:
        """The ids of the operations the filters keep, ascending; an error if none."""
        graph = self.graph
        keep = np.ones(graph.template_size, dtype=np.bool_)
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
        ops = (mbs[:, None] * graph.template_size + np.flatnonzero(keep)[None, :]).ravel()
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

    @cached_property
    def memo(self) -> dict[str, object]:
        """Values the picture back ends derive once per schedule (their groupings)."""
        return {}

    def _empty_selection(self, filters: Filters) -> DiagnosticError:
        graph = self.graph
        gpus = graph.gpus()
        return input_error(
            f"the filters ({filters.describe()}) select no operations",
            f"this configuration has layers 0..{graph.program.model.layers - 1},"
            f" gpus {gpus[0]}..{gpus[-1]} and micro-batches 0..{graph.microbatches - 1}",
        )


def build_schedule(
    compiled: CompileResult,
    costs: CostOptions | None = None,
    *,
    max_ops: int = DEFAULT_MAX_OPS,
) -> tuple[Schedule, tuple[Diagnostic, ...]]:
    """Expand, cost and time a compiled program; also returns the expansion's warnings."""
    costs = costs or CostOptions()
    model, _ = cost_model(compiled.program, costs)
    expansion = expand(compiled, max_ops=max_ops, symmetric=False)  # pictures show every GPU
    graph = expansion.graph
    seconds = op_costs(graph, model.term_costs(graph.terms.terms))
    blocks, step_block = _blocks_of_steps(graph)
    schedule = Schedule(
        graph=graph,
        blocks=blocks,
        step_block=step_block,
        costs=seconds,
        path=critical_path(graph, seconds),
        cost_model=model.name,
        gpu_preset=costs.gpu or compiled.program.hardware.gpu,
    )
    return schedule, compiled.warnings + expansion.warnings


def _blocks_of_steps(graph: DeviceGraph) -> tuple[tuple[BlockSteps, ...], IntArray]:
    """The step program's blocks and, for every step of `graph`, its block's index."""
    steps = lower_to_steps(graph.program)
    owner = [index for index, block in enumerate(steps.blocks) for _ in block.steps]
    if tuple(steps.steps()) != graph.steps:
        raise RuntimeError("the step program does not match the device DAG's steps")
    return steps.blocks, np.asarray(owner, dtype=np.int64)


def check_output(path: str | os.PathLike[str], formats: tuple[str, ...]) -> str:
    """The output format named by `path`'s extension, after checking its folder is writable."""
    name = os.fspath(path)
    extension = os.path.splitext(name)[1].lower().lstrip(".")
    if extension not in formats:
        shown = ", ".join(f".{f}" for f in formats)
        raise input_error(
            f"cannot tell the output format of `{name}`"
            + (f": unknown extension `.{extension}`" if extension else ": it has no extension"),
            f"name the output with one of {shown}",
        )
    folder = os.path.dirname(name) or "."
    if os.path.isdir(name):
        raise input_error(f"cannot write {name}: it is a folder", "name a file")
    if not os.path.isdir(folder):
        raise input_error(
            f"cannot write {name}: the folder {folder} does not exist", "create it first"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise input_error(
            f"cannot write {name}: the folder {folder} is not writable", "check its permissions"
        )
    return extension


def write_error(path: str | os.PathLike[str], error: OSError) -> DiagnosticError:
    """A file-free diagnostic for an output file that could not be written."""
    return input_error(
        f"cannot write {os.fspath(path)}: {error.strerror or error}",
        "check that the folder exists and is writable",
    )


__all__ = [
    "KINDS",
    "Filters",
    "Schedule",
    "build_schedule",
    "check_output",
    "format_span",
    "input_error",
    "parse_span",
    "write_error",
]
