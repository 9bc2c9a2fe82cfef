"""shard-*: give each block its per-GPU compute steps, split over the block's ranks.

What each block kind computes lives in its module (dagc/blocks/); these passes apply them.
Shapes follow the semantics: rank i of a tp group gets split(n, t)[i] heads, ffn columns or
vocabulary rows; rank i of an ep group holds experts i·E/e ... (i+1)·E/e − 1.
"""

from __future__ import annotations

from dataclasses import replace

from dagc.blocks import module
from dagc.ir.logical import BlockKind, Program
from dagc.ir.steps import BlockSteps, StepProgram
from dagc.passes.common import map_blocks, with_steps


def _shard(steps: StepProgram, kind: BlockKind) -> StepProgram:
    """The blocks of `kind` with their compute steps; the values they read from outside the
    step (the module's `inputs`: a decode step's KV cache) join the program's inputs."""
    block_module = module(kind)

    def rewrite(program: Program, block: BlockSteps) -> BlockSteps:
        return with_steps(block, block_module.compute(program, block))

    sharded = map_blocks(steps, kind, rewrite, templates=True)
    inputs = [
        value
        for block in sharded.blocks
        if block.kind == kind
        for value in block_module.inputs(steps.program, block)
    ]
    if not inputs:
        return sharded
    return replace(sharded, inputs=(*sharded.inputs, *inputs))


def shard_attention(steps: StepProgram) -> StepProgram:
    """shard-attention: ln1, qkv (three products, or one when fused; MLA's parts), qk_norm,
    scores, softmax and weights·V (or one fused attn_core), o_proj and res1 on every rank."""
    return _shard(steps, BlockKind.ATTENTION)


def shard_mlp(steps: StepProgram) -> StepProgram:
    """shard-mlp: ln2, mlp_up (and mlp_gate for swiglu), mlp_act, mlp_down, res2."""
    return _shard(steps, BlockKind.MLP)


def shard_moe(steps: StepProgram) -> StepProgram:
    """shard-moe: ln2, the replicated gate, each local expert in turn, expert_agg, res2."""
    return _shard(steps, BlockKind.MOE)


def shard_embed_head(steps: StepProgram) -> StepProgram:
    """shard-embed-head: the embedding lookup on every rank; lm_head split by vocabulary."""
    return _shard(_shard(steps, BlockKind.EMBED), BlockKind.LM_HEAD)
