"""The device DAG: every operation of every GPU and micro-batch, with its edges.

Stored as a struct of arrays so that millions of operations fit in memory. The operations
of one micro-batch form a *template* of W operations (one per GPU of each per-GPU step, one
per joint step); micro-batch j's copy of template operation t has id j·W + t. A training
program's ITERATION steps (gradient reduction across replicas, the optimizer) run once per
iteration, not per micro-batch: they come last in the step program and make the *tail*,
operations m·W … m·W + W_t − 1, the tail's operation i at template position W + i. The
template arrays cover both parts (W + W_t entries); `template_of(op)` and
`microbatch_of(op)` (None for a tail operation) say where an operation comes from, and
nothing else computes `op % W` or `op // W`. A prefill program has no tail. Per-operation
facts (GPU, layer, cost term, name, step, block) come from the template, its step and the
step's block, so they cost no memory per micro-batch. Only the edges are stored per
operation: two int64 arrays, plus one byte saying whether an edge carries data or program
order.

The graph keeps the step IR's blocks (kind, layer, group, GPUs, steps), so that analyses
and back ends learn which block and layer an operation belongs to from the graph alone,
without running a pass again.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TextIO

import numpy as np
import numpy.typing as npt

from dagc.ir.logical import Program, format_gpus
from dagc.ir.steps import BlockSteps, Phase, Step, StepBlockKind, Symmetry
from dagc.ir.terms import CostTerm, OpKind, TermTable, op_kind
from dagc.ir.toposort import topological_levels

IntArray = npt.NDArray[np.int64]

DATA_EDGE = 0
ORDER_EDGE = 1


@dataclass(frozen=True, slots=True)
class Operation:
    """A readable view of one device operation."""

    id: int
    name: str
    node: str
    kind: OpKind
    gpus: tuple[int, ...]
    layer: int
    microbatch: int | None  # None: once per iteration (the tail)
    term: CostTerm
    flops: int
    bytes: int


class DeviceGraph:
    """The per-GPU operations of a program and their data and program-order edges."""

    def __init__(
        self,
        program: Program,
        blocks: tuple[BlockSteps, ...],
        microbatches: int,
        src: IntArray,
        dst: IntArray,
        edge_kind: npt.NDArray[np.uint8],
        symmetry: Symmetry | None = None,
    ) -> None:
        self.program = program
        # The blocks each step came from: step names alone cannot tell (`ln2` and `res2`
        # belong to mlp and moe blocks alike), and back ends draw and filter by block.
        self.blocks = blocks
        self.steps = tuple(step for block in blocks for step in block.steps)
        self.step_block = np.asarray(
            [index for index, block in enumerate(blocks) for _ in block.steps], dtype=np.int32
        )
        self.symmetry = symmetry
        self.microbatches = microbatches
        self.src = src
        self.dst = dst
        self.edge_kind = edge_kind
        self.terms = TermTable()
        step_of: list[int] = []
        rank_of: list[int] = []
        term_of: list[int] = []
        by_object: dict[int, int] = {}  # ranks share term objects: hash each object once
        for index, step in enumerate(self.steps):
            for rank in range(step.width):
                step_of.append(index)
                rank_of.append(rank)
                term = step.term(rank)
                term_id = by_object.get(id(term))
                if term_id is None:
                    term_id = by_object[id(term)] = self.terms.intern(term)
                term_of.append(term_id)
        self.template_step = np.asarray(step_of, dtype=np.int32)
        self.template_rank = np.asarray(rank_of, dtype=np.int32)
        self.template_term = np.asarray(term_of, dtype=np.int32)
        once = [step.width for step in self.steps if step.phase is Phase.ITERATION]
        self.tail_size = sum(once)
        """W_t: operations of the once-per-iteration tail (0 for prefill)."""

    # -- sizes --------------------------------------------------------------------------

    @property
    def template_size(self) -> int:
        """W: operations per micro-batch (the template's per-micro-batch part)."""
        return len(self.template_step) - self.tail_size

    @property
    def tail_start(self) -> int:
        """m·W: the id of the tail's first operation (== num_ops without a tail)."""
        return self.template_size * self.microbatches

    @property
    def num_ops(self) -> int:
        return self.template_size * self.microbatches + self.tail_size

    @property
    def num_edges(self) -> int:
        return len(self.src)

    def with_edges(
        self, src: IntArray, dst: IntArray, edge_kind: npt.NDArray[np.uint8]
    ) -> DeviceGraph:
        """A copy with other edges (the operations are shared)."""
        graph = DeviceGraph.__new__(DeviceGraph)
        graph.__dict__.update(self.__dict__)
        graph.__dict__.pop("levels", None)
        graph.src, graph.dst, graph.edge_kind = src, dst, edge_kind
        return graph

    # -- per-operation facts ------------------------------------------------------------

    def split_id(self, op: int) -> tuple[int | None, int]:
        """(micro-batch, template position) of operation `op`; micro-batch None in the tail."""
        start = self.tail_start
        if op >= start:
            return None, op - start + self.template_size
        return divmod(op, self.template_size)

    def template_of(self, op: int) -> int:
        """The template position of operation `op` (index into the template arrays)."""
        return self.split_id(op)[1]

    def microbatch_of(self, op: int) -> int | None:
        """The micro-batch of operation `op`, or None for a once-per-iteration (tail) one."""
        return self.split_id(op)[0]

    def templates_of(self, ops: IntArray) -> IntArray:
        """template_of for an array of operations."""
        ops = np.asarray(ops, dtype=np.int64)
        width, start = self.template_size, self.tail_start
        if not self.tail_size:
            return ops % width if width else ops
        return np.where(ops >= start, ops - start + width, ops % max(width, 1))

    def microbatches_of(self, ops: IntArray) -> IntArray:
        """microbatch_of for an array of operations, −1 for tail operations."""
        ops = np.asarray(ops, dtype=np.int64)
        return np.where(ops >= self.tail_start, -1, ops // max(self.template_size, 1))

    def template_ops(self, position: int) -> IntArray:
        """Every operation made from template position `position` (m of them, or the one
        tail operation)."""
        width = self.template_size
        if position >= width:
            return np.asarray([self.tail_start + position - width], dtype=np.int64)
        return position + width * np.arange(self.microbatches, dtype=np.int64)

    def step_of(self, op: int) -> Step:
        return self.steps[int(self.template_step[self.template_of(op)])]

    def name(self, op: int) -> str:
        """The whole name of operation `op`, e.g. `qkv_l0_gpu3_mb1.q`."""
        microbatch, t = self.split_id(op)
        step = self.steps[int(self.template_step[t])]
        return step.op_name(int(self.template_rank[t]), self._mb_suffix(microbatch))

    def node_name(self, op: int) -> str:
        """The grouping node name (`qkv_l0_gpu3` for each of its three products)."""
        microbatch, t = self.split_id(op)
        step = self.steps[int(self.template_step[t])]
        return step.node_name(int(self.template_rank[t]), self._mb_suffix(microbatch))

    def block_index(self, op: int) -> int:
        """The index in `blocks` of the block operation `op` belongs to."""
        return int(self.step_block[int(self.template_step[self.template_of(op)])])

    def block_of(self, op: int) -> StepBlockKind:
        """The kind of block operation `op` belongs to (`attention`, `transfer`, ...)."""
        return self.blocks[self.block_index(op)].kind

    @cached_property
    def template_layer(self) -> IntArray:
        """The layer of every template operation (its step's layer)."""
        layers = np.asarray([step.layer for step in self.steps], dtype=np.int64)
        return layers[self.template_step]

    @cached_property
    def template_kind(self) -> tuple[OpKind, ...]:
        """The kind (matmul, elementwise, collective, transfer) of every template operation."""
        kinds = [op_kind(term) for term in self.terms.terms]
        return tuple(kinds[t] for t in self.template_term.tolist())

    def gpus_of(self, op: int) -> tuple[int, ...]:
        """The GPU of a per-GPU operation, or every participant of a joint one."""
        t = self.template_of(op)
        step = self.steps[int(self.template_step[t])]
        return step.gpus if step.joint else (step.gpus[int(self.template_rank[t])],)

    def term_of(self, op: int) -> CostTerm:
        return self.terms[int(self.template_term[self.template_of(op)])]

    def operation(self, op: int) -> Operation:
        """Everything about operation `op` as one object."""
        microbatch, t = self.split_id(op)
        step = self.steps[int(self.template_step[t])]
        term = self.term_of(op)
        element_bytes = self.program.workload.dtype.bytes
        return Operation(
            id=op,
            name=self.name(op),
            node=self.node_name(op),
            kind=op_kind(term),
            gpus=self.gpus_of(op),
            layer=step.layer,
            microbatch=microbatch,
            term=term,
            flops=term.flops(),
            bytes=term.bytes_moved(element_bytes),
        )

    def operations(self) -> Iterator[Operation]:
        """Every operation, in id order (micro-batch by micro-batch, steps in order, then
        the tail)."""
        for op in range(self.num_ops):
            yield self.operation(op)

    @cached_property
    def op_term(self) -> npt.NDArray[np.int32]:
        """The term id of every operation (an array of length num_ops)."""
        width = self.template_size
        repeated = np.tile(self.template_term[:width], self.microbatches)
        if not self.tail_size:
            return repeated
        return np.concatenate([repeated, self.template_term[width:]])

    @cached_property
    def levels(self) -> list[IntArray] | None:
        """Operations grouped by topological level, or None if the graph has a cycle."""
        return topological_levels(self.num_ops, self.src, self.dst)

    def _mb_suffix(self, microbatch: int | None) -> int | None:
        return microbatch if self.microbatches > 1 else None

    def full_steps(self) -> tuple[Step, ...]:
        """The steps of the whole program (before any symmetric collapse)."""
        return self.symmetry.full_steps if self.symmetry else self.steps

    def gpus(self) -> list[int]:
        """Every GPU of the program that runs at least one operation, ascending."""
        return sorted({g for step in self.full_steps() for g in step.gpus})

    def total_matmul_flops(self) -> int:
        """Sum of matmul FLOPs over every operation, GPU and micro-batch of the program."""
        total = 0
        for step in self.full_steps():
            flops = sum(step.term(rank).flops() for rank in range(step.width))
            total += flops * (1 if step.phase is Phase.ITERATION else self.microbatches)
        return total

    @property
    def full_num_ops(self) -> int:
        """Operations of the whole program (equals num_ops unless collapsed)."""
        if self.symmetry is None:
            return self.num_ops
        m = self.microbatches
        return sum(
            step.width * (1 if step.phase is Phase.ITERATION else m)
            for step in self.symmetry.full_steps
        )

    @property
    def full_num_edges(self) -> int:
        """Edges of the whole program (equals num_edges unless collapsed).

        An edge with a per-GPU endpoint stands for one edge per GPU of that GPU's class;
        an edge between two joint operations stands for one.
        """
        if self.symmetry is None:
            return self.num_edges
        multiplicity = np.ones(len(self.template_step), dtype=np.int64)
        for t in range(len(self.template_step)):
            step = self.steps[int(self.template_step[t])]
            if not step.joint:
                multiplicity[t] = self.symmetry.class_size[step.gpus[int(self.template_rank[t])]]
        src, dst = self.templates_of(self.src), self.templates_of(self.dst)
        return int(np.maximum(multiplicity[src], multiplicity[dst]).sum())

    def predecessors(self) -> list[list[tuple[int, int]]]:
        """For each operation, its (predecessor, edge kind) pairs sorted by predecessor."""
        preds: list[list[tuple[int, int]]] = [[] for _ in range(self.num_ops)]
        for s, d, k in zip(
            self.src.tolist(), self.dst.tolist(), self.edge_kind.tolist(), strict=True
        ):
            preds[d].append((s, k))
        for entry in preds:
            entry.sort()
        return preds

    def __str__(self) -> str:
        return print_device(self)


def print_device(graph: DeviceGraph) -> str:
    """The device IR as text (see write_device)."""
    out = io.StringIO()
    write_device(graph, out)
    return out.getvalue().removesuffix("\n")


def write_device(graph: DeviceGraph, stream: TextIO) -> None:
    """Write the device IR to `stream`: one line per operation with its predecessors.

    `<-` lists data predecessors; `after` lists program-order predecessors that are not
    also data predecessors. Lines are written as they are made, so memory stays that of the
    graph's arrays whatever the number of operations.
    """
    program = graph.program
    stream.write(
        f"device @{program.model.name} gpus={len(graph.gpus())}"
        f" microbatches={graph.microbatches} ops={graph.num_ops} edges={graph.num_edges} {{\n"
    )
    by_target = np.lexsort((graph.src, graph.dst))  # predecessors of each op, ascending
    offsets = np.zeros(graph.num_ops + 1, dtype=np.int64)
    np.cumsum(np.bincount(graph.dst, minlength=graph.num_ops), out=offsets[1:])
    sources, kinds = graph.src[by_target], graph.edge_kind[by_target]
    for op in range(graph.num_ops):
        operation = graph.operation(op)
        where = (
            format_gpus(operation.gpus) if len(operation.gpus) > 1 else f"gpu{operation.gpus[0]}"
        )
        line = f"  {operation.name} = {operation.kind} {operation.term} on {where}"
        first, last = int(offsets[op]), int(offsets[op + 1])
        preds = sources[first:last].tolist()
        edge_kinds = kinds[first:last].tolist()
        data = [graph.name(p) for p, k in zip(preds, edge_kinds, strict=True) if k == DATA_EDGE]
        order = [graph.name(p) for p, k in zip(preds, edge_kinds, strict=True) if k == ORDER_EDGE]
        if data:
            line += " <- " + ", ".join(data)
        if order:
            line += " after " + ", ".join(order)
        stream.write(line + "\n")
    stream.write("}\n")
