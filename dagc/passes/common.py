"""Helpers shared by the expansion passes."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

from dagc.ir.logical import Program
from dagc.ir.steps import BlockSteps, StepProgram
from dagc.ir.terms import CostTerm, TermKind


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


def communication(program: Program, kind: TermKind, *args: int, gpus: tuple[int, ...]) -> CostTerm:
    """A communication term, marked inter-node when `gpus` span more than one node."""
    return CostTerm(kind, tuple(args), nodes_spanned(program, gpus))


def map_blocks(steps: StepProgram, kind: str, rewrite: object) -> StepProgram:
    """Apply `rewrite(program, block) -> BlockSteps` to every block of `kind`."""
    assert callable(rewrite)
    blocks = tuple(
        rewrite(steps.program, block) if block.kind == kind else block for block in steps.blocks
    )
    return replace(steps, blocks=blocks)


def with_steps(block: BlockSteps, steps: tuple[object, ...]) -> BlockSteps:
    """`block` with other steps."""
    return replace(block, steps=steps)  # type: ignore[arg-type]
