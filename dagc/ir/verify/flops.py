"""The matmul FLOPs a program must expand to, from the logical IR alone.

FLOP conservation (docs/semantics.md): summed over all GPUs and micro-batches, matmul
FLOPs (matrix products and fused attention kernels) equal the unsharded model's plus
exactly these extras: the gate replicated on every GPU of an MoE group (not after dp
replicas on its GPUs, where each GPU routes its own tokens, nor on a routed excursion),
K/V projections replicated when nkv < tp, MLA's down-projections (q_a, kv_a) replicated on
every tp rank ((tp − 1) copies), expert tokens rounded up by the capacity rule, and
explicit attention under a causal mask computing all S·S query-key pairs (a fused kernel
computes S·(S+1)/2). In a decode step with A = ceil(T·k·cf) < E active experts the experts
compute A token slots (one token each), not E·T_e. Blocks with dp replicas (attention data
parallelism) split the tokens, not the work: no extra. Norms (qk_norm, MLA's latent norms)
are elementwise: no FLOPs. This module derives that sum from the model, the workload and
the placement, without the passes' helpers, so that the device verifier compares two
independent answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dagc.ir.logical import (
    Activation,
    AttentionKernel,
    AttentionMask,
    Block,
    BlockKind,
    Mode,
    MoeDispatch,
    Program,
    Recompute,
)

# (layer, block kind) -> matmul FLOPs of one micro-batch
FlopTable = dict[tuple[int, str], int]


@dataclass(frozen=True, slots=True)
class _Shape:
    """The symbols of the semantics one micro-batch needs: Bm, S and H (T = Bm·S); a decode
    step's context C (None outside decode)."""

    batch: int
    seq: int
    hidden: int
    context: int | None = None

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def expected_flops_per_block(program: Program) -> FlopTable:
    """Matmul FLOPs of one micro-batch, per (layer, block kind), as the semantics state them.

    embed runs only for layer 0 and lm_head only for the last layer, whatever range they
    were written in; embed has no matmul.
    """
    workload = program.workload
    context = workload.context if workload.mode is Mode.DECODE else None
    shape = _Shape(workload.microbatch_size, workload.seq, program.model.hidden, context)
    last = program.model.layers - 1
    table: FlopTable = {}
    spread = False  # whether the tokens are spread over dp replicas (the last non-moe block's)
    for layer_range in program.ranges:
        for layer in layer_range.layer_indices:
            previous: Block | None = None  # the block before, in this layer
            for block in layer_range.blocks:
                if block.kind is BlockKind.EMBED and layer != 0:
                    continue
                if block.kind is BlockKind.LM_HEAD and layer != last:
                    continue
                key = (layer, block.kind.value)
                # an excursion: a moe block reached from another group's block of its layer
                excursion = (
                    block.kind is BlockKind.MOE
                    and previous is not None
                    and previous.group != block.group
                )
                # routed, its gate runs once, token-split over the sending GPUs; after dp
                # replicas on its own GPUs, once too: each GPU routes its own tokens
                once = (excursion and block.dispatch is MoeDispatch.ROUTED) or (
                    block.kind is BlockKind.MOE and spread and not excursion
                )
                table[key] = table.get(key, 0) + _block_flops(program, block, shape, once)
                if not excursion:  # an excursion leaves the tokens where they were
                    previous = block
                if block.kind is not BlockKind.MOE:
                    spread = block.dp > 1
    return table


def _block_flops(program: Program, block: Block, shape: _Shape, routed: bool) -> int:
    if block.kind is BlockKind.ATTENTION:
        return _attention_flops(program, block, shape)
    if block.kind is BlockKind.MLP:
        ffn = program.model.ffn or 0
        return 2 * shape.tokens * shape.hidden * ffn * _products(program)
    if block.kind is BlockKind.MOE:
        return _moe_flops(program, 1 if routed else block.degree, shape)
    if block.kind is BlockKind.LM_HEAD:
        return 2 * shape.tokens * shape.hidden * (program.model.vocab or 0)
    return 0  # embed: a lookup, no matmul


def _products(program: Program) -> int:
    """Matrix products of an MLP or expert: up and down, plus gate with swiglu."""
    return 3 if program.model.activation is Activation.SWIGLU else 2


