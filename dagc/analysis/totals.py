"""The model's own totals: parameters, active parameters, model FLOPs and KV-cache size.

These are properties of the model and the blocks the program runs, not of how the program
shards them: they come from the logical IR (`Program`) alone, by the closed forms of
docs/analyze.md ("Model totals"), never from the device DAG. MFU divides `model_flops` by
time and peak; HFU divides the FLOPs the device DAG executes, which exceed the model's by
the extras docs/semantics.md lists ("Model and executed FLOPs").

Symbols: H hidden, nh heads, nkv kv_heads, d head_dim (d_qk; d_v the value size of a
head), F ffn, E experts, k top_k, Fe expert_ffn, n_s shared experts of inner Fs, V vocab,
p = 3 matrices per MLP or expert with swiglu else 2, B batch, S seq, w bytes per element.

A decode step (mode DECODE: S = 1, C = the keys each new token attends over, itself
included): model_flops = 2·B·(the active matrix-product weights), the projections on the
T = B new tokens, plus per attention layer 2·B·nh·C·(d_qk + d_v) (each token against its C
keys; no mask applies). MLA decodes in the absorbed form: kv_b is not applied to the new
token; instead q_absorb (2·B·nh·nope·r_kv) and v_absorb (2·B·nh·r_kv·d_v), which are
kv_b's weights (r_kv·nh·(nope + d_v)) times 2·B, so the products' term is unchanged; the
core is 2·B·nh·C·(2·r_kv + rope) (scores over the latent and the rope key, weights·latent).
"""

from __future__ import annotations

from dataclasses import dataclass

from dagc.ir.logical import Activation, AttentionMask, Block, BlockKind, Mode, Model, Program


@dataclass(frozen=True, slots=True)
class ModelTotals:
    """What the model is and what one forward pass of the whole batch costs it.

    params: every weight of the blocks the program runs, unsharded, each counted once.
    active_params: params less the routed experts a token does not visit ((E − k) of E).
    model_flops: 2 × tokens × the active matrix-product weights, plus attention's
    query-key and weights-value products (B·S tokens: every micro-batch together; a decode
    step's B tokens against C keys each, see the module docstring).
    kv_cache_bytes_per_token: the keys and values (MLA: the compressed latent and the
    rope key) one token leaves in a KV cache, summed over every attention layer.
    """

    params: int
    active_params: int
    model_flops: int
    kv_cache_bytes_per_token: int


@dataclass(slots=True)
class _Sums:
    params: int = 0
    inactive: int = 0  # parameters of routed experts a token does not visit
    product_weights: int = 0  # active matrix-product weights: FLOPs are 2 per token each
    core_flops: int = 0  # attention's S×S products over the whole batch
    kv_elements: int = 0  # KV-cache elements per token


def model_totals(program: Program) -> ModelTotals:
    """The totals of `program`'s model, counting the blocks its layer ranges run.

    embed runs once (before layer 0) and lm_head once (after the last layer), whatever
    range they are written in; the final norm (H) comes with lm_head. A table shared by
    embed and lm_head (`tied_embeddings`) counts once as a parameter, but lm_head's
    product over it still costs FLOPs.
    """
    model, workload = program.model, program.workload
    sums = _Sums()
    has_embed = False
    has_head = False
    last = model.layers - 1
    for layer_range in program.ranges:
        for layer in layer_range.layer_indices:
            for block in layer_range.blocks:
                if block.kind is BlockKind.EMBED:
                    has_embed = has_embed or layer == 0
                elif block.kind is BlockKind.LM_HEAD:
                    has_head = has_head or layer == last
                else:
                    _layer_block(model, block, workload.batch, workload.seq, sums)
    if workload.mode is Mode.DECODE:
        assert workload.context is not None
        sums.core_flops = _decode_core_flops(program, workload.batch, workload.context)
    table = model.hidden * (model.vocab or 0)
    if has_embed:
        sums.params += table  # a lookup: no FLOPs
    if has_head:
        sums.params += model.hidden  # the final norm
        if not (model.tied_embeddings and has_embed):
            sums.params += table
        sums.product_weights += table
    tokens = workload.batch * workload.seq
    return ModelTotals(
        params=sums.params,
        active_params=sums.params - sums.inactive,
        model_flops=2 * tokens * sums.product_weights + sums.core_flops,
        kv_cache_bytes_per_token=sums.kv_elements * workload.dtype.bytes,
    )


