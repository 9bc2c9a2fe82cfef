"""shard-*: give each block its per-GPU compute steps, split over the block's ranks.

Shapes follow the semantics: rank i of a tp group gets split(n, t)[i] heads, ffn columns or
vocabulary rows; rank i of an ep group holds experts i·E/e ... (i+1)·E/e − 1.
"""

from __future__ import annotations

from dataclasses import replace

from dagc.ir.logical import Activation, Program
from dagc.ir.steps import BlockSteps, Step, StepProgram
from dagc.ir.terms import CostTerm, elementwise, matmul
from dagc.passes.common import (
    expert_tokens,
    map_blocks,
    tokens,
    tokens_held_by_expert_gpu,
    with_steps,
)
from dagc.split import split_evenly


def _per_gpu(base: str, block: BlockSteps, terms: list[CostTerm], part: str = "") -> Step:
    return Step(base, block.layer, block.gpus, tuple(terms), part=part, span=block.span)


def _same(base: str, block: BlockSteps, term: CostTerm, part: str = "") -> Step:
    return _per_gpu(base, block, [term] * len(block.gpus), part)


def shard_attention(steps: StepProgram) -> StepProgram:
    """shard-attention: ln1, qkv (three products, or one when fused), scores, softmax,
    weights·V, o_proj and res1 on every rank."""
    return map_blocks(steps, "attention", _attention)


def _attention(program: Program, block: BlockSteps) -> BlockSteps:
    model = program.model
    assert model.heads is not None and model.kv_heads is not None and model.head_dim is not None
    t, d, hidden = block.degree, model.head_dim, model.hidden
    n_tokens, bm, seq = tokens(program), program.workload.microbatch_size, program.workload.seq
    heads = split_evenly(model.heads, t)
    kv = split_evenly(model.kv_heads, t) if model.kv_heads >= t else [1] * t
    if block.fused_qkv:
        qkv = [
            _per_gpu(
                "qkv",
                block,
                [matmul(n_tokens, hidden, (h + 2 * k) * d) for h, k in zip(heads, kv, strict=True)],
            )
        ]
    else:
        q = _per_gpu("qkv", block, [matmul(n_tokens, hidden, h * d) for h in heads], ".q")
        k = _per_gpu("qkv", block, [matmul(n_tokens, hidden, k * d) for k in kv], ".k")
        v = _per_gpu("qkv", block, [matmul(n_tokens, hidden, k * d) for k in kv], ".v")
        qkv = [q, k, v]
    return with_steps(
        block,
        (
            _same("ln1", block, elementwise(n_tokens * hidden)),
            *qkv,
            _per_gpu("attn_scores", block, [matmul(bm * h * seq, d, seq) for h in heads]),
            _per_gpu("softmax", block, [elementwise(bm * h * seq * seq) for h in heads]),
            _per_gpu("attn_out", block, [matmul(bm * h * seq, seq, d) for h in heads]),
            _per_gpu("o_proj", block, [matmul(n_tokens, h * d, hidden) for h in heads]),
            _same("res1", block, elementwise(n_tokens * hidden)),
        ),
    )


def shard_mlp(steps: StepProgram) -> StepProgram:
    """shard-mlp: ln2, mlp_up (and mlp_gate for swiglu), mlp_act, mlp_down, res2."""
    return map_blocks(steps, "mlp", _mlp)


def _mlp(program: Program, block: BlockSteps) -> BlockSteps:
    model = program.model
    assert model.ffn is not None
    n_tokens, hidden = tokens(program), model.hidden
    columns = split_evenly(model.ffn, block.degree)
    up = [_per_gpu("mlp_up", block, [matmul(n_tokens, hidden, f) for f in columns])]
    if model.activation is Activation.SWIGLU:
        up.append(_per_gpu("mlp_gate", block, [matmul(n_tokens, hidden, f) for f in columns]))
    return with_steps(
        block,
        (
            _same("ln2", block, elementwise(n_tokens * hidden)),
            *up,
            _per_gpu("mlp_act", block, [elementwise(n_tokens * f) for f in columns]),
            _per_gpu("mlp_down", block, [matmul(n_tokens, f, hidden) for f in columns]),
            _same("res2", block, elementwise(n_tokens * hidden)),
        ),
    )


def shard_moe(steps: StepProgram) -> StepProgram:
    """shard-moe: ln2, the replicated gate, each local expert in turn, expert_agg, res2."""
    return map_blocks(steps, "moe", _moe)


def _moe(program: Program, block: BlockSteps) -> BlockSteps:
    model = program.model
    assert model.experts is not None and model.expert_ffn is not None
    n_tokens, hidden, ffn = tokens(program), model.hidden, model.expert_ffn
    t_e, per_gpu = expert_tokens(program), model.experts // block.degree
    expert_steps: list[Step] = []
    for local in range(per_gpu):
        experts = tuple(rank * per_gpu + local for rank in range(block.degree))
        parts = [(".up", matmul(t_e, hidden, ffn))]
        if model.activation is Activation.SWIGLU:
            parts.append((".gate", matmul(t_e, hidden, ffn)))
        parts += [(".act", elementwise(t_e * ffn)), (".down", matmul(t_e, ffn, hidden))]
        for part, term in parts:
            step = _same("expert", block, term, part)
            expert_steps.append(replace(step, experts=experts))
    held = tokens_held_by_expert_gpu(program, block.degree)
    return with_steps(
        block,
        (
            _same("ln2", block, elementwise(n_tokens * hidden)),
            _same("gate", block, matmul(n_tokens, hidden, model.experts)),
            *expert_steps,
            _same("expert_agg", block, elementwise(held * hidden)),
            _same("res2", block, elementwise(n_tokens * hidden)),
        ),
    )


def shard_embed_head(steps: StepProgram) -> StepProgram:
    """shard-embed-head: the embedding lookup on every rank; lm_head split by vocabulary."""
    embedded = map_blocks(steps, "embed", _embed)
    return map_blocks(embedded, "lm_head", _lm_head)


def _embed(program: Program, block: BlockSteps) -> BlockSteps:
    return with_steps(
        block, (_same("embed", block, elementwise(tokens(program) * program.model.hidden)),)
    )


def _lm_head(program: Program, block: BlockSteps) -> BlockSteps:
    assert program.model.vocab is not None
    rows = split_evenly(program.model.vocab, block.degree)
    n_tokens, hidden = tokens(program), program.model.hidden
    return with_steps(
        block, (_per_gpu("lm_head", block, [matmul(n_tokens, hidden, v) for v in rows]),)
    )
