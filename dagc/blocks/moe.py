"""moe (ep = e): ln2, the replicated gate, each local expert in turn, expert_agg, res2.

Rank i holds experts i·E/e … (i+1)·E/e − 1; under balanced routing each expert receives
T_e = ceil(T·k/E · capacity_factor) tokens. The experts of one GPU run one after another
(they share it). A block whose input lives on its own GPUs dispatches tokens with an
all-to-all after the gate and combines them after expert_agg; a block reached from another
group (attention/MoE separation) gets its tokens by broadcast instead (insert-transfers).
"""

from __future__ import annotations

from dataclasses import replace

from dagc.blocks.base import BlockModule, insert_after, joint, same
from dagc.blocks.shapes import (
    communication,
    count,
    dims,
    expert_tokens,
    held_tokens,
    times,
    tokens,
)
from dagc.ir.logical import Activation, BlockKind, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import TermKind, elementwise, matmul


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
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
            step = same("expert", block, term, part)
            expert_steps.append(replace(step, experts=experts, branch=("experts", local)))
    return (
        same("ln2", block, elementwise(times(tok, hid))),
        same("gate", block, matmul(tok, hid, count(model.experts, "E"))),
        *expert_steps,
        same("expert_agg", block, elementwise(times(held_tokens(program, block.degree), hid))),
        same("res2", block, elementwise(times(tok, hid))),
    )


def _collectives(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    if block.degree == 1 or block.excursion:
        return block.steps  # one GPU needs no all-to-all; an excursion's tokens come by broadcast
    d = dims(program)
    payload = times(held_tokens(program, block.degree), d.hidden, d.width)
    term = communication(
        program, TermKind.ALL_TO_ALL, payload, count(block.degree), gpus=block.gpus
    )
    with_dispatch = insert_after(block.steps, "gate", joint("dispatch", block, term))
    return insert_after(with_dispatch, "expert_agg", joint("combine", block, term))


MODULE = BlockModule(
    kind=BlockKind.MOE,
    summary="ln2, gate, the local experts in turn, expert_agg, res2; dispatch and combine",
    compute=_compute,
    needs=("experts", "top_k", "expert_ffn"),
    collectives=_collectives,
    weight_products=frozenset({"gate", "expert"}),
    least_ops_per_rank=3,  # ln2, gate, expert_agg
    least_ops_per_expert=3,  # up, act, down
)