def _decode_core_flops(program: Program, batch: int, context: int) -> int:
    """A decode step's attention cores: 2·B·nh·C·(d_qk + d_v) per attention layer, MLA's
    absorbed 2·B·nh·C·(2·r_kv + rope)."""
    model = program.model
    nh = model.heads or 0
    if model.kv_lora_rank is not None:
        per_key = 2 * model.kv_lora_rank + (model.qk_rope_head_dim or 0)
    else:
        per_key = (model.head_dim or 0) + (model.value_head_dim or 0)
    layers = sum(
        1
        for layer_range in program.ranges
        for _ in layer_range.layer_indices
        for block in layer_range.blocks
        if block.kind is BlockKind.ATTENTION
    )
    return layers * 2 * batch * nh * context * per_key


def _products(model: Model) -> int:
    """p: matrices of an MLP or an expert (up, down, and gate with swiglu)."""
    return 3 if model.activation is Activation.SWIGLU else 2


def _layer_block(model: Model, block: Block, batch: int, seq: int, sums: _Sums) -> None:
    """Add one layer's attention, mlp or moe block."""
    h, p = model.hidden, _products(model)
    if block.kind is BlockKind.ATTENTION:
        _attention(model, block, batch, seq, sums)
    elif block.kind is BlockKind.MLP:
        ffn = model.ffn or 0
        sums.params += h + p * h * ffn  # ln2, up/down(/gate)
        sums.product_weights += p * h * ffn
    elif block.kind is BlockKind.MOE:
        experts, top_k, fe = model.experts or 0, model.top_k or 0, model.expert_ffn or 0
        expert = p * h * fe
        shared = (model.shared_experts or 0) * p * h * (model.shared_expert_ffn or fe)
        gate = h if model.shared_expert_gate else 0  # an [H, 1] product
        router_bias = experts if model.router_bias else 0
        sums.params += h + h * experts + router_bias + experts * expert + shared + gate
        sums.inactive += (experts - top_k) * expert
        sums.product_weights += h * experts + top_k * expert + shared + gate


def _attention(model: Model, block: Block, batch: int, seq: int, sums: _Sums) -> None:
    """ln1, the projections, biases, qk_norm, the S×S products and the KV cache."""
    h, nh = model.hidden, model.heads or 0
    d_qk = model.head_dim or 0
    d_v = model.value_head_dim or 0
    nkv = model.kv_heads or nh
    if model.kv_lora_rank is not None:  # MLA (DeepSeek-V2/V3)
        kv_lora, rope = model.kv_lora_rank, model.qk_rope_head_dim or 0
        nope = model.qk_nope_head_dim or 0
        if model.q_lora_rank is not None:
            q_lora = model.q_lora_rank
            query = h * q_lora + q_lora * nh * d_qk  # q_a, q_b
            norms = q_lora + kv_lora  # q_a_norm, kv_a_norm
        else:
            query = h * nh * d_qk  # q
            norms = kv_lora  # kv_a_norm
        key_value = h * (kv_lora + rope) + kv_lora * nh * (nope + d_v)  # kv_a, kv_b
        products = query + key_value + nh * d_v * h  # and o
        sums.kv_elements += kv_lora + rope
    else:
        products = h * nh * d_qk + h * nkv * (d_qk + d_v) + nh * d_v * h  # q, k, v, o
        norms = 0
        sums.kv_elements += nkv * (d_qk + d_v)  # 2·nkv·d
    # biases are fused into the products' epilogues: parameters without FLOPs
    biases = nh * d_qk + nkv * (d_qk + d_v) if model.qkv_bias else 0
    biases += h if model.o_bias else 0
    qk_norm = 2 * d_qk if model.qk_norm else 0
    sums.params += h + products + norms + biases + qk_norm  # h: ln1
    sums.product_weights += products
    pairs = seq * (seq + 1) // 2 if block.mask is AttentionMask.CAUSAL else seq * seq
    sums.core_flops += 2 * batch * nh * pairs * (d_qk + d_v)