def _attention_flops(program: Program, block: Block, shape: _Shape) -> int:
    model = program.model
    if model.kv_lora_rank is not None:
        return _latent_attention_flops(program, block, shape)
    tp = block.degree
    heads = model.heads or 0
    kv_heads = model.kv_heads or heads
    d = model.head_dim or shape.hidden // max(heads, 1)
    t, h = shape.tokens, shape.hidden
    projections = 2 * t * h * heads * d + 2 * 2 * t * h * kv_heads * d + 2 * t * heads * d * h
    core = _core_flops(block, shape, heads, d, d)
    # With fewer KV heads than ranks each rank computes one: tp - nkv extra K and V heads.
    replicated_kv = 2 * 2 * t * h * d * max(tp - kv_heads, 0)
    return projections + core + replicated_kv


def _core_flops(block: Block, shape: _Shape, heads: int, d_qk: int, d_v: int) -> int:
    """Q·Kᵀ and weights·V of every head. Explicit products compute all S·S query-key pairs
    (masked or not); a fused kernel computes S·(S+1)/2 under a causal mask. A decode step:
    each of the Bm new tokens against its C keys, whatever the kernel."""
    if shape.context is not None:
        return 2 * shape.batch * heads * shape.context * (d_qk + d_v)
    s = shape.seq
    causal = block.kernel is AttentionKernel.FUSED and block.mask is AttentionMask.CAUSAL
    pairs = s * (s + 1) // 2 if causal else s * s
    return 2 * shape.batch * heads * pairs * (d_qk + d_v)


def _latent_attention_flops(program: Program, block: Block, shape: _Shape) -> int:
    """Multi-head latent attention: the down-projections (q_a, kv_a) run whole on every
    one of the tp ranks, (tp - 1) copies beyond the model's; the up-projections, the core
    and o_proj split by heads. A decode step (S = 1, T = Bm, C keys) in the absorbed form
    has no kv_b but q_absorb (2·T·nh·nope·r_kv) and v_absorb (2·T·nh·r_kv·d_v), and its
    core is 2·Bm·nh·C·(2·r_kv + rope), whatever the kernel. Attention data parallelism (dp
    replicas, tp = 1) splits tokens, not work: no extra."""
    model = program.model
    assert model.kv_lora_rank is not None and model.heads is not None
    nope, rope = model.qk_nope_head_dim or 0, model.qk_rope_head_dim or 0
    d_v, heads, tp = model.v_head_dim or 0, model.heads, block.degree
    t, h = shape.tokens, shape.hidden
    if model.q_lora_rank is None:
        query = 2 * t * h * heads * (nope + rope)
    else:
        q_a = 2 * t * h * model.q_lora_rank
        query = tp * q_a + 2 * t * model.q_lora_rank * heads * (nope + rope)
    kv_a = 2 * t * h * (model.kv_lora_rank + rope)
    kv_b = 2 * t * model.kv_lora_rank * heads * (nope + d_v)
    o_proj = 2 * t * heads * d_v * h
    if shape.context is not None:
        # decode, absorbed: q_absorb (nope -> latent) and v_absorb (latent -> d_v) per head
        # instead of kv_b; scores over latent + rope, weights·latent
        r_kv = model.kv_lora_rank
        q_absorb = 2 * heads * t * nope * r_kv
        v_absorb = 2 * heads * t * r_kv * d_v
        core = 2 * shape.batch * heads * shape.context * (2 * r_kv + rope)
        return query + tp * kv_a + q_absorb + v_absorb + o_proj + core
    core = _core_flops(block, shape, heads, nope + rope, d_v)
    return query + tp * kv_a + kv_b + o_proj + core


