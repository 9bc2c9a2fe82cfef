"""shard-*: give each block its per-GPU compute steps, split over the block's ranks.

Shapes follow the semantics: rank i of a tp group gets split(n, t)[i] heads, ffn columns or
vocabulary rows; rank i of an ep group holds experts i·E/e ... (i+1)·E/e − 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dagc.ir.logical import Activation, BlockKind, Program
from dagc.ir.steps import BlockSteps, Step, StepProgram
from dagc.ir.terms import CostTerm, Label, elementwise, matmul
from dagc.passes.common import (
    count,
    dims,
    expert_tokens,
    held_tokens,
    map_blocks,
    times,
    tokens,
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
    return map_blocks(steps, BlockKind.ATTENTION, _attention)


def _attention(program: Program, block: BlockSteps) -> BlockSteps:
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    D = dims(program)
    t, tok, hid, d = block.degree, D.tokens, D.hidden, D.head_dim
    heads = split_evenly(model.heads, t)
    kv = split_evenly(model.kv_heads, t) if model.kv_heads >= t else [1] * t

    def per_rank(base: str, make: Callable[[int, int], CostTerm], part: str = "") -> Step:
        return _per_gpu(base, block, [make(h, k) for h, k in zip(heads, kv, strict=True)], part)

    if block.fused_qkv:
        qkv = [per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(h + 2 * k), d)))]
    else:
        products = [
            per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(h), d)), ".q"),
            per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(k), d)), ".k"),
            per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(k), d)), ".v"),
        ]
        qkv = [replace(step, branch=("qkv", i)) for i, step in enumerate(products)]

    def scores_rows(h: int) -> Label:
        return times(D.batch, D.seq, count(h))  # Bm·S·h, in the seed's order

    return with_steps(
        block,
        (
            _same("ln1", block, elementwise(times(tok, hid))),
            *qkv,
            per_rank("attn_scores", lambda h, k: matmul(scores_rows(h), d, D.seq)),
            per_rank("softmax", lambda h, k: elementwise(times(scores_rows(h), D.seq))),
            per_rank("attn_out", lambda h, k: matmul(scores_rows(h), D.seq, d)),
            per_rank("o_proj", lambda h, k: matmul(tok, times(count(h), d), hid)),
            _same("res1", block, elementwise(times(tok, hid))),
        ),
    )


def shard_mlp(steps: StepProgram) -> StepProgram:
    """shard-mlp: ln2, mlp_up (and mlp_gate for swiglu), mlp_act, mlp_down, res2."""
    return map_blocks(steps, BlockKind.MLP, _mlp)


def _mlp(program: Program, block: BlockSteps) -> BlockSteps:
    model = program.model
    assert model.ffn is not None
    D = dims(program)
    tok, hid = D.tokens, D.hidden
    columns = [count(f) for f in split_evenly(model.ffn, block.degree)]
    up = [_per_gpu("mlp_up", block, [matmul(tok, hid, f) for f in columns])]
    if model.activation is Activation.SWIGLU:
        gate = _per_gpu("mlp_gate", block, [matmul(tok, hid, f) for f in columns])
        up = [replace(up[0], branch=("mlp_in", 0)), replace(gate, branch=("mlp_in", 1))]
    return with_steps(
        block,
        (
            _same("ln2", block, elementwise(times(tok, hid))),
            *up,
            _per_gpu("mlp_act", block, [elementwise(times(tok, f)) for f in columns]),
            _per_gpu("mlp_down", block, [matmul(tok, f, hid) for f in columns]),
            _same("res2", block, elementwise(times(tok, hid))),
        ),
    )


def shard_moe(steps: StepProgram) -> StepProgram:
    """shard-moe: ln2, the replicated gate, each local expert in turn, expert_agg, res2."""
    return map_blocks(steps, BlockKind.MOE, _moe)


def _moe(program: Program, block: BlockSteps) -> BlockSteps:
    model = program.model
    assert model.experts is not None and model.expert_ffn is not None
    D = dims(program)
    tok, hid = D.tokens, D.hidden
    # Every expert sees every token when top_k·capacity = E (the seed): write T_e as B×S then.
    t_e = tok if expert_tokens(program) == tokens(program) else count(expert_tokens(program), "T_e")
    ffn = count(model.expert_ffn, "Fe")
    per_gpu = model.experts // block.degree
    parts = [(".up", matmul(t_e, hid, ffn))]
    if model.activation is Activation.SWIGLU:
        parts.append((".gate", matmul(t_e, hid, ffn)))
    parts += [(".act", elementwise(times(t_e, ffn))), (".down", matmul(t_e, ffn, hid))]
    expert_steps: list[Step] = []
    for local in range(per_gpu):
        experts = tuple(rank * per_gpu + local for rank in range(block.degree))
        for part, term in parts:
            step = _same("expert", block, term, part)
            expert_steps.append(replace(step, experts=experts, branch=("experts", local)))
    return with_steps(
        block,
        (
            _same("ln2", block, elementwise(times(tok, hid))),
            _same("gate", block, matmul(tok, hid, count(model.experts, "E"))),
            *expert_steps,
            _same("expert_agg", block, elementwise(times(held_tokens(program, block.degree), hid))),
            _same("res2", block, elementwise(times(tok, hid))),
        ),
    )


def shard_embed_head(steps: StepProgram) -> StepProgram:
    """shard-embed-head: the embedding lookup on every rank; lm_head split by vocabulary."""
    embedded = map_blocks(steps, BlockKind.EMBED, _embed)
    return map_blocks(embedded, BlockKind.LM_HEAD, _lm_head)


def _embed(program: Program, block: BlockSteps) -> BlockSteps:
    D = dims(program)
    return with_steps(block, (_same("embed", block, elementwise(times(D.tokens, D.hidden))),))


def _lm_head(program: Program, block: BlockSteps) -> BlockSteps:
    assert program.model.vocab is not None
    D = dims(program)
    rows = split_evenly(program.model.vocab, block.degree)
    terms = [matmul(D.tokens, D.hidden, count(v)) for v in rows]
    return with_steps(block, (_per_gpu("lm_head", block, terms),))
