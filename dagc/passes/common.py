"""Helpers shared by the expansion passes (the shape helpers are in dagc.blocks.shapes)."""

from __future__ import annotations

from dataclasses import replace

from dagc.ir.logical import BlockKind
from dagc.ir.steps import BlockSteps, StepProgram


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
