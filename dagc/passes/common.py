"""Helpers shared by the expansion passes."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from dagc.ir.logical import BlockKind, Program
from dagc.ir.steps import BlockSteps, StepProgram
from dagc.ir.terms import CostTerm, Label, TermKind


def tokens(program: Program) -> int:
    """T = Bm·S, tokens per micro-batch."""
    return program.workload.tokens_per_microbatch


def element_bytes(program: Program) -> int:
    """w, bytes per element."""
    return program.workload.dtype.bytes


def expert_tokens(program: Program) -> int:
    """T_e = ceil(T·k/E · capacity_factor): tokens each expert receives (balanced routing)."""
    model = program.model
    assert model.experts is not None and model.top_k is not None
    factor = Fraction(repr(model.capacity_factor))  # the decimal the user wrote, exactly
    return math.ceil(Fraction(tokens(program) * model.top_k, model.experts) * factor)


def tokens_held_by_expert_gpu(program: Program, ep: int) -> int:
    """Distinct tokens one MoE GPU works on: min(T, T_e·E/e)."""
    assert program.model.experts is not None
    return min(tokens(program), expert_tokens(program) * program.model.experts // ep)


def nodes_spanned(program: Program, gpus: tuple[int, ...]) -> int:
    """How many nodes (of node_size consecutive GPU ids) these GPUs live on."""
    size = program.hardware.node_size
    return len({gpu // size for gpu in gpus})


def communication(
    program: Program, kind: TermKind, *args: Label, gpus: tuple[int, ...]
) -> CostTerm:
    """A communication term, marked inter-node when `gpus` span more than one node."""
    values = tuple(math.prod(v for _, v in label) for label in args)
    return CostTerm(kind, values, nodes_spanned(program, gpus), labels=tuple(args))


def times(*labels: Label) -> Label:
    """The product of labelled dimensions."""
    return tuple(factor for label in labels for factor in label)


def count(value: int, symbol: str = "") -> Label:
    """A labelled number: a model symbol (`H`) or a plain count (a rank's 3 heads)."""
    return ((symbol, value),)


@dataclass(frozen=True)
class Dims:
    """The program's dimensions as labels: T (tokens), Bm, S, H, d, w."""

    tokens: Label
    batch: Label
    seq: Label
    hidden: Label
    head_dim: Label
    width: Label


def dims(program: Program) -> Dims:
    """Labelled dimensions of `program` (Bm is `B` with one micro-batch, else `B/m`)."""
    workload, model = program.workload, program.model
    batch = count(workload.microbatch_size, "B" if workload.microbatches == 1 else "B/m")
    seq = count(workload.seq, "S")
    return Dims(
        tokens=times(batch, seq),
        batch=batch,
        seq=seq,
        hidden=count(model.hidden, "H"),
        head_dim=count(model.head_dim or 1, "d"),
        width=count(element_bytes(program), "w"),
    )


def activation_bytes(program: Program) -> Label:
    """T·H·w: one micro-batch's activations."""
    d = dims(program)
    return times(d.tokens, d.hidden, d.width)


def held_tokens(program: Program, ep: int) -> Label:
    """min(T, T_e·E/e) as a label: T when every token reaches the GPU."""
    held = tokens_held_by_expert_gpu(program, ep)
    return dims(program).tokens if held == tokens(program) else count(held)


def map_blocks(steps: StepProgram, kind: BlockKind, rewrite: object) -> StepProgram:
    """Apply `rewrite(program, block) -> BlockSteps` to every block of `kind`."""
    assert callable(rewrite)
    blocks = tuple(
        rewrite(steps.program, block) if block.kind == kind else block for block in steps.blocks
    )
    return replace(steps, blocks=blocks)


def with_steps(block: BlockSteps, steps: tuple[object, ...]) -> BlockSteps:
    """`block` with other steps."""
    return replace(block, steps=steps)  # type: ignore[arg-type]
