"""The decode step's attention and attention data parallelism (docs/semantics.md, "Decode
step" and "Attention data parallelism").

Every expected number is worked out by hand in the test from the semantics: a decode step
has T = Bm tokens (S = 1), each attending over C keys; attention's core is one
`attn_decode` per GPU, Decode_Attn_Time(Bm, h_i, kv_i, C, d, d), reading the program input
`kv_cache_l{l}`; MLA decodes in the absorbed form (q_absorb, MLA_Decode_Attn_Time,
v_absorb); dp replicas (tp = 1) work on their own split(Bm, dp)[r] sequences.

Decode files are the prefill files below with `mode = decode; context = C` in place of
`seq`; dp files write `attention dp=N` in place of `tp`.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_formula import RandomModel, check_models, numeric, up_set_models
from typer.testing import CliRunner

import dagc
import dagc.api
from dagc.analysis.costs import CostModel, roofline_for
from dagc.analysis.memory import activation_bytes
from dagc.analysis.selection import CostOptions
from dagc.analysis.totals import model_totals
from dagc.backends import formula as printers
from dagc.backends.timeline import shape_text
from dagc.blocks.params import gpu_parameters
from dagc.cli import app
from dagc.compiler import CompileResult
from dagc.expand import expand
from dagc.ir.device import DATA_EDGE, DeviceGraph
from dagc.ir.logical import DType
from dagc.ir.steps import Step, StepProgram
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.values import Dim, PlacementKind, split
from dagc.ir.verify import VerificationError, expected_flops, verify_steps
from dagc.passes.manager import PassOptions, lower_to_steps
from dagc.passes.microbatch import microbatch
from helpers import EXAMPLES

W = 2  # bf16

# -- the programs --------------------------------------------------------------------------

# GQA: H = 512, nh = 8 heads of d = 64, nkv = 2, F = 1024 (swiglu), 2 layers; B = 8 in
# m = 2 micro-batches: Bm = 4 sequences, T = 4 tokens in a decode step.
H, NH, NKV, D, F, L = 512, 8, 2, 64, 1024, 2
B, M, BM, C = 8, 2, 4, 300


def gqa(tp: int = 4, kernel: str = "kernel=fused mask=causal", gpus: int = 4) -> str:
    return f"""\
model m {{ layers = {L}; hidden = {H}; heads = {NH}; kv_heads = {NKV}; ffn = {F};
  activation = swiglu }}
workload {{ batch = {B}; seq = 32; microbatches = {M} }}
devices {{ group g = gpu[0..{gpus - 1}] }}
layers 0..{L - 1} on g {{ attention tp={tp} {kernel}; mlp tp={tp} }}
"""


# MLA (DeepSeek-V3-like, small): H = 256, nh = 8, q_lora 96, kv_lora 64, nope 32, rope 16,
# v_head 32 (d = nope + rope = 48), F = 512 (gelu); B = 6, one micro-batch.
MH, MNH, Q_LORA, KV_LORA, NOPE, ROPE, V_HEAD, MF, MB = 256, 8, 96, 64, 32, 16, 32, 512, 6
MLA = f"""\
model m {{ layers = 2; hidden = {MH}; heads = {MNH}; q_lora_rank = {Q_LORA};
  kv_lora_rank = {KV_LORA}; qk_nope_head_dim = {NOPE}; qk_rope_head_dim = {ROPE};
  v_head_dim = {V_HEAD}; ffn = {MF} }}
