"""The KV cache of an attention layer: its bytes per token and its value.

One layer's cache per token, unsplit (c_layer): nkv·(d_qk + d_v)·w = 2·nkv·d·w for
grouped or multi-head attention, (kv_lora_rank + qk_rope_head_dim)·w under MLA (the
latent and the rope key every head shares). Rank i of an attention block with tp = t holds
kv_i·(d_qk + d_v)·w per token, kv_i = split(nkv, t)[i mod t] when nkv ≥ t, else 1 (the
K/V heads replicated, as the projections are); under MLA every rank holds the whole latent.

Shared by the capacity analysis (dagc/analysis/capacity.py), the KV handoff of a
disaggregated serve (dagc/passes/transfers.py) and whatever reads the cache.
"""

from __future__ import annotations

from dagc.ir.logical import Model, Program
from dagc.ir.values import REPLICATED, Dim, Placement, Value, split
from dagc.split import split_evenly


def layer_kv_bytes(model: Model, element_bytes: int) -> int:
    """c_layer: one layer's KV cache per token, unsplit."""
    if model.latent_attention:
        assert model.kv_lora_rank is not None and model.qk_rope_head_dim is not None
        return (model.kv_lora_rank + model.qk_rope_head_dim) * element_bytes
    assert model.heads is not None
    nkv = model.kv_heads or model.heads
    return nkv * _head_width(model) * element_bytes


def rank_kv_bytes(model: Model, degree: int, rank: int, element_bytes: int) -> int:
    """Per-token bytes of one layer's KV cache that rank `rank` of an attention block with
    tp = `degree` holds (its tensor-parallel rank is `rank` mod `degree`)."""
    if model.latent_attention:
        return layer_kv_bytes(model, element_bytes)
    assert model.heads is not None
    nkv = model.kv_heads or model.heads
    kv = split_evenly(nkv, degree)[rank % degree] if nkv >= degree else 1
    return kv * _head_width(model) * element_bytes


def _head_width(model: Model) -> int:
    """d_qk + d_v: a cached key and value of one head."""
    return (model.head_dim or 0) + (model.value_head_dim or 0)


def cache_value(
    program: Program,
    layer: int,
    *,
    degree: int,
    dp: int,
    gpus: tuple[int, ...],
    context: int,
) -> Value:
    """`kv_cache_l{layer}` of one micro-batch on an attention group (tp = `degree`, `dp`
    replicas, on `gpus`) holding `context` tokens per sequence: (sequences Bm, context,
    kv_heads, kv_dim d_qk + d_v) split by kv heads over tp (one replicated head when
    nkv < t), or (sequences, context, latent r_kv + d_r) replicated under MLA; split by
    sequences over dp replicas."""
    model, workload = program.model, program.workload
    rows = (Dim("sequences", workload.microbatch_size), Dim("context", context))
    placement: Placement = REPLICATED
    shape: tuple[Dim, ...]
    if model.latent_attention:
        assert model.kv_lora_rank is not None and model.qk_rope_head_dim is not None
        shape = (*rows, Dim("latent", model.kv_lora_rank + model.qk_rope_head_dim))
    else:
        assert model.heads is not None
        nkv = model.kv_heads or model.heads
        shared = nkv < degree
        shape = (*rows, Dim("kv_heads", 1 if shared else nkv), Dim("kv_dim", _head_width(model)))
        placement = REPLICATED if shared or degree == 1 else split("kv_heads")
    if dp > 1:
        placement = split("sequences")
    return Value(f"kv_cache_l{layer}", shape, workload.dtype.value, gpus, placement)
