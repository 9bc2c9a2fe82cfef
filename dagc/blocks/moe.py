"""moe (ep = e): ln2, the replicated gate, each local expert in turn, expert_agg, res2.

Rank i holds experts i·E/e … (i+1)·E/e − 1; under balanced routing each expert receives
T_e = ceil(T·k/E · capacity_factor) tokens. The experts of one GPU run one after another
(they share it). A block whose input lives on its own GPUs dispatches tokens with an
all-to-all after the gate and combines them after expert_agg; a block reached from another
group (attention/MoE separation) gets its tokens by broadcast instead (insert-transfers), or,
with dispatch=routed, by one all-to-all over both groups after ln2 and the gate ran
token-split on the sending GPUs.

Shared experts (model key shared_experts) run after the gate, before the routed experts, on
every rank: rank i on its split(T, e)[i] tokens with the whole shared weights; a rank with
no token (T < e) skips them. Their output joins expert_agg, which then covers
min(T, T_e·E/e + ceil(T/e)) tokens.

After a block with dp replicas on the same GPUs (attention data parallelism,
`block.input_dp` > 1) each GPU holds its own T_r tokens (`input_tokens`): ln2 and the gate
run on them (Get_Time(T_r, H, E): the gate is not replicated), the shared experts too, and
res2 adds T_r·H. `dispatch` (all-to-all over the group) carries each GPU's T_r·k token
copies: per-rank payload max_r T_r·k·H·w (the copies whose expert is local included);
`combine` brings them back, the same payload. The experts keep the T_e rule of the whole
micro-batch (T = Bm·S over every replica). A routed excursion from a dp group runs ln2
and the gate on each sending GPU's own tokens.

Decode (mode DECODE) with few tokens: when A = ceil(T·k·cf) < E, only A experts receive a
token, one each: rank i runs its first split(A, e)[i] local experts on one token each, and
the other experts have no operation (an expert step then covers only the ranks running
that local expert; expert_agg only the ranks holding a token). With A ≥ E, and always in
prefill, every expert receives T_e tokens (the spec's rule, which in prefill rounds a
small T·k/E up to one token for every expert).

Values: ln2 reads the residual x; the gate reads ln2 and writes the routing; each local
expert's up (and gate) read ln2 and the routing (or, once dispatch is inserted, the tokens
it sends), act reads them, down reads act; expert_agg reads every local expert's down and
writes a partial sum when ep > 1, which combine (or the excursion's return) sums; res2 reads
that and x. Where tokens are spread over the group (dp), ln2, the routing, the shared
experts' values, combine's output and the residual are split by tokens.
"""

from __future__ import annotations

from dataclasses import replace

from dagc.blocks.base import (
    BlockModule,
    hidden_dropout,
    insert_after,
    joint,
    per_gpu,
    reroute,
    same,
)
from dagc.blocks.shapes import (
    communication,
    count,
    dims,
    expert_tokens,
    experts_run,
    held_tokens,
    hidden_shape,
    input_token_labels,
    input_tokens,
    residual_in,
    residual_out,
    shared_tokens,
    times,
    tokens,
    value,
)
from dagc.ir.logical import Activation, BlockKind, MoeDispatch, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import CostTerm, Label, TermKind, elementwise, matmul
from dagc.ir.values import PARTIAL, REPLICATED, Placement, Value, split
from dagc.split import split_evenly


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.experts is not None and model.expert_ffn is not None
    D = dims(program)
    tok, hid = D.tokens, D.hidden
    # Every expert sees every token when top_k·capacity = E (the seed): write T_e as B×S then.
    t_e = tok if expert_tokens(program) == tokens(program) else count(expert_tokens(program), "T_e")
    ffn = count(model.expert_ffn, "Fe")
    per_gpu_ = model.experts // block.degree
    run = experts_run(program, block.degree)
    v = _values(program, block)
    # the experts read the normed tokens and the routing; dispatch, when inserted, sends them
    routed = (v["ln2"], v["route"])
    expert_steps: list[Step] = []
    outputs: list[Value] = []
    for local in range(per_gpu_):
        ranks = [rank for rank in range(block.degree) if run[rank] > local]
        if not ranks:
            break  # decode: no rank runs this local expert (nor any after it)
        on = _on_ranks(block, ranks)
        experts = tuple(rank * per_gpu_ + local for rank in ranks)
        for part, term, reads, writes in _expert_parts(program, on, local, t_e, ffn, routed):
            step = same("expert", on, term, part, reads=reads, writes=writes)
            expert_steps.append(replace(step, experts=experts))
        outputs.append(expert_steps[-1].writes[0])
    shares = _shared_shares(program, block)
    shared = _shared_expert_steps(program, block, (v["ln2"],), shares)
    # the shared experts' output (and their gate's score) join expert_agg
    shared_out = tuple(s.writes[0] for s in shared if s.part in (".down", ".score"))
    x = residual_in(program, block)
    agg = v["agg"]
    dropout, out = hidden_dropout(program, block, agg, "agg", "hidden_dropout2")
    held = held_tokens(program, block.degree, shares=shares)
    return (
        *_router_steps(program, block, x, v),
        *shared,
        *expert_steps,
        same(
            "expert_agg",
            _on_ranks(block, _agg_ranks(program, block)),
            elementwise(times(held, hid)),
            reads=(*outputs, *shared_out),
            writes=(agg,),
        ),
        *dropout,
        per_gpu(
            "res2",
            block,
            [elementwise(times(t, hid)) for t in _residual_tokens(program, block)],
            reads=(out, *x),
            writes=(residual_out(program, block, block.gpus),),
        ),
    )


