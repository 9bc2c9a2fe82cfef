"""insert-collectives: the communication inside a block.

attention and mlp with tp > 1 end in an all-reduce of the T·H activations; a moe block
whose input already lives on its own GPUs dispatches tokens to their experts with an
all-to-all after the gate and combines them with another after expert_agg.
"""

from __future__ import annotations

from dagc.ir.logical import BlockKind, Program
from dagc.ir.steps import BlockSteps, Step, StepProgram
from dagc.ir.terms import TermKind
from dagc.passes.common import (
    activation_bytes,
    communication,
    count,
    dims,
    held_tokens,
    map_blocks,
    times,
    with_steps,
)


def insert_collectives(steps: StepProgram) -> StepProgram:
    """Add all_reduce_attn, all_reduce_mlp, dispatch and combine where the semantics ask."""
    steps = map_blocks(steps, BlockKind.ATTENTION, _all_reduce_after("o_proj", "all_reduce_attn"))
    steps = map_blocks(steps, BlockKind.MLP, _all_reduce_after("mlp_down", "all_reduce_mlp"))
    return map_blocks(steps, BlockKind.MOE, _dispatch_and_combine)


def _all_reduce_after(anchor: str, base: str) -> object:
    def rewrite(program: Program, block: BlockSteps) -> BlockSteps:
        if block.degree == 1:
            return block
        payload, ranks = activation_bytes(program), count(block.degree)
        term = communication(program, TermKind.ALL_REDUCE, payload, ranks, gpus=block.gpus)
        collective = Step(base, block.layer, block.gpus, (term,), joint=True, span=block.span)
        return with_steps(block, _insert_after(block.steps, anchor, collective))

    return rewrite


def _dispatch_and_combine(program: Program, block: BlockSteps) -> BlockSteps:
    if block.degree == 1 or block.excursion:
        return block  # one GPU needs no all-to-all; an excursion's tokens come by broadcast
    d = dims(program)
    payload = times(held_tokens(program, block.degree), d.hidden, d.width)
    term = communication(
        program, TermKind.ALL_TO_ALL, payload, count(block.degree), gpus=block.gpus
    )
    dispatch = Step("dispatch", block.layer, block.gpus, (term,), joint=True, span=block.span)
    combine = Step("combine", block.layer, block.gpus, (term,), joint=True, span=block.span)
    with_dispatch = _insert_after(block.steps, "gate", dispatch)
    return with_steps(block, _insert_after(with_dispatch, "expert_agg", combine))


def _insert_after(steps: tuple[Step, ...], anchor: str, new: Step) -> tuple[Step, ...]:
    index = max(i for i, step in enumerate(steps) if step.base == anchor)
    return (*steps[: index + 1], new, *steps[index + 1 :])