def _moe_flops(program: Program, ep: int, shape: _Shape) -> int:
    model = program.model
    experts, top_k, ffn = model.experts or 0, model.top_k or 0, model.expert_ffn or 0
    t, h = shape.tokens, shape.hidden
    gate = 2 * t * h * experts
    # every rank of the group runs the whole gate (ep = 1 here for a routed excursion,
    # whose gate is token-split over the sending GPUs)
    replicated_gate = (ep - 1) * gate
    routed = t * top_k  # token-expert pairs of the unsharded model
    per_token = 2 * h * ffn * _products(program)
    # Balanced routing with capacity: every expert gets T_e = ceil(T·k/E·cf) token slots;
    # in a decode step with A = ceil(T·k·cf) < E, only A experts get one token each.
    capacity = Fraction(repr(model.capacity_factor))
    slots = experts * math.ceil(Fraction(routed, max(experts, 1)) * capacity)
    active = math.ceil(routed * capacity)
    if program.workload.mode is Mode.DECODE and active < experts:
        slots = active
    # Shared experts: every token once through n_s experts of inner Fs (token-split over
    # the ranks, so no extra), and Qwen2-MoE's [H, 1] shared gate per token.
    shared = 0
    if model.shared_experts:
        inner = model.shared_experts * (model.shared_expert_ffn or ffn)
        shared = 2 * t * h * inner * _products(program)
        shared += 2 * t * h if model.shared_expert_gate else 0
    return gate + replicated_gate + routed * per_token + (slots - routed) * per_token + shared


@dataclass(frozen=True, slots=True)
class TrainingFlops:
    """A training micro-batch's matmul FLOPs per (layer, block kind), by where they run.

    `forward` the forward's (`expected_flops_per_block`); `backward` the input and weight
    gradients' products, exactly twice the forward's; `kernel_recompute` what the fused
    attention backward spends recomputing Q·Kᵀ (2·Bm·h·P·d_qk per attention block),
    counted apart; `recompute` the forward steps rerun by activation recomputation
    (selective: attention's core; full: every transformer block but a moe excursion)."""

    forward: FlopTable
    backward: FlopTable
    kernel_recompute: FlopTable
    recompute: FlopTable


def expected_training_flops(program: Program) -> TrainingFlops:
    """The matmul FLOPs of one training micro-batch; see TrainingFlops."""
    forward = expected_flops_per_block(program)
    if program.training is None:
        return TrainingFlops(forward, {}, {}, {})
    backward = {key: 2 * value for key, value in forward.items() if value}
    workload, model = program.workload, program.model
    shape = _Shape(workload.microbatch_size, workload.seq, model.hidden)
    kernel: FlopTable = {}
    recompute: FlopTable = {}
    mode = program.training.recompute
    for layer_range in program.ranges:
        for layer in layer_range.layer_indices:
            previous: Block | None = None
            for block in layer_range.blocks:
                key = (layer, block.kind.value)
                excursion = (
                    block.kind is BlockKind.MOE
                    and previous is not None
                    and previous.group != block.group
                )
                if not excursion:
                    previous = block
                if block.kind is BlockKind.ATTENTION:
                    heads, d_qk, d_v = _attention_dims(program, shape)
                    core = _core_flops(block, shape, heads, d_qk, d_v)
                    if block.kernel is AttentionKernel.FUSED:
                        # the backward kernel's own Q·Kᵀ: the d_qk share of the core
                        kernel[key] = kernel.get(key, 0) + core * d_qk // (d_qk + d_v)
                    if mode is Recompute.SELECTIVE:
                        recompute[key] = recompute.get(key, 0) + core
                full = block.kind in (BlockKind.ATTENTION, BlockKind.MLP, BlockKind.MOE)
                if mode is Recompute.FULL and full and not excursion:
                    routed = False
                    flops = _block_flops(program, block, shape, routed)
                    recompute[key] = recompute.get(key, 0) + flops
    return TrainingFlops(forward, backward, kernel, recompute)


def _attention_dims(program: Program, shape: _Shape) -> tuple[int, int, int]:
    """Query heads, d_qk and d_v of the model's attention."""
    model = program.model
    heads = model.heads or 0
    if model.kv_lora_rank is not None:
        d_qk = (model.qk_nope_head_dim or 0) + (model.qk_rope_head_dim or 0)
        return heads, d_qk, model.v_head_dim or 0
    d = model.head_dim or shape.hidden // max(heads, 1)
    return heads, d, d


def expected_flops(program: Program) -> int:
    """Matmul FLOPs of the whole batch: every micro-batch, every GPU."""
    return sum(expected_flops_per_block(program).values()) * program.workload.microbatches
