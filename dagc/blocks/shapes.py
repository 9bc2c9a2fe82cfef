"""The program's dimensions as labelled values, and the terms blocks are built from.

Shared by the block modules (dagc/blocks/) and the passes (dagc/passes/): T, Bm, S, H, d, w
as labels (so formulas print `B×S` rather than a bare number), expert token counts under
balanced routing, and communication terms marked inter-node when their GPUs span nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dagc.ir.logical import Mode, Program
from dagc.ir.steps import BlockSteps
from dagc.ir.terms import CostTerm, Label, TermKind
from dagc.ir.values import REPLICATED, Dim, Placement, Value, residual_name, split
from dagc.split import split_evenly


def tokens(program: Program) -> int:
    """T = Bm·S, tokens per micro-batch."""
    return program.workload.tokens_per_microbatch


def rank_sequences(program: Program, block: BlockSteps) -> list[int]:
    """Sequences of the micro-batch each rank of `block.gpus` works on: Bm on every rank,
    or, for a block with dp replicas, split(Bm, dp)[j] on the ranks of replica j (rank r
    is in replica r // degree)."""
    bm = program.workload.microbatch_size
    if block.dp == 1:
        return [bm] * len(block.gpus)
    shares = split_evenly(bm, block.dp)
    return [shares[rank // block.degree] for rank in range(len(block.gpus))]


def rank_tokens(program: Program, block: BlockSteps) -> list[int]:
    """Tokens each rank of `block.gpus` works on: rank_sequences × S."""
    return [n * program.workload.seq for n in rank_sequences(program, block)]


def input_tokens(program: Program, block: BlockSteps) -> list[int]:
    """Tokens of the block's input each rank of `block.input_gpus` holds: T on every one,
    or, when the block before it ran with dp replicas (`block.input_dp`), rank r's
    split(Bm, input_dp)[r // (|input_gpus| / input_dp)] sequences × S."""
    n, dp = len(block.input_gpus), block.input_dp
    if dp == 1:
        return [tokens(program)] * n
    shares = split_evenly(program.workload.microbatch_size, dp)
    per_replica = n // dp
    return [shares[rank // per_replica] * program.workload.seq for rank in range(n)]


def element_bytes(program: Program) -> int:
    """w, bytes per element."""
    return program.workload.dtype.bytes


def expert_tokens(program: Program) -> int:
    """T_e = ceil(T·k/E · capacity_factor): tokens each expert receives (balanced routing)."""
    model = program.model
    assert model.experts is not None and model.top_k is not None
    factor = Fraction(repr(model.capacity_factor))  # the decimal the user wrote, exactly
    return math.ceil(Fraction(tokens(program) * model.top_k, model.experts) * factor)


def shared_tokens(program: Program, ep: int) -> list[int]:
    """T_s of each rank: rank i of the moe group runs the shared experts on split(T, e)[i]
    tokens (none without shared experts)."""
    if not program.model.shared_experts:
        return [0] * ep
    return split_evenly(tokens(program), ep)


def active_experts(program: Program) -> int | None:
    """A = ceil(T·k·cf) in a decode step when A < E: only A experts receive a token (one
    each); None when every expert receives T_e tokens (A ≥ E, and always in prefill)."""
    model = program.model
    assert model.experts is not None and model.top_k is not None
    if program.workload.mode is not Mode.DECODE:
        return None
    factor = Fraction(repr(model.capacity_factor))
    active = math.ceil(tokens(program) * model.top_k * factor)
    return active if active < model.experts else None


def experts_run(program: Program, ep: int) -> list[int]:
    """How many of its local experts each rank of a moe group runs: all E/e, or, with A
    active experts in decode (active_experts), split(A, e)[i] on rank i (its first
    local experts)."""
    assert program.model.experts is not None
    active = active_experts(program)
    if active is None:
        return [program.model.experts // ep] * ep
    return split_evenly(active, ep)


def tokens_held_by_expert_gpu(
    program: Program, ep: int, shared: bool = True, shares: list[int] | None = None
) -> int:
    """Tokens one MoE GPU works on: min(T, T_e·E/e), plus its ceil(T/e) shared-expert
    tokens with shared experts: min(T, T_e·E/e + ceil(T/e)). `shared=False`: the routed
    tokens alone (what an all-to-all dispatch brings it). In decode with A active experts,
    T_e = 1 and E/e becomes ceil(A/e), the most any rank runs. `shares`: the shared-expert
    tokens of each rank, when not split(T, e)."""
    routed = expert_tokens(program) * max(experts_run(program, ep))
    if shares is None:
        shares = shared_tokens(program, ep)
    extra = max(shares) if shared and program.model.shared_experts else 0
    return min(tokens(program), routed + extra)


def nodes_spanned(program: Program, gpus: tuple[int, ...]) -> int:
    """How many nodes (of node_size consecutive GPU ids) these GPUs live on."""
    size = program.hardware.node_size
    return len({gpu // size for gpu in gpus})


def communication(
    program: Program, kind: TermKind, *args: Label, gpus: tuple[int, ...]
) -> CostTerm:
    """A communication term, marked inter-node when `gpus` span more than one node."""
    values = tuple(math.prod(v for _, v in label) for label in args)
    return CostTerm(kind, values, nodes_spanned(program, gpus), labels=tuple(args))


def times(*labels: Label) -> Label:
    """The product of labelled dimensions."""
    return tuple(factor for label in labels for factor in label)


def count(value: int, symbol: str = "") -> Label:
    """A labelled number: a model symbol (`H`) or a plain count (a rank's 3 heads)."""
    return ((symbol, value),)


@dataclass(frozen=True)
class Dims:
    """The program's dimensions as labels: T (tokens), Bm, S, H, d, w, and the keys each
    query attends over (C in a decode step, S otherwise)."""

    tokens: Label
    batch: Label
    seq: Label
    hidden: Label
    head_dim: Label
    width: Label
    context: Label


def dims(program: Program) -> Dims:
    """Labelled dimensions of `program` (Bm is `B` with one micro-batch, else `B/m`).

    A decode step (mode DECODE) has one query token per sequence: its tokens are `B` (or
    `B/m`) alone, and its context `C` (the keys each new token attends over)."""
    workload = program.workload
    batch = count(workload.microbatch_size, "B" if workload.microbatches == 1 else "B/m")
    return _dims(program, batch)


def rank_dims(program: Program, block: BlockSteps) -> list[Dims]:
    """`dims(program)` as each rank of `block.gpus` works on it: the same on every rank,
    or, for a block with dp replicas, its replica's Bm_r = rank_sequences sequences (a
    plain count: the rank's share) and T_r = Bm_r·S tokens."""
    if block.dp == 1:
        return [dims(program)] * len(block.gpus)
    shares = rank_sequences(program, block)
    made = {n: _dims(program, count(n)) for n in set(shares)}
    return [made[n] for n in shares]


def _dims(program: Program, batch: Label) -> Dims:
    workload, model = program.workload, program.model
    seq = count(workload.seq, "S")
    decode = workload.mode is Mode.DECODE
    context = count(workload.context or 1, "C") if decode else seq
    return Dims(
        tokens=batch if decode else times(batch, seq),
        batch=batch,
        seq=seq,
        hidden=count(model.hidden, "H"),
        head_dim=count(model.head_dim or 1, "d"),
        width=count(element_bytes(program), "w"),
        context=context,
    )


def decoding(program: Program) -> bool:
    """Whether `program` is one decode step (mode DECODE; a SERVE program's decode phase)."""
    return program.workload.mode is Mode.DECODE


def token_placement(block: BlockSteps, placement: Placement = REPLICATED) -> Placement:
    """How a block's per-token values lie on its GPUs: split by tokens over its dp replicas
    (tp = 1: each rank holds its own tokens), else `placement`."""
    return split("tokens") if block.dp > 1 else placement


def activation_bytes(program: Program) -> Label:
    """T·H·w: one micro-batch's activations."""
    d = dims(program)
    return times(d.tokens, d.hidden, d.width)


def held_tokens(
    program: Program, ep: int, shared: bool = True, shares: list[int] | None = None
) -> Label:
    """tokens_held_by_expert_gpu as a label: T when every token reaches the GPU."""
    held = tokens_held_by_expert_gpu(program, ep, shared, shares)
    return dims(program).tokens if held == tokens(program) else count(held)


def value(
    program: Program,
    block: BlockSteps,
    base: str,
    shape: tuple[tuple[str, int], ...],
    placement: Placement = REPLICATED,
    gpus: tuple[int, ...] | None = None,
) -> Value:
    """The value `{base}_l{layer}` of `block`: `shape` as (dim, size), on the block's GPUs."""
    return Value(
        f"{base}_l{block.layer}",
        tuple(Dim(name, size) for name, size in shape),
        program.workload.dtype.value,
        block.gpus if gpus is None else gpus,
        placement,
    )


def hidden_shape(program: Program) -> tuple[tuple[str, int], ...]:
    """(tokens T, hidden H): the shape of the residual stream."""
    return (("tokens", tokens(program)), ("hidden", program.model.hidden))


def sequence_parallel(program: Program, block: BlockSteps) -> bool:
    """Whether a block runs Megatron's sequence parallelism: a training program with
    `sequence_parallel`, a tensor-parallel (tp > 1) attention or mlp block."""
    training = program.training
    return (
        training is not None
        and training.sequence_parallel
        and block.degree > 1
        and str(block.kind) in ("attention", "mlp")
    )


def residual_in(program: Program, block: BlockSteps) -> tuple[Value, ...]:
    """The residual-stream value the block reads on its input GPUs: replicated, or split by
    tokens when the block before it ran with dp replicas (`input_dp`); none for the
    program's first block, whose input no step writes."""
    if not block.input_value:
        return ()
    dims_ = tuple(Dim(name, size) for name, size in hidden_shape(program))
    dtype = program.workload.dtype.value
    placement = split("tokens") if block.input_dp > 1 else REPLICATED
    return (Value(block.input_value, dims_, dtype, block.input_gpus, placement),)


def residual_out(program: Program, block: BlockSteps, gpus: tuple[int, ...]) -> Value:
    """The residual-stream value the block writes, replicated on `gpus`, or split by tokens
    where they are spread (`tokens_spread`: dp replicas)."""
    dims_ = tuple(Dim(name, size) for name, size in hidden_shape(program))
    name = residual_name(str(block.kind), block.layer)
    placement = split("tokens") if tokens_spread(block) else REPLICATED
    return Value(name, dims_, program.workload.dtype.value, gpus, placement)


def tokens_spread(block: BlockSteps) -> bool:
    """Whether the block's residual output is spread over its GPUs by tokens: a block with
    dp replicas, or a moe block after one (it leaves each GPU its own tokens)."""
    return block.dp > 1 or (str(block.kind) == "moe" and block.input_dp > 1)


def rank_token_labels(program: Program, block: BlockSteps) -> list[Label]:
    """rank_tokens as labels: T on a rank that works on the whole micro-batch, else its
    replica's T_r (rank_dims)."""
    return [d.tokens for d in rank_dims(program, block)]


def input_token_labels(program: Program, block: BlockSteps) -> list[Label]:
    """input_tokens as labels, as rank_token_labels."""
    seq = program.workload.seq
    return [
        dims(program).tokens if n == tokens(program) else _dims(program, count(n // seq)).tokens
        for n in input_tokens(program, block)
    ]
