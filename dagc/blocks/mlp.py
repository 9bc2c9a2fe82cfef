"""mlp (tp = t): ln2, mlp_up (and mlp_gate with swiglu), mlp_act, mlp_down, res2, all-reduce.

Rank i holds split(F, t)[i] columns of the up (and gate) projection and the matching rows of
the down projection; with t > 1 the block ends in an all-reduce after mlp_down.

Values: ln2 reads the residual x; up (and gate) read ln2, act reads them, down reads act and
writes a partial sum when t > 1, which only the all-reduce reads; res2 reads the reduced
down and x. In training with `hidden_dropout`, `hidden_dropout2` (Elem_Time(T·H), base.py's
hidden_dropout) comes before res2: it reads the reduced down and writes `down_dropped`
(which res2 reads) and its u8 mask.
"""

from __future__ import annotations

from dagc.blocks.base import BlockModule, hidden_dropout, per_gpu, same, tensor_parallel
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
from dagc.ir.logical import Activation, BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import elementwise, matmul
from dagc.ir.values import PARTIAL, REPLICATED, Value, split
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.ffn is not None
    D = dims(program)
    tok, hid = D.tokens, D.hidden
    columns = [count(f) for f in split_evenly(model.ffn, block.degree)]
    v = _values(program, block)
    ln2 = (v["ln2"],)
    up = [
        per_gpu(
            "mlp_up", block, [matmul(tok, hid, f) for f in columns], reads=ln2, writes=(v["up"],)
        )
    ]
    act_reads: tuple[Value, ...] = (v["up"],)
    if model.activation is Activation.SWIGLU:
        up.append(
            per_gpu(
                "mlp_gate",
                block,
                [matmul(tok, hid, f) for f in columns],
                reads=ln2,
                writes=(v["gate"],),
            )
        )
        act_reads = (v["up"], v["gate"])
    x = residual_in(program, block)
    dropout, out = hidden_dropout(program, block, v["down"], "down", "hidden_dropout2")
    return (
        same("ln2", block, elementwise(times(tok, hid)), reads=x, writes=ln2),
        *up,
        per_gpu(
            "mlp_act",
            block,
            [elementwise(times(tok, f)) for f in columns],
            reads=act_reads,
            writes=(v["act"],),
        ),
        per_gpu(
            "mlp_down",
            block,
            [matmul(tok, f, hid) for f in columns],
            reads=(v["act"],),
            writes=(v["down"],),
        ),
        *dropout,
        same(
            "res2",
            block,
            elementwise(times(tok, hid)),
            reads=(out, *x),
            writes=(residual_out(program, block, block.gpus),),
        ),
    )


def _values(program: Program, block: BlockSteps) -> dict[str, Value]:
    """The values inside an mlp block: up, gate and act split by ffn columns, down a partial
    sum when tp > 1."""
    assert program.model.ffn is not None
    columns = (("tokens", tokens(program)), ("ffn", program.model.ffn))
    by_column = split("ffn")
    return {
        "ln2": value(program, block, "ln2", hidden_shape(program)),
        "up": value(program, block, "up", columns, by_column),
        "gate": value(program, block, "gate", columns, by_column),
        "act": value(program, block, "act", columns, by_column),
        "down": value(
            program,
            block,
            "down",
            hidden_shape(program),
            PARTIAL if block.degree > 1 else REPLICATED,
        ),
    }


def _split_items(model: Model) -> list[tuple[str, int]]:
    assert model.ffn is not None
    return [("ffn columns", model.ffn)]


MODULE = BlockModule(
    kind=BlockKind.MLP,
    summary="ln2, mlp_up (and mlp_gate), mlp_act, mlp_down, res2; all-reduce when tp > 1",
    compute=_compute,
    needs=("ffn",),
    split_items=_split_items,
    collectives=tensor_parallel("mlp_down", "mlp"),
    weight_products=frozenset({"mlp_up", "mlp_gate", "mlp_down"}),
    least_ops_per_rank=5,  # gelu: ln2, up, act, down, res2
    grad_only=frozenset({"res2"}),
    backward_all_reduce="all_reduce_mlp_bwd",
)
