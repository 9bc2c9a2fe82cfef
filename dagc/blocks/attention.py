"""attention (tp = t): ln1, q/k/v, scores, softmax, weights·V, o_proj, res1, all-reduce.

Rank i holds split(nh, t)[i] query heads and split(nkv, t)[i] key/value heads (one, shared,
when nkv < t: K/V replicated). Q·Kᵀ is Get_Time(Bm·h·S, d, S) and weights·V
Get_Time(Bm·h·S, S, d), the seed's convention. With t > 1 the block ends in an all-reduce of
the T·H activations after o_proj.

Values: ln1 reads the residual x and writes ln1; q, k, v read ln1 (split by heads); the
scores read q and k, softmax the scores, weights·V the probabilities and v; o_proj writes
o, a partial sum of T x H when t > 1, which only the all-reduce reads; res1 reads the
reduced o and x.
"""

from __future__ import annotations

from collections.abc import Callable

from dagc.blocks.base import BlockModule, Values, all_reduce_after, per_gpu, same
from dagc.blocks.shapes import (
    count,
    dims,
    hidden_shape,
    residual_in,
    residual_out,
    times,
    tokens,
    value,
)
from dagc.ir.logical import BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import CostTerm, Label, elementwise, matmul
from dagc.ir.values import PARTIAL, REPLICATED, Value, split
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    D = dims(program)
    t, tok, hid, d = block.degree, D.tokens, D.hidden, D.head_dim
    heads = split_evenly(model.heads, t)
    kv = split_evenly(model.kv_heads, t) if model.kv_heads >= t else [1] * t
    v = _values(program, block)
    x = residual_in(program, block)

    def per_rank(
        base: str, make: Callable[[int, int], CostTerm], part: str = "", **io: Values
    ) -> Step:
        terms = [make(h, k) for h, k in zip(heads, kv, strict=True)]
        return per_gpu(base, block, terms, part, **io)

    ln1 = (v["ln1"],)
    if block.fused_qkv:
        qkv = [
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(h + 2 * k), d)),
                reads=ln1,
                writes=(v["q"], v["k"], v["v"]),
            )
        ]
    else:
        qkv = [
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(h), d)),
                ".q",
                reads=ln1,
                writes=(v["q"],),
            ),
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(k), d)),
                ".k",
                reads=ln1,
                writes=(v["k"],),
            ),
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(k), d)),
                ".v",
                reads=ln1,
                writes=(v["v"],),
            ),
        ]

    def scores_rows(h: int) -> Label:
        return times(D.batch, D.seq, count(h))  # Bm·S·h, in the seed's order

    return (
        same("ln1", block, elementwise(times(tok, hid)), reads=x, writes=ln1),
        *qkv,
        per_rank(
            "attn_scores",
            lambda h, k: matmul(scores_rows(h), d, D.seq),
            reads=(v["q"], v["k"]),
            writes=(v["scores"],),
        ),
        per_rank(
            "softmax",
            lambda h, k: elementwise(times(scores_rows(h), D.seq)),
            reads=(v["scores"],),
            writes=(v["probs"],),
        ),
        per_rank(
            "attn_out",
            lambda h, k: matmul(scores_rows(h), D.seq, d),
            reads=(v["probs"], v["v"]),
            writes=(v["attn"],),
        ),
        per_rank(
            "o_proj",
            lambda h, k: matmul(tok, times(count(h), d), hid),
            reads=(v["attn"],),
            writes=(v["o"],),
        ),
        same(
            "res1",
            block,
            elementwise(times(tok, hid)),
            reads=(v["o"], *x),
            writes=(residual_out(program, block, block.gpus),),
        ),
    )


def _values(program: Program, block: BlockSteps) -> dict[str, Value]:
    """The values inside an attention block: q, k, v split by heads, o a partial sum."""
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    T, S, d = tokens(program), program.workload.seq, model.head_dim or 1
    heads = split("heads")
    # K/V are split by kv heads when there are enough; else every rank holds the one head
    # its query heads share.
    kv_shared = model.kv_heads < block.degree
    kv = (("tokens", T), ("kv_heads", 1 if kv_shared else model.kv_heads), ("head_dim", d))
    kv_placement = REPLICATED if kv_shared else split("kv_heads")
    rows = (("tokens", T), ("heads", model.heads))
    # a tp > 1 o_proj leaves each rank a partial sum over its heads, awaiting the all-reduce
    o_placement = PARTIAL if block.degree > 1 else REPLICATED
    return {
        "ln1": value(program, block, "ln1", hidden_shape(program)),
        "q": value(program, block, "q", (*rows, ("head_dim", d)), heads),
        "k": value(program, block, "k", kv, kv_placement),
        "v": value(program, block, "v", kv, kv_placement),
        "scores": value(program, block, "scores", (*rows, ("keys", S)), heads),
        "probs": value(program, block, "probs", (*rows, ("keys", S)), heads),
        "attn": value(program, block, "attn", (*rows, ("head_dim", d)), heads),
        "o": value(program, block, "o", hidden_shape(program), o_placement),
    }


def _split_items(model: Model) -> list[tuple[str, int]]:
    assert model.heads is not None
    return [("heads", model.heads)]


MODULE = BlockModule(
    kind=BlockKind.ATTENTION,
    summary="ln1, q/k/v, scores, softmax, weights·V, o_proj, res1; all-reduce when tp > 1",
    compute=_compute,
    needs=("heads",),
    options={
        "fused_qkv": "bool",
        "kernel": ("explicit", "fused"),
        "mask": ("full", "causal"),
    },
    split_items=_split_items,
    collectives=all_reduce_after("o_proj", "all_reduce_attn"),
    weight_products=frozenset({"qkv", "o_proj"}),
    least_ops_per_rank=7,  # fused qkv: ln1, qkv, scores, softmax, out, o_proj, res1
)