def _on_ranks(block: BlockSteps, ranks: list[int]) -> BlockSteps:
    """The block restricted to some of its ranks (decode's idle experts: no operation)."""
    if len(ranks) == len(block.gpus):
        return block
    return replace(block, gpus=tuple(block.gpus[rank] for rank in ranks))


def dp_input(block: BlockSteps) -> bool:
    """Whether the block runs on the GPUs of a block with dp replicas (attention data
    parallelism): each GPU then holds its own tokens, and routes them itself."""
    return block.input_dp > 1 and not block.excursion


def _shared_shares(program: Program, block: BlockSteps) -> list[int]:
    """Tokens each rank runs the shared experts on: its own T_r after dp replicas, else
    split(T, e)[i] (none without shared experts)."""
    if program.model.shared_experts and dp_input(block):
        return input_tokens(program, block)
    return shared_tokens(program, block.degree)


def _agg_ranks(program: Program, block: BlockSteps) -> list[int]:
    """The ranks holding a token to sum: every rank but, in decode, one that runs no expert
    and no shared expert."""
    run, shares = experts_run(program, block.degree), _shared_shares(program, block)
    return [rank for rank in range(block.degree) if run[rank] or shares[rank]]


def _residual_tokens(program: Program, block: BlockSteps) -> list[Label]:
    """The tokens res2 adds on each GPU: T, or each GPU's own T_r after dp replicas (an
    excursion's res2 moves to its input GPUs in insert-transfers)."""
    if dp_input(block):
        return input_token_labels(program, block)
    return [dims(program).tokens] * len(block.gpus)


def routed_dispatch(block: BlockSteps) -> bool:
    """Whether the block routes its tokens from its input GPUs (dispatch=routed on an
    excursion): ln2 and the gate then run there, token-split, and each token goes only to
    its experts' GPUs. Anywhere else dispatch=routed is the default's behaviour."""
    return block.excursion and block.dispatch is MoeDispatch.ROUTED


def router_tokens(program: Program, block: BlockSteps) -> list[int]:
    """Tokens the router (ln2, gate) of a routed excursion handles on each input GPU: its
    own tokens after dp replicas (input_tokens), else split(T, |X|)[r]."""
    if block.input_dp > 1:
        return input_tokens(program, block)
    return split_evenly(tokens(program), len(block.input_gpus))


def _router_steps(
    program: Program, block: BlockSteps, x: tuple[Value, ...], v: dict[str, Value]
) -> tuple[Step, ...]:
    """ln2 and the gate: on every GPU of the block, each on all T tokens (the gate is
    replicated); after dp replicas on the same GPUs, each on its own T_r tokens; routed: on
    the input GPUs, rank r on its router_tokens."""
    assert program.model.experts is not None
    D = dims(program)
    experts = count(program.model.experts, "E")
    if not routed_dispatch(block) and not dp_input(block):
        return (
            same("ln2", block, elementwise(times(D.tokens, D.hidden)), reads=x, writes=(v["ln2"],)),
            same(
                "gate",
                block,
                matmul(D.tokens, D.hidden, experts),
                reads=(v["ln2"],),
                writes=(v["route"],),
            ),
        )
    senders = replace(block, gpus=block.input_gpus)
    if block.input_dp > 1:
        rows = input_token_labels(program, block)
    else:
        rows = [
            D.tokens if t == tokens(program) else count(t) for t in router_tokens(program, block)
        ]
    ln2 = [elementwise(times(t, D.hidden)) for t in rows]
    gate = [matmul(t, D.hidden, experts) for t in rows]
    return (
        per_gpu("ln2", senders, ln2, reads=x, writes=(v["ln2"],)),
        per_gpu("gate", senders, gate, reads=(v["ln2"],), writes=(v["route"],)),
    )


