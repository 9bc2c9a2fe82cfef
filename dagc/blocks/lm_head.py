"""lm_head (tp = t): the output projection, rank i holding split(V, t)[i] vocabulary rows."""

from __future__ import annotations

from dagc.blocks.base import BlockModule, per_gpu
from dagc.blocks.shapes import count, dims
from dagc.ir.logical import BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import matmul
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    assert program.model.vocab is not None
    D = dims(program)
    rows = split_evenly(program.model.vocab, block.degree)
    return (per_gpu("lm_head", block, [matmul(D.tokens, D.hidden, count(v)) for v in rows]),)


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
)
