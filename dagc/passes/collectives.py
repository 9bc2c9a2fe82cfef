"""insert-collectives: the communication inside a block.

Each block kind's module (dagc/blocks/) says what its collectives are: attention and mlp
with tp > 1 end in an all-reduce of the T·H activations; a moe block whose input already
lives on its own GPUs dispatches tokens to their experts with an all-to-all after the gate
and combines them with another after expert_agg.
"""

from __future__ import annotations

from collections.abc import Callable

from dagc.blocks import MODULES
from dagc.blocks.base import StepsOf
from dagc.ir.logical import Program
from dagc.ir.steps import BlockSteps, StepProgram
from dagc.passes.common import map_blocks, with_steps


def insert_collectives(steps: StepProgram) -> StepProgram:
    """Add all_reduce_attn, all_reduce_mlp, dispatch and combine where the semantics ask."""
    for kind, block_module in MODULES.items():
        steps = map_blocks(steps, kind, _inserting(block_module.collectives))
    return steps


def _inserting(collectives: StepsOf) -> Callable[[Program, BlockSteps], BlockSteps]:
    def rewrite(program: Program, block: BlockSteps) -> BlockSteps:
        return with_steps(block, collectives(program, block))

    return rewrite
