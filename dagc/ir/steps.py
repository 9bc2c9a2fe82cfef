"""The step IR: a program's blocks as SPMD steps, between the logical IR and the device DAG.

A Step is one operation on each GPU of a set (a per-GPU step, e.g. `qkv` on every rank) or
one operation joining a set of GPUs (a joint step: a collective or a transfer). A block is a
sequence of steps; the whole program, for one micro-batch, is the sequence of its blocks.
Each step names the values (dagc/ir/values.py) it reads and writes: data flows from the
step that writes a value to every step that reads it, on every GPU the two share, or from
every operation of the writer to every operation of the reader when they share none (a
transfer's two sides). Program order on each GPU is a separate relation (passes/order.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from dagc.ir.logical import (
    AttentionKernel,
    AttentionMask,
    BlockKind,
    MoeDispatch,
    Program,
    format_gpus,
)
from dagc.ir.terms import CostTerm
from dagc.ir.values import Value
from dagc.source import Span

# The base name of a disaggregated serve's per-layer KV handoff (`kv_send_l{l}`, added by
# insert-transfers to each attention block of the prefill phase).
KV_SEND = "kv_send"


class Stream(enum.Enum):
    """Which of a GPU's two streams an operation runs on; each runs one op at a time."""

    COMPUTE = "compute"
    COMM = "comm"


class Phase(enum.Enum):
    """Which part of a training step an operation belongs to (prefill: all FORWARD).

    The schedules order micro-batches' phases on each stage (1F1B runs a forward, then a
    backward); zero-bubble schedules defer WEIGHT_GRAD; ITERATION steps run once per
    iteration, after every micro-batch (gradient reduction across replicas, the optimizer).
    """

    FORWARD = "forward"
    RECOMPUTE = "recompute"  # a forward rerun before the backward (activation recomputation)
    BACKWARD = "backward"  # input gradients and the backward's communication
    WEIGHT_GRAD = "weight_grad"  # weight gradients (deferrable)
    ITERATION = "iteration"  # once per iteration: gradient reduction, optimizer step


@dataclass(frozen=True, slots=True)
class Step:
    """One SPMD step; see the module docstring.

    `terms` holds one cost term per GPU of a per-GPU step (ranks may differ in shape) or
    exactly one for a joint step. `part` (e.g. `.q`) names one product of a node that groups
    several (`qkv`); `experts` gives each GPU's global expert index for expert steps.
    `reads` and `writes` name the values the step reads and writes (each value has exactly
    one writer in a program); data edges come from them alone. `stream` is the stream the
    step runs on, on each of its GPUs: compute unless assign-streams moved it (an `overlap`
    block's communication). `phase` says which part of a training step it is.
    """

    base: str
    layer: int
    gpus: tuple[int, ...]
    terms: tuple[CostTerm, ...]
    joint: bool = False
    part: str = ""
    experts: tuple[int, ...] = ()
    layer_in_name: bool = True
    reads: tuple[Value, ...] = ()
    writes: tuple[Value, ...] = ()
    stream: Stream = Stream.COMPUTE
    phase: Phase = Phase.FORWARD
    span: Span | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.gpus:
            raise ValueError(f"step {self.base} has no GPUs")
        expected = 1 if self.joint else len(self.gpus)
        if len(self.terms) != expected:
            raise ValueError(f"step {self.base} needs {expected} terms, has {len(self.terms)}")
        if self.experts and len(self.experts) != len(self.gpus):
            raise ValueError(f"step {self.base} needs one expert per GPU")

    @property
    def width(self) -> int:
        """Device operations this step makes per micro-batch."""
        return 1 if self.joint else len(self.gpus)

    def node_name(self, rank: int, microbatch: int | None) -> str:
        """The grouping node name of rank `rank` (without the product suffix)."""
        name = self.base
        if self.layer_in_name:
            name += f"_l{self.layer}"
        if self.experts:
            name += f"_{self.experts[rank]}"
        if not self.joint:
            name += f"_gpu{self.gpus[rank]}"
        if microbatch is not None:
            name += f"_mb{microbatch}"
        return name

    def op_name(self, rank: int, microbatch: int | None) -> str:
        """The whole operation name: node name plus product suffix."""
        return self.node_name(rank, microbatch) + self.part

    def term(self, rank: int) -> CostTerm:
        return self.terms[0 if self.joint else rank]

    def with_gpus(self, gpus: tuple[int, ...]) -> Step:
        """The same step on other GPUs (same term on each)."""
        terms = self.terms if self.joint else tuple(self.terms[0] for _ in gpus)
        return replace(self, gpus=gpus, terms=terms)