# (part, term, reads, writes) of one expert step
ExpertPart = tuple[str, CostTerm, tuple[Value, ...], tuple[Value, ...]]


def _expert_parts(
    program: Program,
    block: BlockSteps,
    local: int,
    t_e: Label,
    ffn: Label,
    routed: tuple[Value, ...],
) -> list[ExpertPart]:
    """(part, term, reads, writes) of local expert `local` on every rank of `block` (the
    ranks running it): up (and gate) read the routed tokens, act reads them, down reads
    act."""
    assert program.model.expert_ffn is not None
    hid = dims(program).hidden
    rows = (("experts", len(block.gpus)), ("tokens", expert_tokens(program)))
    by_expert = split("experts")

    def out(part: str, last: tuple[str, int]) -> Value:
        return value(program, block, f"expert{local}_{part}", (*rows, last), by_expert)

    fe = ("ffn", program.model.expert_ffn)
    up, act, down = out("up", fe), out("act", fe), out("down", ("hidden", program.model.hidden))
    parts: list[ExpertPart] = [(".up", matmul(t_e, hid, ffn), routed, (up,))]
    act_reads: tuple[Value, ...] = (up,)
    if program.model.activation is Activation.SWIGLU:
        gate = out("gate", fe)
        parts.append((".gate", matmul(t_e, hid, ffn), routed, (gate,)))
        act_reads = (up, gate)
    parts += [
        (".act", elementwise(times(t_e, ffn)), act_reads, (act,)),
        (".down", matmul(t_e, ffn, hid), (act,), (down,)),
    ]
    return parts


def _shared_expert_steps(
    program: Program, block: BlockSteps, reads: tuple[Value, ...], shares: list[int]
) -> list[Step]:
    """The shared experts on the ranks of the group with a token: rank i runs them on its
    T_s = shares[i] tokens (split(T, e)[i], or its own T_r after dp replicas) with the
    whole shared weights (n_s experts of inner Fs, one product of inner n_s·Fs each); with
    shared_expert_gate, `.score` Get_Time(T_s, H, 1). A rank with no token skips them."""
    model = program.model
    if not model.shared_experts:
        return []
    assert model.shared_expert_ffn is not None
    d = dims(program)
    n_s, f_s = model.shared_experts, model.shared_expert_ffn
    inner = count(f_s, "Fs") if n_s == 1 else times(count(n_s, "n_s"), count(f_s, "Fs"))
    ranks = [rank for rank, t in enumerate(shares) if t]
    if dp_input(block):
        labels = input_token_labels(program, block)
    else:
        labels = [d.tokens if t == tokens(program) else count(t) for t in shares]
    rows = [labels[rank] for rank in ranks]
    on = _on_ranks(block, ranks)
    by_token = split("tokens")

    def out(part: str, last: tuple[str, int]) -> Value:
        return value(program, on, f"shared_{part}", (("tokens", tokens(program)), last), by_token)

    fs = ("shared_ffn", n_s * f_s)
    up, act, down = out("up", fs), out("act", fs), out("down", ("hidden", model.hidden))

    def step(part: str, terms: list[CostTerm], r: tuple[Value, ...], w: Value) -> Step:
        return per_gpu("shared_expert", on, terms, part, reads=r, writes=(w,))

    steps = [step(".up", [matmul(t, d.hidden, inner) for t in rows], reads, up)]
    act_reads: tuple[Value, ...] = (up,)
    if model.activation is Activation.SWIGLU:
        gate = out("gate", fs)
        steps.append(step(".gate", [matmul(t, d.hidden, inner) for t in rows], reads, gate))
        act_reads = (up, gate)
    steps += [
        step(".act", [elementwise(times(t, inner)) for t in rows], act_reads, act),
        step(".down", [matmul(t, inner, d.hidden) for t in rows], (act,), down),
    ]
    if model.shared_expert_gate:
        score = out("score", ("one", 1))
        steps.append(step(".score", [matmul(t, d.hidden, count(1)) for t in rows], reads, score))
    return steps


def _values(program: Program, block: BlockSteps) -> dict[str, Value]:
    """ln2 and the routing, replicated (split by tokens where the tokens are spread: after
    dp replicas, or on the input GPUs of a routed excursion); each rank's expert results
    summed into agg, a partial sum over the ranks when ep > 1 (combine, or the return, sums
    it)."""
    assert program.model.experts is not None
    route = (("tokens", tokens(program)), ("experts", program.model.experts))
    if routed_dispatch(block) or dp_input(block):  # token-split where the tokens are
        by_token, senders = split("tokens"), block.input_gpus
        return {
            "ln2": value(program, block, "moe_ln2", hidden_shape(program), by_token, senders),
            "route": value(program, block, "route", route, by_token, senders),
            "agg": _agg(program, block),
        }
    return {
        "ln2": value(program, block, "moe_ln2", hidden_shape(program)),
        "route": value(program, block, "route", route),
        "agg": _agg(program, block),
    }


