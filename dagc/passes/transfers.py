"""insert-transfers: moving activations between device groups.

A block whose input lives on other GPUs is reached by a transfer:
- a moe block is reached by `broadcast_l{l}` (all T tokens to every MoE GPU, counted on
  the sending side) and `recv_moe_l{l}` (where the MoE side waits); its result goes back by
  `return_l{l}` (each MoE GPU's tokens, summed over its experts), and res2 runs where the
  residual stream lives, on the sending group;
- any other block starts a new pipeline stage s: `send_stage{s}` on the sending side carries
  the T·H·w bytes, `recv_stage{s}` is where the receiving side waits for them.
"""

from __future__ import annotations

from dataclasses import replace

from dagc.ir.logical import Program
from dagc.ir.steps import BlockSteps, Step, StepProgram, TransferKind
from dagc.ir.terms import CostTerm, TermKind
from dagc.passes.common import activation_bytes, communication, count, dims, held_tokens, times

SYNC = CostTerm(TermKind.SYNC, ())


def insert_transfers(steps: StepProgram) -> StepProgram:
    """Add the transfers between consecutive blocks that run on different GPUs."""
    program = steps.program
    blocks: list[BlockSteps] = []
    stage = 0
    previous_layer = 0
    for block in steps.blocks:
        if block.excursion:
            blocks.append(_moe_excursion(program, block))
        elif set(block.input_gpus) == set(block.gpus):
            blocks.append(block)
        else:
            stage += 1
            blocks += [_stage_transfer(program, block, stage, previous_layer), block]
        previous_layer = block.layer
    return replace(steps, blocks=tuple(blocks))


def _stage_transfer(
    program: Program, block: BlockSteps, stage: int, previous_layer: int
) -> BlockSteps:
    both = tuple(sorted({*block.input_gpus, *block.gpus}))
    send_term = communication(program, TermKind.P2P, activation_bytes(program), gpus=both)
    send = Step(
        f"send_stage{stage}",
        previous_layer,
        block.input_gpus,
        (send_term,),
        joint=True,
        layer_in_name=False,
        span=block.span,
    )
    recv = Step(
        f"recv_stage{stage}",
        block.layer,
        block.gpus,
        (SYNC,),
        joint=True,
        layer_in_name=False,
        span=block.span,
    )
    return BlockSteps(
        kind=TransferKind.TRANSFER,
        layer=block.layer,
        group=block.group,
        gpus=block.gpus,
        overlap=block.overlap,  # the transfer reaches `block`: its flag decides the stream
        input_gpus=block.input_gpus,
        output_gpus=block.gpus,
        steps=(send, recv),
        span=block.span,
    )


def _moe_excursion(program: Program, block: BlockSteps) -> BlockSteps:
    both = tuple(sorted({*block.input_gpus, *block.gpus}))
    ranks = block.degree + 1  # the sending rank and every MoE GPU
    broadcast_term = communication(
        program, TermKind.BROADCAST, activation_bytes(program), count(ranks), gpus=both
    )
    broadcast = Step(
        "broadcast", block.layer, block.input_gpus, (broadcast_term,), joint=True, span=block.span
    )
    receive = Step("recv_moe", block.layer, block.gpus, (SYNC,), joint=True, span=block.span)
    d = dims(program)
    return_bytes = times(held_tokens(program, block.degree), d.hidden, d.width)
    # The MoE GPUs send and their time is counted there; the residual side waits for the
    # tokens through the data edge into res2, not in its program order (ping-pong).
    back = Step(
        "return",
        block.layer,
        block.gpus,
        (communication(program, TermKind.P2P, return_bytes, gpus=both),),
        joint=True,
        span=block.span,
    )
    *compute, res2 = block.steps
    assert res2.base == "res2"
    residual = res2.with_gpus(block.input_gpus)
    return replace(block, steps=(broadcast, receive, *compute, back, residual))