class TransferKind(enum.StrEnum):
    """The kind of the blocks insert-transfers adds between pipeline stages.

    Not a BlockKind: no .dag file places one, and the front end accepts exactly BlockKind's
    names. A StrEnum, like BlockKind, so that the step IR prints as before.
    """

    TRANSFER = "transfer"


class IterationKind(enum.StrEnum):
    """The kind of the blocks the data-parallel pass adds (dagc/passes/data_parallel.py).

    `iteration`: once-per-iteration work (a layer's gradient reduction over the replicas,
    the optimizer, zero=1's parameter all-gather), phase ITERATION, after every other block.
    `param_gather`: zero=3's all-gather of one layer's parameters, per micro-batch, before
    the layer's forward and before its backward.
    """

    ITERATION = "iteration"
    PARAM_GATHER = "param_gather"


# The kind of a block of the step IR: one the file placed, a transfer, or data parallelism's.
StepBlockKind = BlockKind | TransferKind | IterationKind


@dataclass(frozen=True, slots=True)
class BlockSteps:
    """One block of one layer (or a transfer between blocks) and its steps.

    `input_gpus` hold the block's input activations; a block whose input lives elsewhere
    needs a transfer (inserted by insert-transfers). `excursion` marks a moe block that
    another group's block hands tokens to inside one layer: its result returns to
    `input_gpus`, which are then its `output_gpus`. Any other move starts a pipeline stage.
    `overlap` puts the block's communication on the communication stream (assign-streams);
    a transfer block carries the flag of the block it reaches. `input_value` names the
    residual-stream value the block reads (the one the block before wrote, living on
    `input_gpus`); empty for the program's first block, whose input no step writes.

    `backward` marks a block of the backward (the `backward` pass, training programs): the
    backward of the forward block of the same kind, layer and group. Its `input_gpus` hold
    the gradient of the forward block's output when it starts, its `output_gpus` the
    gradient of the forward block's input when it ends (a backward transfer's `gpus` are its
    receiving side).
    """

    kind: StepBlockKind
    layer: int
    group: str
    gpus: tuple[int, ...]
    degree: int = 1
    fused_qkv: bool = False
    overlap: bool = False
    input_gpus: tuple[int, ...] = ()
    output_gpus: tuple[int, ...] = ()
    excursion: bool = False
    # an attention block's kernel and mask, a moe block's dispatch and an embed block's
    # vocab_parallel (as the logical IR's Block has them)
    kernel: AttentionKernel = AttentionKernel.EXPLICIT
    mask: AttentionMask = AttentionMask.FULL
    dispatch: MoeDispatch = MoeDispatch.BROADCAST
    vocab_parallel: bool = False
    input_value: str = ""
    steps: tuple[Step, ...] = ()
    backward: bool = False
    # sequence parallelism (training): the residual the block reads / writes is split by
    # tokens over its GPUs (between two sequence-parallel blocks on the same GPUs)
    split_input: bool = False
    split_output: bool = False
    # attention data parallelism: the block runs as `dp` replicas (rank r in replica
    # r // degree, on split(Bm, dp)[j] sequences); `input_dp` is how the block's input is
    # spread over `input_gpus` (the dp of the last non-moe block before it: a moe block
    # leaves tokens where it found them), 1 when every input GPU holds every token
    dp: int = 1
    input_dp: int = 1
    span: Span | None = field(default=None, compare=False)

    @property
    def block_kind(self) -> BlockKind | None:
        """The kind of block the file placed; None for a transfer."""
        return self.kind if isinstance(self.kind, BlockKind) else None


