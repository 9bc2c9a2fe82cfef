"""attention (tp = t): ln1, q/k/v, scores, softmax, weights·V, o_proj, res1, all-reduce.

Rank i holds split(nh, t)[i] query heads and split(nkv, t)[i] key/value heads (one, shared,
when nkv < t: K/V replicated). Q·Kᵀ is Get_Time(Bm·h·S, d, S) and weights·V
Get_Time(Bm·h·S, S, d), the seed's convention. With t > 1 the block ends in an all-reduce of
the T·H activations after o_proj.
"""

from __future__ import annotations

from collections.abc import Callable

from dagc.blocks.base import BlockModule, branches, insert_after, joint, per_gpu, same
from dagc.blocks.shapes import activation_bytes, communication, count, dims, times
from dagc.ir.logical import BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import CostTerm, Label, TermKind, elementwise, matmul
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    D = dims(program)
    t, tok, hid, d = block.degree, D.tokens, D.hidden, D.head_dim
    heads = split_evenly(model.heads, t)
    kv = split_evenly(model.kv_heads, t) if model.kv_heads >= t else [1] * t

    def per_rank(base: str, make: Callable[[int, int], CostTerm], part: str = "") -> Step:
        return per_gpu(base, block, [make(h, k) for h, k in zip(heads, kv, strict=True)], part)

    if block.fused_qkv:
        qkv = [per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(h + 2 * k), d)))]
    else:
        qkv = branches(
            [
                per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(h), d)), ".q"),
                per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(k), d)), ".k"),
                per_rank("qkv", lambda h, k: matmul(tok, hid, times(count(k), d)), ".v"),
            ],
            "qkv",
        )

    def scores_rows(h: int) -> Label:
        return times(D.batch, D.seq, count(h))  # Bm·S·h, in the seed's order

    return (
        same("ln1", block, elementwise(times(tok, hid))),
        *qkv,
        per_rank("attn_scores", lambda h, k: matmul(scores_rows(h), d, D.seq)),
        per_rank("softmax", lambda h, k: elementwise(times(scores_rows(h), D.seq))),
        per_rank("attn_out", lambda h, k: matmul(scores_rows(h), D.seq, d)),
        per_rank("o_proj", lambda h, k: matmul(tok, times(count(h), d), hid)),
        same("res1", block, elementwise(times(tok, hid))),
    )


def all_reduce_after(anchor: str, base: str) -> Callable[[Program, BlockSteps], tuple[Step, ...]]:
    """The collectives of a tensor-parallel block: an all-reduce of T·H·w after `anchor`."""

    def collectives(program: Program, block: BlockSteps) -> tuple[Step, ...]:
        if block.degree == 1:
            return block.steps
        payload, ranks = activation_bytes(program), count(block.degree)
        term = communication(program, TermKind.ALL_REDUCE, payload, ranks, gpus=block.gpus)
        return insert_after(block.steps, anchor, joint(base, block, term))

    return collectives


def _split_items(model: Model) -> list[tuple[str, int]]:
    assert model.heads is not None
    return [("heads", model.heads)]


MODULE = BlockModule(
    kind=BlockKind.ATTENTION,
    summary="ln1, q/k/v, scores, softmax, weights·V, o_proj, res1; all-reduce when tp > 1",
    compute=_compute,
    needs=("heads",),
    options={"fused_qkv": "bool"},
    split_items=_split_items,
    collectives=all_reduce_after("o_proj", "all_reduce_attn"),
    weight_products=frozenset({"qkv", "o_proj"}),
    least_ops_per_rank=7,  # fused qkv: ln1, qkv, scores, softmax, out, o_proj, res1
)
