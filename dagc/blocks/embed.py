"""embed: the embedding lookup, T·H elements written on every rank, before layer 0.

Each rank holds the whole V x H table (charged to its weights). It writes x of layer 0,
replicated on its GPUs.
"""

from __future__ import annotations

from dagc.blocks.base import BlockModule, same
from dagc.blocks.shapes import dims, residual_out, times
from dagc.ir.logical import BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import elementwise


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    D = dims(program)
    # the token ids it looks up are the program's input, which no step writes
    x = residual_out(program, block, block.gpus)
    return (same("embed", block, elementwise(times(D.tokens, D.hidden)), writes=(x,)),)


def _held_weights(model: Model, step_base: str) -> int:
    if step_base == "embed" and model.vocab is not None:
        return model.vocab * model.hidden
    return 0


MODULE = BlockModule(
    kind=BlockKind.EMBED,
    summary="the embedding lookup on every rank",
    compute=_compute,
    options={"vocab_parallel": "bool"},
    held_weights=_held_weights,
)
