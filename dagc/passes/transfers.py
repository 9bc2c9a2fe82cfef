"""insert-transfers: moving activations between device groups.

A block whose input lives on other GPUs is reached by a transfer:
- a moe block is reached by `broadcast_l{l}` (all T tokens to every MoE GPU, counted on
  the sending side) and `recv_moe_l{l}` (where the MoE side waits); its result goes back by
  `return_l{l}` (each MoE GPU's tokens, summed over its experts), and res2 runs where the
  residual stream lives, on the sending group (from a group with dp replicas each sending
  GPU holds its own tokens: the broadcast still delivers all T to every MoE GPU, the
  return gives each sender its own tokens back, and its res2 adds its T_r);
- any other block starts a new pipeline stage s: `send_stage{s}` on the sending side carries
  the T·H·w bytes, `recv_stage{s}` is where the receiving side waits for them. With the
  devices key `split_sends`, t = min(|sending group|, |receiving group|) links each carry
  ceil(T·H·w/t) bytes and `gather_stage{s}` (AllGather_Time(ceil(T·H·w/t), t) over the
  receiving group, absent when t = 1) reassembles the activations the block reads.

A value crosses groups only through a transfer: the sending step reads the value where it
lives and writes it onto the receiving GPUs (`_sent`), the receiving step reads that and
writes the received value (`_s{s}`, `_moe`), and the steps of the block on the receiving
side read the received value instead of the original. The return reads the MoE GPUs'
partial sum and writes it, summed, onto the residual side, where res2 reads it and x.

The KV handoff of a disaggregated serve (the prefill phase, `program.kv_handoff` set: the
decode layout): each attention block gets, right after the step that produces what the
cache keeps (k and v, or k_normed with qk_norm; under MLA kv_a_norm's latent and kv_a's
rope key), one joint step `kv_send_l{l}` on its GPUs, a P2P of
ceil(Bm·S·c_layer / min(t_send, t_recv)) bytes (c_layer: one layer's KV bytes per token,
unsplit, dagc/blocks/kv_cache.py's closed form; t_send, t_recv: the GPUs of the layer's
attention group in the prefill and the decode layouts), marked inter-node when the two
groups span nodes. It reads the cached values and writes `kv_cache_l{l}` onto the decode
layout's attention GPUs, which appear in the prefill's DAG only there, as its receivers:
nothing in the prefill reads it. assign-streams puts it on the communication stream, so
the layer-by-layer handoff overlaps the prefill's compute.
"""

from __future__ import annotations

import math
from dataclasses import replace

from dagc.blocks.base import reroute
from dagc.blocks.kv_cache import cache_value, layer_kv_bytes
from dagc.blocks.moe import routed_dispatch, router_tokens
from dagc.blocks.shapes import (
    activation_bytes,
    communication,
    count,
    dims,
    expert_tokens,
    experts_run,
    held_tokens,
    hidden_shape,
    input_token_labels,
    residual_in,
    residual_out,
    shared_tokens,
    times,
    value,
)
from dagc.ir.logical import Block, BlockKind, Program
from dagc.ir.steps import KV_SEND, BlockSteps, Step, StepProgram, TransferKind
from dagc.ir.terms import CostTerm, TermKind, elementwise
from dagc.ir.values import REPLICATED, Value, split

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
            transfer = _stage_transfer(program, block, stage, previous_layer)
            # the block reads what the transfer received
            (received,) = transfer.steps[-1].writes
            steps_ = reroute(block.steps, 0, {block.input_value: received})
            blocks += [transfer, replace(block, steps=steps_)]
        previous_layer = block.layer
    if program.kv_handoff:
        blocks = [_with_kv_send(program, b) for b in blocks]
    return replace(steps, blocks=tuple(blocks))


def _decode_attention(program: Program, layer: int) -> Block:
    """The attention block of `layer` in the decode layout the cache is sent to."""
    for layer_range in program.kv_handoff:
        if layer_range.first <= layer <= layer_range.last:
            for block in layer_range.blocks:
                if block.kind is BlockKind.ATTENTION:
                    return block
    raise ValueError(f"the decode layout runs no attention in layer {layer}")


def _cached(program: Program, layer: int) -> tuple[str, ...]:
    """The values of `layer` a KV cache keeps: the latent and the rope key (in kv_a) under
    MLA, else the keys (normed with qk_norm) and the values."""
    if program.model.latent_attention:
        names = ("kv_latent", "kv_a")
    else:
        names = ("k_normed" if program.model.qk_norm else "k", "v")
    return tuple(f"{name}_l{layer}" for name in names)


