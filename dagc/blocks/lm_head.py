"""lm_head (tp = t): the output projection, rank i holding split(V, t)[i] vocabulary rows.

It reads the last x and writes the logits, split by vocabulary rows. With dp replicas
(attention data parallelism, tp = 1) rank r projects its own T_r tokens (`rank_tokens`),
Get_Time(T_r, H, V), and the logits are split by tokens.
"""

from __future__ import annotations

from dagc.blocks.base import BlockModule, per_gpu
from dagc.blocks.shapes import count, dims, rank_token_labels, residual_in, tokens, value
from dagc.ir.logical import BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import matmul
from dagc.ir.values import split
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    assert program.model.vocab is not None
    D = dims(program)
    rows = split_evenly(program.model.vocab, block.degree)
    vocab = (("tokens", tokens(program)), ("vocab", program.model.vocab))
    # rank r: tensor-parallel rank r % tp (its rows), its replica's tokens
    logits = value(program, block, "logits", vocab, split("tokens" if block.dp > 1 else "vocab"))
    toks = rank_token_labels(program, block)
    terms = [matmul(t, D.hidden, count(rows[r % block.degree])) for r, t in enumerate(toks)]
    x = residual_in(program, block)
    return (per_gpu("lm_head", block, terms, reads=x, writes=(logits,)),)


def _tied_table(model: Model, step: Step, rank: int) -> int:
    """The vocabulary rows of the table rank `rank` projects onto: its K x N weight."""
    if step.base != "lm_head":
        return 0
    _, k, n = step.terms[rank].args
    return k * n


def _split_items(model: Model) -> list[tuple[str, int]]:
    assert model.vocab is not None
    return [("vocabulary rows", model.vocab)]


MODULE = BlockModule(
    kind=BlockKind.LM_HEAD,
    summary="the output projection, split by vocabulary rows",
    compute=_compute,
    needs=("vocab",),
    split_items=_split_items,
    weight_products=frozenset({"lm_head"}),
    tied_table=_tied_table,
    backward_all_reduce="all_reduce_head_bwd",
)
