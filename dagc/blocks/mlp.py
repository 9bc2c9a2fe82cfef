"""mlp (tp = t): ln2, mlp_up (and mlp_gate with swiglu), mlp_act, mlp_down, res2, all-reduce.

Rank i holds split(F, t)[i] columns of the up (and gate) projection and the matching rows of
the down projection; with t > 1 the block ends in an all-reduce after mlp_down.

With dp replicas (attention data parallelism, tp = 1) rank r works on its own
T_r = split(Bm, dp)[r]·S tokens (`rank_tokens`) with the whole F: every step's token count
is T_r, there is no collective, and the values are split by tokens over the group. The
FLOPs are the model's (the replicas split the tokens, not the work).

Values: ln2 reads the residual x; up (and gate) read ln2, act reads them, down reads act and
writes a partial sum when t > 1, which only the all-reduce reads; res2 reads the reduced
down and x. In training with `hidden_dropout`, `hidden_dropout2` (Elem_Time(T·H), base.py's
hidden_dropout) comes before res2: it reads the reduced down and writes `down_dropped`
(which res2 reads) and its u8 mask.
"""

from __future__ import annotations

from dagc.blocks.base import BlockModule, hidden_dropout, per_gpu, tensor_parallel
from dagc.blocks.shapes import (
    count,
    dims,
    hidden_shape,
    rank_token_labels,
    residual_in,
    residual_out,
    times,
    tokens,
    value,
)
from dagc.ir.logical import Activation, BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import elementwise, matmul
from dagc.ir.values import PARTIAL, REPLICATED, Placement, Value, split
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.ffn is not None
    D = dims(program)
    hid = D.hidden
    shares = split_evenly(model.ffn, block.degree)
    # rank r: tensor-parallel rank r % tp (its F_i columns), its replica's tokens
    columns = [count(shares[rank % block.degree]) for rank in range(len(block.gpus))]
    toks = rank_token_labels(program, block)
    ranks = list(zip(toks, columns, strict=True))
    v = _values(program, block)
    ln2 = (v["ln2"],)
    up = [
        per_gpu(
            "mlp_up", block, [matmul(t, hid, f) for t, f in ranks], reads=ln2, writes=(v["up"],)
        )
    ]
    act_reads: tuple[Value, ...] = (v["up"],)
    if model.activation is Activation.SWIGLU:
        up.append(
            per_gpu(
                "mlp_gate",
                block,
                [matmul(t, hid, f) for t, f in ranks],
                reads=ln2,
                writes=(v["gate"],),
            )
        )
        act_reads = (v["up"], v["gate"])
    x = residual_in(program, block)
    dropout, out = hidden_dropout(program, block, v["down"], "down", "hidden_dropout2")
    hidden_terms = [elementwise(times(t, hid)) for t in toks]
    return (
        per_gpu("ln2", block, hidden_terms, reads=x, writes=ln2),
        *up,
        per_gpu(
            "mlp_act",
            block,
            [elementwise(times(t, f)) for t, f in ranks],
            reads=act_reads,
            writes=(v["act"],),
        ),
        per_gpu(
            "mlp_down",
            block,
            [matmul(t, f, hid) for t, f in ranks],
            reads=(v["act"],),
            writes=(v["down"],),
        ),
        *dropout,
        per_gpu(
            "res2",
            block,
            hidden_terms,
            reads=(out, *x),
            writes=(residual_out(program, block, block.gpus),),
        ),
    )


def _values(program: Program, block: BlockSteps) -> dict[str, Value]:
    """The values inside an mlp block: up, gate and act split by ffn columns, down a partial
    sum when tp > 1; with dp replicas (tp = 1) every value split by tokens."""
    assert program.model.ffn is not None
    columns = (("tokens", tokens(program)), ("ffn", program.model.ffn))
    by_column = split("ffn")
    whole: Placement = REPLICATED
    if block.dp > 1:
        assert block.degree == 1, "dp replicas with tp > 1 are not modelled"
        by_column = whole = split("tokens")
    return {
        "ln2": value(program, block, "ln2", hidden_shape(program), whole),
        "up": value(program, block, "up", columns, by_column),
        "gate": value(program, block, "gate", columns, by_column),
        "act": value(program, block, "act", columns, by_column),
        "down": value(
            program,
            block,
            "down",
            hidden_shape(program),
            PARTIAL if block.degree > 1 else whole,
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