workload {{ batch = {MB}; seq = 16 }}
devices {{ group g = gpu[0..1] }}
layers 0..1 on g {{ attention tp=2 kernel=fused mask=causal; mlp tp=2 }}
"""

# Attention alone, for data parallelism (the other blocks' dp is tested with them): B = 10
# in m = 2 micro-batches, Bm = 5 over dp = 4 replicas: split(5, 4) = [2, 1, 1, 1].
DP_TEXT = f"""\
model m {{ layers = 2; hidden = {H}; heads = {NH}; kv_heads = {NKV} }}
workload {{ batch = 10; seq = 16; microbatches = 2 }}
devices {{ group g = gpu[0..3] }}
layers 0..1 on g {{ attention tp=4 kernel=fused mask=causal }}
"""
DP_SHARES = [2, 1, 1, 1]


def decode(text: str, context: int = C, dp: int = 1) -> CompileResult:
    """`text` made a decode step (`mode = decode`, `context = C`, no seq) at context
    `context`; with `dp`, its attention blocks as dp replicas (`attention dp=N`, tp = 1)."""
    made = re.sub(r"seq = \d+", f"mode = decode; context = {context}", text)
    return dagc.compile_text(with_dp(made, dp) if dp > 1 else made, "t.dag")


def prefill_dp(text: str, dp: int) -> CompileResult:
    return dagc.compile_text(with_dp(text, dp), "t.dag")


def with_dp(text: str, dp: int) -> str:
    return re.sub(r"attention tp=\d+", f"attention dp={dp}", text)


def graph_of(compiled: CompileResult, symmetric: bool = False) -> DeviceGraph:
    options = PassOptions(verify_each=True)
    return expand(compiled, options=options, symmetric=symmetric).graph


def terms_by_name(graph: DeviceGraph) -> dict[str, CostTerm]:
    return {graph.name(op): graph.term_of(op) for op in range(graph.num_ops)}


def steps_of(compiled: CompileResult) -> StepProgram:
    return lower_to_steps(compiled.program)


def step(steps: StepProgram, layer: int, name: str) -> Step:
    (found,) = (s for s in steps.steps() if s.layer == layer and s.base + s.part == name)
    return found


def G(m: int, k: int, n: int) -> CostTerm:
    return CostTerm(TermKind.MATMUL, (m, k, n))


def E(n: int) -> CostTerm:
    return CostTerm(TermKind.ELEMENTWISE, (n,))


# -- the terms ---------------------------------------------------------------------------


def test_decode_attention_term_by_hand() -> None:
    # Bm = 4 new tokens, 2 query heads, 1 kv head, C = 300 keys, d = 64: each token's q
    # against its C keys (2·C·d) and weights·V (2·C·d) per head
    term = CostTerm(TermKind.DECODE_ATTENTION, (4, 2, 1, 300, 64, 64))
    assert term.flops() == 2 * 4 * 2 * 300 * (64 + 64) == 614_400
    # the cache of C keys and values of the kv head read once per sequence, q in and o out
    # for the query heads: Bm·C·kv·2·d·w + Bm·h·2·d·w
    assert term.bytes_moved(W) == 4 * 300 * 1 * 128 * 2 + 4 * 2 * 128 * 2 == 309_248


def test_latent_decode_attention_term_by_hand() -> None:
    # Bm = 6, h = 4, C = 300, latent d_c = 64, rope d_r = 16: scores over d_c + d_r, weights
    # times the latent d_c
    term = CostTerm(TermKind.LATENT_DECODE_ATTENTION, (6, 4, 300, 64, 16))
    assert term.flops() == 2 * 6 * 4 * 300 * (64 + 16) + 2 * 6 * 4 * 300 * 64 == 2_073_600
    # one latent cache (d_c + d_r a token) for every head; queries of d_c + d_r in, latent
    # outputs of d_c out
    assert term.bytes_moved(W) == (6 * 300 * 80 + 6 * 4 * (80 + 64)) * 2 == 294_912


def test_batched_matmul_term_by_hand() -> None:
    term = CostTerm(TermKind.BATCHED_MATMUL, (4, 6, 32, 64))
    assert term.flops() == 4 * 2 * 6 * 32 * 64
    assert term.bytes_moved(W) == 4 * (6 * 32 + 32 * 64 + 6 * 64) * 2


def test_roofline_prices_small_batch_decode_by_its_bytes() -> None:
    model = roofline_for("h100", DType.BF16)
    p = model.params
    term = CostTerm(TermKind.DECODE_ATTENTION, (4, 2, 1, 300, 64, 64))
    # 2.0 FLOPs a byte: far below the h100's ridge, so memory-bound
    assert model.term_seconds(term) == pytest.approx(
        309_248 / (p.hbm_bandwidth * p.memory_efficiency)
    )


def test_gqa_decode_step_per_gpu_terms() -> None:
    # tp = 4: h_i = 2, nkv = 2 < 4 so each rank computes one K/V head (replicated)
    terms = terms_by_name(graph_of(decode(gqa(4))))
    for layer in range(L):
        for gpu in range(4):
            for mb in range(M):
                at = f"l{layer}_gpu{gpu}_mb{mb}"
                assert terms[f"ln1_{at}"] == E(BM * H)
                assert terms[f"attn_decode_{at}"] == CostTerm(
                    TermKind.DECODE_ATTENTION, (BM, 2, 1, C, D, D)
                )
                assert terms[f"o_proj_{at}"] == G(BM, 2 * D, H)
                assert terms[f"mlp_up_{at}"] == G(BM, H, F // 4)
                assert terms[f"res1_{at}"] == E(BM * H)
            assert terms[f"all_reduce_attn_l{layer}_mb0"] == CostTerm(
                TermKind.ALL_REDUCE, (BM * H * W, 4)
            )
    # no S×S step in a decode step, whatever the kernel
    assert not [
        n for n in terms if n.startswith(("attn_scores", "softmax", "attn_out", "attn_core"))
    ]


def test_gqa_decode_qkv_products() -> None:
    s = steps_of(decode(gqa(4)))
    assert step(s, 0, "qkv.q").terms == (G(BM, H, 2 * D),) * 4
    assert step(s, 0, "qkv.k").terms == (G(BM, H, D),) * 4
    assert step(s, 0, "qkv.v").terms == (G(BM, H, D),) * 4


@pytest.mark.parametrize("kernel", ["kernel=explicit mask=full", "kernel=explicit mask=causal"])
def test_the_kernel_does_not_change_a_decode_step(kernel: str) -> None:
    fused = steps_of(decode(gqa(4)))
    explicit = steps_of(decode(gqa(4, kernel)))
    assert [(st.base, st.part, st.terms) for st in explicit.steps()] == [
        (st.base, st.part, st.terms) for st in fused.steps()
    ]


def test_tp2_splits_the_kv_heads() -> None:
    # tp = 2: h_i = 4 and kv_i = 1 of nkv = 2 (split, not replicated)
    s = steps_of(decode(gqa(2, gpus=2)))
    attn = step(s, 0, "attn_decode")
    assert attn.terms == (CostTerm(TermKind.DECODE_ATTENTION, (BM, 4, 1, C, D, D)),) * 2
    (cache,) = [v for v in s.inputs if v.name == "kv_cache_l0"]
    assert cache.placement == split("kv_heads")
    assert cache.dims == (
        Dim("sequences", BM),
        Dim("context", C - 1),
        Dim("kv_heads", NKV),
        Dim("kv_dim", 2 * D),
    )
    # each GPU holds one kv head of the cache: Bm·(C − 1)·2·d·w bytes
    assert math.prod(cache.local_sizes(1)) * W == BM * (C - 1) * 2 * D * W


def test_kv_read_bytes_of_the_step() -> None:
    # tp = 4 (one kv head a rank): Bm·C·kv_i·2·d·w of cache and new token, plus q and o of
    # the rank's 2 heads
    attn = step(steps_of(decode(gqa(4))), 1, "attn_decode")
    assert attn.terms[0].bytes_moved(W) == BM * C * 1 * 2 * D * W + BM * 2 * 2 * D * W


# -- the KV cache, a program input ---------------------------------------------------------


def test_the_kv_cache_is_a_program_input() -> None:
    s = steps_of(decode(gqa(4)))
    assert [v.name for v in s.inputs] == ["kv_cache_l0", "kv_cache_l1"]
    cache = s.inputs[0]
    # nkv = 2 < tp = 4: every rank holds the one head its query heads share, replicated
    assert cache.dims == (
        Dim("sequences", BM),
        Dim("context", C - 1),
        Dim("kv_heads", 1),
        Dim("kv_dim", 2 * D),
    )
    assert cache.placement.kind is PlacementKind.REPLICATED
    assert cache.gpus == (0, 1, 2, 3)
    attn = step(s, 0, "attn_decode")
    assert [v.name for v in attn.reads] == ["q_l0", "k_l0", "v_l0", "kv_cache_l0"]
    assert [v.name for v in attn.writes] == ["attn_l0"]
    # no step writes it
    assert not [st for st in s.steps() if any(v.name.startswith("kv_cache") for v in st.writes)]


def test_the_step_printer_lists_the_inputs() -> None:
    text = str(steps_of(decode(gqa(4))))
    assert (
        "  input kv_cache_l0[sequences=4, context=299, kv_heads=1, kv_dim=128] bf16"
        " replicated on gpu[0..3]"
    ) in text.splitlines()
    assert "attn_decode = Decode_Attn_Time(4, 2, 1, 300, 64, 64) on gpu[0..3]" in text
    # a prefill program has no inputs and prints none
    assert "input" not in str(lower_to_steps(dagc.compile_text(gqa(4), "t.dag").program))


def test_a_context_of_one_has_no_context_dim() -> None:
    cache = steps_of(decode(gqa(4), context=1)).inputs[0]
    assert [dim.name for dim in cache.dims] == ["sequences", "kv_heads", "kv_dim"]


def test_the_cache_makes_no_data_edge() -> None:
    graph = graph_of(decode(gqa(4)))
    names = [graph.name(op) for op in range(graph.num_ops)]
    target = names.index("attn_decode_l0_gpu0_mb0")
    data = graph.edge_kind == DATA_EDGE
    sources = sorted(names[int(s)] for s in graph.src[data & (graph.dst == target)])
    # q, k and v on gpu 0, nothing for the cache
    assert sources == ["qkv_l0_gpu0_mb0.k", "qkv_l0_gpu0_mb0.q", "qkv_l0_gpu0_mb0.v"]


def test_microbatch_refuses_an_unknown_read() -> None:
    # without the inputs, the cache is a value no step writes: a pass's bug
    s = steps_of(decode(gqa(4)))
    with pytest.raises(ValueError, match="reads kv_cache_l0, never written"):
        microbatch(replace(s, inputs=()))


# -- the verifier on inputs -------------------------------------------------------------


def test_verifier_refuses_an_input_read_otherwise() -> None:
    s = steps_of(decode(gqa(4)))
    changed = replace(s.inputs[0], dims=s.inputs[0].dims[:1] + s.inputs[0].dims[2:])
    broken = replace(s, inputs=(changed, *s.inputs[1:]))
    with pytest.raises(VerificationError, match=r"reads kv_cache_l0\[.*, but it was written as"):
        verify_steps(broken)


def test_verifier_refuses_a_step_writing_an_input() -> None:
    s = steps_of(decode(gqa(4)))
    extra = replace(s.inputs[0], name="attn_l0")  # attn_decode writes it
    broken = replace(s, inputs=(*s.inputs, extra))
    with pytest.raises(VerificationError, match="writes attn_l0, a program input"):
        verify_steps(broken)


def test_verifier_refuses_an_input_nothing_reads() -> None:
    s = steps_of(decode(gqa(4)))
    unread = replace(s.inputs[0], name="kv_cache_l9")
    with pytest.raises(VerificationError, match="kv_cache_l9 is read by no step"):
        verify_steps(replace(s, inputs=(*s.inputs, unread)))


def test_verifier_refuses_an_input_listed_twice() -> None:
    s = steps_of(decode(gqa(4)))
    with pytest.raises(VerificationError, match="listed twice"):
        verify_steps(replace(s, inputs=(*s.inputs, s.inputs[0])))


# -- MLA, absorbed -----------------------------------------------------------------------


def test_mla_decode_terms() -> None:
    # tp = 2: h_i = 4; T = Bm = 6 new tokens; C = 300
    s = steps_of(decode(MLA))
    parts = [st.base + st.part for st in s.blocks[0].steps]
    assert parts == [
        "ln1", "qkv.q_a", "qkv.q_a_norm", "qkv.q_b", "qkv.kv_a", "qkv.kv_a_norm",
        "q_absorb", "attn_decode", "v_absorb", "o_proj", "all_reduce_attn", "res1",
    ]  # fmt: skip
    h, d = 4, NOPE + ROPE
    assert step(s, 0, "qkv.q_a").terms == (G(MB, MH, Q_LORA),) * 2
    assert step(s, 0, "qkv.q_b").terms == (G(MB, Q_LORA, h * d),) * 2
    assert step(s, 0, "qkv.kv_a").terms == (G(MB, MH, KV_LORA + ROPE),) * 2
    bmm = TermKind.BATCHED_MATMUL
    assert step(s, 0, "q_absorb").terms == (CostTerm(bmm, (h, MB, NOPE, KV_LORA)),) * 2
    latent = CostTerm(TermKind.LATENT_DECODE_ATTENTION, (MB, h, C, KV_LORA, ROPE))
    assert step(s, 0, "attn_decode").terms == (latent,) * 2
    assert step(s, 0, "v_absorb").terms == (CostTerm(bmm, (h, MB, KV_LORA, V_HEAD)),) * 2
    assert step(s, 0, "o_proj").terms == (G(MB, h * V_HEAD, MH),) * 2
    names = terms_by_name(graph_of(decode(MLA)))
    assert {"q_absorb_l1_gpu1", "attn_decode_l1_gpu1", "v_absorb_l1_gpu1"} <= set(names)


def test_mla_decode_reads_the_latent_cache() -> None:
    s = steps_of(decode(MLA))
    cache = s.inputs[0]
    # replicated over tp: every rank reads the whole latent of every sequence
    assert cache.dims == (
        Dim("sequences", MB),
        Dim("context", C - 1),
        Dim("latent", KV_LORA + ROPE),
    )
    assert cache.placement.kind is PlacementKind.REPLICATED
    reads = [v.name for v in step(s, 0, "attn_decode").reads]
    assert reads == ["q_absorbed_l0", "q_l0", "kv_latent_l0", "kv_a_l0", "kv_cache_l0"]


def test_mla_absorbed_products_hold_kv_b_weights() -> None:
    # per GPU (tp = 2, h_i = 4) and layer: q_a, q_b's 4 heads, kv_a, kv_b's 4 heads (as
    # q_absorb's 4·nope·r_kv plus v_absorb's 4·r_kv·v_head), o_proj's 4 heads; mlp F/2 up and
    # down
    attention = (
        MH * Q_LORA
        + Q_LORA * 4 * (NOPE + ROPE)
        + MH * (KV_LORA + ROPE)
        + KV_LORA * 4 * (NOPE + V_HEAD)
        + 4 * V_HEAD * MH
    )
    mlp = 2 * MH * (MF // 2)
    s = steps_of(decode(MLA))
    assert gpu_parameters(s.program.model, s.steps()) == {0: 2 * (attention + mlp)} | {
        1: 2 * (attention + mlp)
    }


# -- FLOP conservation and the model's FLOPs ---------------------------------------------


def gqa_model_flops(context: int) -> int:
    """2·B·(active product weights) + per layer 2·B·nh·C·(d + d)."""
    attention = H * NH * D + 2 * H * NKV * D + NH * D * H
    mlp = 3 * H * F
    return 2 * B * L * (attention + mlp) + L * 2 * B * NH * context * 2 * D


def test_gqa_decode_flop_conservation() -> None:
    compiled = decode(gqa(4))
    model = gqa_model_flops(C)
    assert model_totals(compiled.program).model_flops == model == 81_133_568
    # the stated extra: K/V projections replicated when nkv < tp, (tp − nkv)·2·2·T·H·d per
    # layer and micro-batch, T = Bm
    extra = (4 - NKV) * 2 * 2 * BM * H * D * L * M
    graph = graph_of(compiled)
    assert graph.total_matmul_flops() == model + extra == expected_flops(compiled.program)


def test_mla_decode_flop_conservation() -> None:
    compiled = decode(MLA)
    t = MB  # one micro-batch: T = B
    products = (
        MH * Q_LORA
        + Q_LORA * MNH * (NOPE + ROPE)
        + MH * (KV_LORA + ROPE)
        + KV_LORA * MNH * (NOPE + V_HEAD)  # kv_b's weights, used as q_absorb and v_absorb
        + MNH * V_HEAD * MH
        + 2 * MH * MF
    )
    core = 2 * MB * MNH * C * (2 * KV_LORA + ROPE)
    model = 2 * (2 * t * products + core)
    assert model_totals(compiled.program).model_flops == model
    # the stated extra: q_a and kv_a replicated on the tp = 2 ranks, one copy beyond the
    # model's per layer
    extra = 2 * (2 - 1) * 2 * t * MH * (Q_LORA + KV_LORA + ROPE)
    graph = graph_of(compiled)
    assert graph.total_matmul_flops() == model + extra == expected_flops(compiled.program)


def test_decode_model_flops_grow_with_the_context() -> None:
    short = model_totals(decode(gqa(4), context=100).program).model_flops
    long = model_totals(decode(gqa(4), context=101).program).model_flops
    assert long - short == L * 2 * B * NH * 2 * D


# -- attention data parallelism ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_dp_replicas_work_on_their_own_sequences(mode: str) -> None:
    seq = 16 if mode == "prefill" else 1
    compiled = decode(DP_TEXT, dp=4) if mode == "decode" else prefill_dp(DP_TEXT, 4)
    s = steps_of(compiled)
    tokens = [n * seq for n in DP_SHARES]  # T_r = Bm_r·S: 32, 16, 16, 16 or 2, 1, 1, 1
    assert step(s, 0, "ln1").terms == tuple(E(t * H) for t in tokens)
    assert step(s, 0, "qkv.q").terms == tuple(G(t, H, NH * D) for t in tokens)
    assert step(s, 0, "qkv.k").terms == tuple(G(t, H, NKV * D) for t in tokens)
    assert step(s, 1, "o_proj").terms == tuple(G(t, NH * D, H) for t in tokens)
    assert step(s, 1, "res1").terms == tuple(E(t * H) for t in tokens)
    if mode == "decode":
        core = tuple(CostTerm(TermKind.DECODE_ATTENTION, (n, NH, NKV, C, D, D)) for n in DP_SHARES)
        assert step(s, 0, "attn_decode").terms == core
    else:
        kind = TermKind.CAUSAL_ATTENTION
        core = tuple(CostTerm(kind, (n, NH, NKV, 16, D, D)) for n in DP_SHARES)
        assert step(s, 0, "attn_core").terms == core
    # tp = 1: no collective inside the block
    assert not [st for st in s.steps() if st.joint]


def test_dp_values_are_split_by_tokens() -> None:
    s = steps_of(decode(DP_TEXT, dp=4))
    by_tokens = split("tokens")
    res1 = step(s, 0, "res1")
    assert res1.writes[0].placement == by_tokens
    # layer 1 reads layer 0's residual as it was written: split by tokens
    ln1 = step(s, 1, "ln1")
    assert [(v.name, v.placement) for v in ln1.reads] == [("x_l0_attention", by_tokens)]
    for st in s.blocks[0].steps:
        for value in st.writes:
            assert value.placement == by_tokens, (st.base, value.name)
    # each replica holds its own sequences' cache
    assert s.inputs[0].placement == split("sequences")
    assert [s.inputs[0].local_sizes(r)[0] for r in range(4)] == DP_SHARES


@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_dp_flop_conservation(mode: str) -> None:
    # replicas split tokens, not work: executed = the model's FLOPs, no extra (tp = 1)
    seq = 16 if mode == "prefill" else 1
    compiled = decode(DP_TEXT, dp=4) if mode == "decode" else prefill_dp(DP_TEXT, 4)
    products = 2 * 10 * seq * L * (H * NH * D + 2 * H * NKV * D + NH * D * H)
    if mode == "decode":
        core = L * 2 * 10 * NH * C * 2 * D
    else:
        core = L * 2 * 10 * NH * (16 * 17 // 2) * 2 * D
    assert graph_of(compiled).total_matmul_flops() == products + core
    assert model_totals(compiled.program).model_flops == products + core


# -- the formula, the verifier, reports ----------------------------------------------------

CASES = {
    "gqa-tp4": lambda: decode(gqa(4)),
    "gqa-tp2": lambda: decode(gqa(2, gpus=2)),
    "mla-tp2": lambda: decode(MLA),
    "dp4-decode": lambda: decode(DP_TEXT, dp=4),
    "dp4-prefill": lambda: prefill_dp(DP_TEXT, 4),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("symmetric", [False, True], ids=["full", "collapsed"])
def test_decode_programs_verify_after_every_pass(case: str, symmetric: bool) -> None:
    graph = graph_of(CASES[case](), symmetric=symmetric)
    assert graph.num_ops


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("matmul_only", [False, True])
def test_decode_formula_is_the_critical_path(case: str, matmul_only: bool) -> None:
    compiled = CASES[case]()
    graph = expand(compiled).graph
    result = dagc.api.formula_compiled(compiled, matmul_only=matmul_only)
    assert result.exact
    formula = printers.python(result.expression)
    roofline, _ = dagc.api.cost_model(compiled.program)
    terms = graph.terms.terms
    models: list[CostModel] = [roofline, *(RandomModel(seed, terms) for seed in range(4))]
    check_models(graph, formula, matmul_only, [*models, *up_set_models(terms, 0)])


def test_decode_formula_text() -> None:
    result = dagc.api.formula_compiled(decode(gqa(4)))
    text = printers.text(result.expression)
    assert "Decode_Attn_Time(4, 2, 1, 300, 64, 64)" in text
    symbolic = printers.text(result.expression, symbolic=True)
    # the tokens of a decode step are B/m alone, the context C
    assert "Decode_Attn_Time(B/m, 2, 1, C, d, d)" in symbolic
    assert "Get_Time(B/m, H, 2*d)" in symbolic
    mla = printers.text(dagc.api.formula_compiled(decode(MLA)).expression, symbolic=True)
    assert "MLA_Decode_Attn_Time(B, 4, C, d_c, d_r)" in mla
    assert "BMM_Time(4, B, d_nope, d_c)" in mla
    assert "BMM_Time(4, B, d_c, d_v)" in mla


def test_decode_critical_path_by_hand_matmul_only() -> None:
    # one GPU's chain, matmul only, every product 1 s and every decode attention 10 s:
    # per layer and micro-batch qkv (3) + attn_decode (10) + o_proj (1) + mlp (3) on the
    # one tp group: 2 layers × 2 micro-batches × 17
    class Unit(CostModel):
        name = "unit"

        def term_seconds(self, term: CostTerm) -> float:
            if term.kind is TermKind.DECODE_ATTENTION:
                return 10.0
            return 1.0 if term.kind is TermKind.MATMUL else 0.0

    assert numeric(expand(decode(gqa(4))).graph, Unit()) == 2 * 2 * 17


def test_timeline_and_memory_describe_the_new_terms() -> None:
    decode_term = CostTerm(TermKind.DECODE_ATTENTION, (4, 2, 1, 300, 64, 64))
    assert shape_text(decode_term) == "4 x 2 heads (1 kv) x 1 token over 300 keys, d 64/64"
    latent = CostTerm(TermKind.LATENT_DECODE_ATTENTION, (6, 4, 300, 64, 16))
    assert shape_text(latent) == "6 x 4 heads x 1 token over 300 latent keys, d 64+16"
    bmm = CostTerm(TermKind.BATCHED_MATMUL, (4, 6, 32, 64))
    assert shape_text(bmm) == "4 x [6, 32] x [32, 64]"
    # working sets: the new tokens' q, k, v and o (the cache is the KV cache's); a batched
    # product's inputs and outputs without its weights
    s = steps_of(decode(MLA))
    assert activation_bytes(step(s, 0, "q_absorb"), 0, W) == 4 * (6 * 32 + 6 * 64) * W
    g = steps_of(decode(gqa(4)))
    assert activation_bytes(step(g, 0, "attn_decode"), 0, W) == 4 * (2 + 1) * 128 * W
    absorbed = activation_bytes(step(s, 0, "attn_decode"), 0, W)
    assert absorbed == 6 * (4 * (2 * 64 + 16) + 64 + 16) * W


def test_decode_step_analyses() -> None:
    result = dagc.api.analyze_compiled(decode(gqa(4)))
    analysis = result.analysis
    assert analysis.model_flops == gqa_model_flops(C)
    assert analysis.executed_flops == np.int64(gqa_model_flops(C)) + (4 - NKV) * 4 * BM * H * D * 4


def test_a_plugin_prices_the_decode_terms(tmp_path: Path) -> None:
    # every GQA decode attention 1 ms, everything else 0: 2 layers × 2 micro-batches on the
    # one chain of a tp group
    plugin = tmp_path / "decode.py"
    plugin.write_text(
        "def decode_attn_time(bm, h, kv, c, d_qk, d_v):\n    return 1e-3\n"
        "def get_time(m, k, n):\n    return 0.0\n"
        "def elem_time(n):\n    return 0.0\n"
        "def all_reduce_time(nbytes, n):\n    return 0.0\n"
    )
    costs = CostOptions(plugin=plugin)
    analysis = dagc.api.analyze_compiled(decode(gqa(4)), costs).analysis
    assert analysis.total_s == pytest.approx(2 * 2 * 1e-3)


# -- the example: Llama-3.1-70B, one decode step on 8 GPUs (tp = 8) ------------------------

LLAMA = EXAMPLES / "serving" / "llama_3_1_70b_decode_tp8.dag"


def test_llama_decode_example_by_hand() -> None:
    # B = 64 sequences, C = 4096; 64 heads and 8 kv heads of d = 128 over tp = 8: 8 query
    # heads and 1 kv head a GPU
    compiled = dagc.compile_file(LLAMA)
    s = steps_of(compiled)
    assert (
        step(s, 0, "attn_decode").terms
        == (CostTerm(TermKind.DECODE_ATTENTION, (64, 8, 1, 4096, 128, 128)),) * 8
    )
    # the cache a GPU reads for one layer: 64 sequences × 4095 earlier tokens × one kv head
    # × (k and v of 128), bf16: 128 MiB less 64·256·2
    cache = s.inputs[0]
    assert math.prod(cache.local_sizes(3)) * W == 64 * 4095 * 256 * 2 == 134_184_960
    # model FLOPs: 2·64 per product weight, plus 80 × 2·64·64·4096·256 for attention
    h, f, v = 8192, 28_672, 128_256
    layer = h * 64 * 128 + 2 * h * 8 * 128 + 64 * 128 * h + 3 * h * f
    model = 2 * 64 * (80 * layer + h * v) + 80 * 2 * 64 * 64 * 4096 * 256
    assert model_totals(compiled.program).model_flops == model
    # nkv = tp = 8: no K/V replicated, so executed = model exactly
    assert expand(compiled).graph.total_matmul_flops() == model


def test_lower_verify_prints_the_inputs() -> None:
    result = CliRunner().invoke(app, ["lower", str(LLAMA), "--emit", "steps", "--verify"])
    assert result.exit_code == 0, result.stderr
    assert (
        "  input kv_cache_l79[sequences=64, context=4095, kv_heads=8, kv_dim=256] bf16"
        " split(kv_heads) on gpu[0..7]"
    ) in result.stdout.splitlines()