def _with_kv_send(program: Program, block: BlockSteps) -> BlockSteps:
    """`block` with its layer's `kv_send` after the last step writing a cached value."""
    if block.kind is not BlockKind.ATTENTION or block.backward:
        return block
    wanted = _cached(program, block.layer)
    written: dict[str, Value] = {}
    last = -1
    for index, step in enumerate(block.steps):
        for value_ in step.writes:
            if value_.name in wanted:
                written[value_.name] = value_
                last = index
    reads = tuple(written[name] for name in wanted)
    send = _kv_send(program, block, reads)
    return replace(block, steps=(*block.steps[: last + 1], send, *block.steps[last + 1 :]))


def _kv_send(program: Program, block: BlockSteps, reads: tuple[Value, ...]) -> Step:
    model, workload = program.model, program.workload
    target = _decode_attention(program, block.layer)
    receivers = program.group(target.group).gpus
    w = workload.dtype.bytes
    c_layer = layer_kv_bytes(model, w)
    links = min(len(block.gpus), len(receivers))
    d = dims(program)
    payload = times(d.batch, d.seq, count(c_layer))
    if links > 1:
        payload = count(-(-workload.microbatch_size * workload.seq * c_layer // links))
    both = tuple(sorted({*block.gpus, *receivers}))
    term = communication(program, TermKind.P2P, payload, gpus=both)
    return Step(
        KV_SEND,
        block.layer,
        block.gpus,
        (term,),
        joint=True,
        reads=reads,
        writes=(
            cache_value(
                program,
                block.layer,
                degree=target.degree,
                dp=target.dp,
                gpus=receivers,
                context=workload.seq,
            ),
        ),
        span=block.span,
    )


def _stage_transfer(
    program: Program, block: BlockSteps, stage: int, previous_layer: int
) -> BlockSteps:
    both = tuple(sorted({*block.input_gpus, *block.gpus}))
    (x,) = residual_in(program, block)
    # split_sends: t = min(|sending|, |receiving|) links each carry ceil(T·H·w/t) bytes,
    # and the receiving group all-gathers the pieces (Megatron's scatter/gather)
    links = min(len(block.input_gpus), len(block.gpus)) if program.hardware.split_sends else 1
    payload = activation_bytes(program)
    if links > 1:
        payload = count(math.ceil(math.prod(v for _, v in payload) / links))
    send_term = communication(program, TermKind.P2P, payload, gpus=both)
    sent, received = _moved(x, block.gpus, "_sent"), _moved(x, block.gpus, f"_s{stage}")
    gathered = received
    if links > 1:
        # what arrives is one piece per receiving GPU (the IR records it split by tokens)
        sent = Value(sent.name, x.dims, x.dtype, block.gpus, split("tokens"))
        received = Value(received.name + "_part", x.dims, x.dtype, block.gpus, split("tokens"))
    send = Step(
        f"send_stage{stage}",
        previous_layer,
        block.input_gpus,
        (send_term,),
        joint=True,
        layer_in_name=False,
        reads=(x,),
        writes=(sent,),
        span=block.span,
    )
    recv = Step(
        f"recv_stage{stage}",
        block.layer,
        block.gpus,
        (SYNC,),
        joint=True,
        layer_in_name=False,
        reads=(sent,),
        writes=(received,),
        span=block.span,
    )
    steps: tuple[Step, ...] = (send, recv)
    if links > 1:
        gather_term = communication(
            program, TermKind.ALL_GATHER, payload, count(links), gpus=block.gpus
        )
        gather = Step(
            f"gather_stage{stage}",
            block.layer,
            block.gpus,
            (gather_term,),
            joint=True,
            layer_in_name=False,
            reads=(received,),
            writes=(gathered,),
            span=block.span,
        )
        steps = (send, recv, gather)
    return BlockSteps(
        kind=TransferKind.TRANSFER,
        layer=block.layer,
        group=block.group,
        gpus=block.gpus,
        overlap=block.overlap,  # the transfer reaches `block`: its flag decides the stream
        input_gpus=block.input_gpus,
        output_gpus=block.gpus,
        input_value=block.input_value,
        steps=steps,
        span=block.span,
    )


def _moved(x: Value, gpus: tuple[int, ...], suffix: str) -> Value:
    """`x` after a transfer: the same tensor, living on the receiving `gpus`."""
    return Value(x.name + suffix, x.dims, x.dtype, gpus, x.placement)


def _moe_excursion(program: Program, block: BlockSteps) -> BlockSteps:
    if routed_dispatch(block):
        return _routed_excursion(program, block)
    both = tuple(sorted({*block.input_gpus, *block.gpus}))
    ranks = block.degree + 1  # the sending rank and every MoE GPU
    broadcast_term = communication(
        program, TermKind.BROADCAST, activation_bytes(program), count(ranks), gpus=both
    )
    (x,) = residual_in(program, block)
    # every MoE GPU receives all T tokens (from a dp group each sender holds its own)
    whole = replace(x, placement=REPLICATED)
    sent, received = _moved(whole, block.gpus, "_sent"), _moved(whole, block.gpus, "_moe")
    broadcast = Step(
        "broadcast",
        block.layer,
        block.input_gpus,
        (broadcast_term,),
        joint=True,
        reads=(x,),
        writes=(sent,),
        span=block.span,
    )
    receive = _receive_moe(block, sent, received)
    *compute, res2 = block.steps
    moe_side = reroute(tuple(compute), 0, {x.name: received})
    return replace(block, steps=(broadcast, receive, *_return(program, block, moe_side, res2)))


def _receive_moe(block: BlockSteps, sent: Value, received: Value) -> Step:
    """`recv_moe_l{l}`: where the MoE GPUs wait for their tokens (the time is the sender's)."""
    return Step(
        "recv_moe",
        block.layer,
        block.gpus,
        (SYNC,),
        joint=True,
        reads=(sent,),
        writes=(received,),
        span=block.span,
    )


def _return(
    program: Program, block: BlockSteps, moe_side: tuple[Step, ...], res2: Step
) -> tuple[Step, ...]:
    """The MoE side's steps, `return_l{l}` of each MoE GPU's tokens, and res2 back on the
    input GPUs, reading what returned and x."""
    (x,) = residual_in(program, block)
    both = tuple(sorted({*block.input_gpus, *block.gpus}))
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
    assert res2.base == "res2"
    # a hidden dropout runs with res2, on the input GPUs, on what returned
    dropout: tuple[Step, ...] = ()
    if moe_side[-1].base == "hidden_dropout2":
        *rest, drop = moe_side
        moe_side = tuple(rest)
        dropout = (drop,)
    (partial,) = moe_side[-1].writes  # expert_agg's
    # after dp replicas each input GPU gets back its own tokens, and res2 adds its T_r
    placement = split("tokens") if block.input_dp > 1 else REPLICATED
    returned = value(
        program, block, "moe_ret", hidden_shape(program), placement, gpus=block.input_gpus
    )
    back = replace(back, reads=(partial,), writes=(returned,))
    added = returned
    if dropout:
        (drop,) = dropout
        writes = tuple(w.on(block.input_gpus) for w in drop.writes)
        dropout = (replace(drop.with_gpus(block.input_gpus), reads=(returned,), writes=writes),)
        added = writes[0]
    residual = replace(
        res2.with_gpus(block.input_gpus),
        reads=(added, x),
        terms=tuple(elementwise(times(t, d.hidden)) for t in input_token_labels(program, block)),
        writes=(residual_out(program, block, block.input_gpus),),
    )
    return (*moe_side, back, *dropout, residual)


def _routed_excursion(program: Program, block: BlockSteps) -> BlockSteps:
    """dispatch=routed: ln2 and the gate ran token-split on the input GPUs X; `dispatch_l{l}`
    (one all-to-all over X and the MoE GPUs G) sends each token to its experts' GPUs,
    `recv_moe_l{l}` is where G waits; then the experts, expert_agg, return and res2.

    Payload: the larger of what one X rank sends, ceil(T/|X|)·k·H·w (from a dp group X
    the most tokens one X rank holds, max_r T_r, instead of ceil(T/|X|); k + 1 copies with
    shared experts: a token also goes to one GPU's shared experts), and what one MoE GPU
    receives, T_e·E/e·H·w (in decode with A < E active experts, ceil(A/e) tokens; plus its
    ceil(T/e) shared-expert tokens)."""
    model = program.model
    assert model.experts is not None and model.top_k is not None
    ln2, gate, *compute, res2 = block.steps
    assert (ln2.base, gate.base) == ("ln2", "gate")
    d = dims(program)
    ep = block.degree
    shared = 1 if model.shared_experts else 0
    sent_tokens = max(router_tokens(program, block)) * (model.top_k + shared)
    most = max(experts_run(program, ep))  # E/e, or decode's split(A, e)[0] active experts
    received_tokens = expert_tokens(program) * most + max(shared_tokens(program, ep))
    payload = times(count(max(sent_tokens, received_tokens)), d.hidden, d.width)
    both = tuple(sorted({*block.input_gpus, *block.gpus}))
    term = communication(program, TermKind.ALL_TO_ALL, payload, count(len(both)), gpus=both)
    shape = (
        ("experts", model.experts),
        ("tokens", expert_tokens(program)),
        ("hidden", model.hidden),
    )
    sent = value(program, block, "moe_in", shape, split("experts"))
    received = value(program, block, "moe_in_moe", shape, split("experts"))
    dispatch = Step(
        "dispatch",
        block.layer,
        both,
        (term,),
        joint=True,
        reads=(*ln2.writes, *gate.writes),
        writes=(sent,),
        span=block.span,
    )
    receive = _receive_moe(block, sent, received)
    via = {v.name: received for v in (*ln2.writes, *gate.writes)}
    moe_side = reroute(tuple(compute), 0, via)
    tail = _return(program, block, moe_side, res2)
    return replace(block, steps=(ln2, gate, dispatch, receive, *tail))
