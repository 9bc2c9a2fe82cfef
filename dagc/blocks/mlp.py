"""mlp (tp = t): ln2, mlp_up (and mlp_gate with swiglu), mlp_act, mlp_down, res2, all-reduce.

Rank i holds split(F, t)[i] columns of the up (and gate) projection and the matching rows of
the down projection; with t > 1 the block ends in an all-reduce after mlp_down.
"""

from __future__ import annotations

from dagc.blocks.attention import all_reduce_after
from dagc.blocks.base import BlockModule, branches, per_gpu, same
from dagc.blocks.shapes import count, dims, times
from dagc.ir.logical import Activation, BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import elementwise, matmul
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.ffn is not None
    D = dims(program)
    tok, hid = D.tokens, D.hidden
    columns = [count(f) for f in split_evenly(model.ffn, block.degree)]
    up = [per_gpu("mlp_up", block, [matmul(tok, hid, f) for f in columns])]
    if model.activation is Activation.SWIGLU:
        gate = per_gpu("mlp_gate", block, [matmul(tok, hid, f) for f in columns])
        up = branches([up[0], gate], "mlp_in")
    return (
        same("ln2", block, elementwise(times(tok, hid))),
        *up,
        per_gpu("mlp_act", block, [elementwise(times(tok, f)) for f in columns]),
        per_gpu("mlp_down", block, [matmul(tok, f, hid) for f in columns]),
        same("res2", block, elementwise(times(tok, hid))),
    )


def _split_items(model: Model) -> list[tuple[str, int]]:
    assert model.ffn is not None
    return [("ffn columns", model.ffn)]


MODULE = BlockModule(
    kind=BlockKind.MLP,
    summary="ln2, mlp_up (and mlp_gate), mlp_act, mlp_down, res2; all-reduce when tp > 1",
    compute=_compute,
    needs=("ffn",),
    split_items=_split_items,
    collectives=all_reduce_after("mlp_down", "all_reduce_mlp"),
    weight_products=frozenset({"mlp_up", "mlp_gate", "mlp_down"}),
    least_ops_per_rank=5,  # gelu: ln2, up, act, down, res2
)