def _agg(program: Program, block: BlockSteps) -> Value:
    placement = PARTIAL if block.degree > 1 else REPLICATED
    on = _on_ranks(block, _agg_ranks(program, block))
    return value(program, on, "moe_agg", hidden_shape(program), placement)


def _collectives(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    if block.degree == 1 or block.excursion:
        return block.steps  # one GPU needs no all-to-all; an excursion's tokens come by broadcast
    d = dims(program)
    ranks = count(block.degree)
    if dp_input(block):
        # each GPU sends its own T_r tokens' k copies, and gets them back
        assert program.model.top_k is not None
        most = count(max(input_tokens(program, block)))
        sent_tokens = back_tokens = times(most, count(program.model.top_k, "k"))
    else:
        # dispatch brings each GPU its routed tokens (the shared experts' are there already);
        # combine sends back everything it worked on, the shared experts' tokens included
        sent_tokens = held_tokens(program, block.degree, shared=False)
        back_tokens = held_tokens(program, block.degree)
    payload = times(sent_tokens, d.hidden, d.width)
    term = communication(program, TermKind.ALL_TO_ALL, payload, ranks, gpus=block.gpus)
    back = times(back_tokens, d.hidden, d.width)
    back_term = communication(program, TermKind.ALL_TO_ALL, back, ranks, gpus=block.gpus)
    v = _values(program, block)
    assert program.model.experts is not None
    shape = (
        ("experts", program.model.experts),
        ("tokens", expert_tokens(program)),
        ("hidden", program.model.hidden),
    )
    sent = value(program, block, "moe_in", shape, split("experts"))
    dispatch = joint("dispatch", block, term, reads=(v["ln2"], v["route"]), writes=(sent,))
    routed = {v["ln2"].name: sent, v["route"].name: sent}
    with_dispatch = _reroute_experts(insert_after(block.steps, "gate", dispatch), routed)
    placement: Placement = split("tokens") if dp_input(block) else REPLICATED
    combined = value(program, block, "moe_out", hidden_shape(program), placement)
    combine = joint("combine", block, back_term, reads=(v["agg"],), writes=(combined,))
    with_combine = insert_after(with_dispatch, "expert_agg", combine)
    return reroute(with_combine, with_combine.index(combine) + 1, {v["agg"].name: combined})


def idle_expert_parameters(program: Program, block: BlockSteps) -> dict[int, int]:
    """Weight elements each GPU of the block holds for experts that run no operation (a
    decode step's idle experts, and the shared experts of a rank with no token): the GPU
    holds them all the same, but no product of theirs names them (dagc/blocks/params.py
    counts weights by the products that run). The GPUs are the block's group's, all of
    them also after a symmetric collapse."""
    model = program.model
    assert model.experts is not None and model.expert_ffn is not None
    products = 3 if model.activation is Activation.SWIGLU else 2
    routed = products * model.hidden * model.expert_ffn
    shared = 0
    if model.shared_experts:
        assert model.shared_expert_ffn is not None
        shared = products * model.hidden * model.shared_experts * model.shared_expert_ffn
        shared += model.hidden if model.shared_expert_gate else 0
    gpus = program.group(block.group).gpus
    local = model.experts // block.degree
    run, shares = experts_run(program, block.degree), _shared_shares(program, block)
    idle = {
        gpu: (local - run[rank]) * routed + (0 if shares[rank] else shared)
        for rank, gpu in enumerate(gpus)
    }
    return {gpu: n for gpu, n in idle.items() if n}


def _reroute_experts(steps: tuple[Step, ...], via: dict[str, Value]) -> tuple[Step, ...]:
    """The routed experts read what dispatch sends them; the shared experts keep reading
    the tokens of their own rank (ln2, which every rank holds)."""
    return tuple(reroute((step,), 0, via)[0] if step.base == "expert" else step for step in steps)


MODULE = BlockModule(
    kind=BlockKind.MOE,
    summary="ln2, gate, the local experts in turn, expert_agg, res2; dispatch and combine",
    compute=_compute,
    needs=("experts", "top_k", "expert_ffn"),
    options={"dispatch": ("broadcast", "routed")},
    collectives=_collectives,
    weight_products=frozenset({"gate", "expert", "shared_expert"}),
    # expert_agg (ln2 and the gate run on the input GPUs of a routed excursion)
    least_ops_per_rank=1,
    least_ops_per_expert=3,  # up, act, down
    grad_only=frozenset({"res2", "expert_agg"}),
    backward_all_reduce="all_reduce_moe_bwd",
    idle_weights=idle_expert_parameters,
)