@dataclass(frozen=True, slots=True)
class Symmetry:
    """How a collapsed program stands for the full one (see passes/symmetry.py).

    `full_steps` are the steps before collapsing; `class_size[g]` is how many GPUs the kept
    representative GPU g stands for (itself included); `representative[g]` is the kept GPU
    that stands for GPU g (g itself when kept).
    """

    full_steps: tuple[Step, ...]
    class_size: dict[int, int]
    representative: dict[int, int]


@dataclass(frozen=True, slots=True)
class StepProgram:
    """All blocks of one micro-batch in execution order, and the program they came from."""

    program: Program
    blocks: tuple[BlockSteps, ...]
    symmetry: Symmetry | None = None
    # values no step writes: the program's inputs from outside the step (a decode step's
    # KV cache, `kv_cache_l{l}`, written by the prefill and earlier decode steps)
    inputs: tuple[Value, ...] = ()

    def steps(self) -> list[Step]:
        """Every step in execution order."""
        return [step for block in self.blocks for step in block.steps]

    def __str__(self) -> str:
        return print_steps(self)


def print_steps(steps: StepProgram) -> str:
    """The step IR as text (for `--print-after` and golden tests)."""
    lines = [f"steps @{steps.program.model.name} {{"]
    # the program's inputs (a decode step's KV cache), only when it has some: a prefill
    # program prints as before
    for value in steps.inputs:
        shape = ", ".join(str(dim) for dim in value.dims)
        where = f"{value.placement} on {format_gpus(value.gpus)}"
        lines.append(f"  input {value.name}[{shape}] {value.dtype} {where}")
    for block in steps.blocks:
        head = f"  {block.kind} l{block.layer} on @{block.group} {format_gpus(block.gpus)}"
        if block.input_gpus and block.input_gpus != block.gpus:
            head += f" from {format_gpus(block.input_gpus)}"
        if block.excursion:
            head += " and back"
        if block.backward:
            head += " backward"
        lines.append(head + " {")
        for step in block.steps:
            lines.append(f"    {_format_step(step)}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines)


def _format_step(step: Step) -> str:
    name = step.op_name(0, None) if step.joint else step.base + step.part
    if step.joint:
        joined = f"{step.terms[0]} joining {format_gpus(step.gpus)}"
        return f"{name} = {joined}{_stream_suffix(step)}{_dataflow(step)}"
    by_term: dict[CostTerm, list[int]] = {}
    for gpu, term in zip(step.gpus, step.terms, strict=True):
        by_term.setdefault(term, []).append(gpu)
    shards = " | ".join(f"{term} on {format_gpus(tuple(gpus))}" for term, gpus in by_term.items())
    experts = f" experts={list(step.experts)}" if step.experts else ""
    return f"{name} = {shards}{experts}{_stream_suffix(step)}{_dataflow(step)}"


def _dataflow(step: Step) -> str:
    """` reads a, b writes c`: the values the step reads and writes, by name."""
    text = ""
    if step.reads:
        text += " reads " + ", ".join(value.name for value in step.reads)
    if step.writes:
        text += " writes " + ", ".join(value.name for value in step.writes)
    return text


def _stream_suffix(step: Step) -> str:
    # only the communication stream and phases other than forward are printed, so prefill
    # programs without `overlap` print as before
    text = " on comm" if step.stream is Stream.COMM else ""
    return text + (f" [{step.phase.value}]" if step.phase is not Phase.FORWARD else "")
