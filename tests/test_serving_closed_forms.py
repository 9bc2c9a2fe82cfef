"""The worked validation of docs/serving.md, from closed forms written out here.

- KV cache per token: Llama-3.1-70B (grouped-query attention) and DeepSeek-V3 (MLA), read
  from `totals.kv_cache_bytes_per_token` of the model files' JSON reports.
- One decode step of Llama-3.1-8B on one H100: at batch 1 it reads the weights and the KV
  cache, (W + KV)/(hbm_bandwidth · memory_efficiency); at batch 512 its products are
  compute-bound, 2·P·B/(peak · matmul_efficiency), and the KV read still adds.
- The batch at which a product [B,K]×[K,N] turns compute-bound, and decode attention's
  arithmetic intensity (h/kv FLOPs per byte under GQA, about 1.9·h under MLA).
- The seed's attention/MoE separation as a decode step with m = 2 micro-batches in
  ping-pong (examples/serving/ma_separation_decode.dag): a + L·m·b when the MoE group is
  the slower, L·m·a + b when attention is (docs/semantics.md, "Order on a GPU").

The roofline's inputs (peak, HBM bandwidth, efficiencies) are read from the h100 preset and
RooflineParams' defaults; every time is computed here from the formulas of
docs/cost-models.md, never by calling dagc's pricing. The tests also check that each number
docs/serving.md prints is the one computed here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dagc.analysis.costs import RooflineParams
from dagc.cli import app
from dagc.hardware import PRESETS
from dagc.ir.logical import DType
from helpers import EXAMPLES, REPO

runner = CliRunner()


DOC = REPO / "docs" / "serving.md"
SEPARATION = EXAMPLES / "serving" / "ma_separation_decode.dag"
W = 2  # bytes per bf16 element


def _roofline(gpu: str = "h100", dtype: DType = DType.BF16) -> RooflineParams:
    """The roofline's inputs for a preset: its figures and the default efficiencies."""
    return RooflineParams.for_gpu(PRESETS[gpu], dtype)


H100 = _roofline()
COMPUTE = H100.peak_flops * H100.matmul_efficiency  # FLOP/s a product reaches
MEMORY = H100.hbm_bandwidth * H100.memory_efficiency  # bytes/s a streaming kernel reaches


def get_time(m: int, k: int, n: int, p: RooflineParams = H100, w: int = W) -> float:
    """Get_Time(M, K, N) under the roofline: max(2MKN / compute, (MK + KN + MN)·w / memory)."""
    return max(
        2 * m * k * n / (p.peak_flops * p.matmul_efficiency),
        (m * k + k * n + m * n) * w / (p.hbm_bandwidth * p.memory_efficiency),
    )


def elem_time(n: int) -> float:
    """Elem_Time(n): n elements read and written once."""
    return 2 * n * W / MEMORY


def decode_attn_time(bm: int, h: int, kv: int, c: int, d: int) -> float:
    """Decode_Attn_Time(Bm, h, kv, C, d, d): 2·Bm·h·C·2d FLOPs; the cache's C keys and values
    of kv heads per sequence read, h heads of queries read and outputs written."""
    return max(2 * bm * h * c * 2 * d / COMPUTE, bm * (c * kv + h) * 2 * d * W / MEMORY)


def mla_decode_attn_flops_bytes(bm: int, h: int, c: int, dc: int, dr: int) -> tuple[int, int]:
    """MLA_Decode_Attn_Time(Bm, h, C, d_c, d_r)'s FLOPs and bytes (bf16): scores over the
    latent and rope parts, weights·latent; one latent cache shared by every head."""
    flops = 2 * bm * h * c * (2 * dc + dr)
    return flops, bm * (c * (dc + dr) + h * (2 * dc + dr)) * W


def _analyze(path: Path, *args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["analyze", str(path), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _analyze_text(tmp_path: Path, text: str, *args: str) -> dict[str, Any]:
    path = tmp_path / "t.dag"
    path.write_text(text, encoding="utf-8")
    return _analyze(path, *args)


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _in_doc(*numbers: str) -> None:
    """Each number docs/serving.md prints, as this test computed it."""
    doc = _doc()
    for number in numbers:
        assert number in doc, f"docs/serving.md does not say {number!r}"


def _step_of(report: dict[str, Any], node: str) -> dict[str, Any]:
    steps = [s for s in report["critical_path"]["steps"] if s["node"] == node]
    assert len(steps) == 1, f"{node} is not on the critical path once"
    step: dict[str, Any] = steps[0]
    return step


# ---------------------------------------------------------------------------------------
# KV cache per token


def test_llama_3_1_70b_kv_cache_per_token_is_320_kib() -> None:
    layers, kv_heads, head_dim = 80, 8, 128
    expected = layers * 2 * kv_heads * head_dim * W
    assert expected == 327_680 == 320 * 1024
    report = _analyze(EXAMPLES / "models" / "llama_3_1_70b.dag")
    assert report["totals"]["kv_cache_bytes_per_token"] == expected
    context = 4096
    assert f"{expected * context / 1e9:.2f}" == "1.34"
    _in_doc("327,680 B", "320 KiB", "4096-token context of one sequence takes 1.34 GB")


def test_llama_3_1_70b_tp8_gpu_holds_one_kv_head_of_each_layer() -> None:
    """examples/serving/llama_3_1_70b_decode_tp8.dag: 64 sequences at context 4096; each of
    the 8 GPUs holds 1 of the 8 KV heads of every layer."""
    layers, head_dim, batch, context = 80, 128, 64, 4096
    per_token = layers * 2 * 1 * head_dim * W
    assert per_token == 40_960
    report = _analyze(EXAMPLES / "serving" / "llama_3_1_70b_decode_tp8.dag")
    assert len(report["gpus"]) == 8
    for gpu in report["gpus"]:
        assert gpu["memory"]["kv_cache_bytes"] == batch * context * per_token == 10_737_418_240
    _in_doc("40,960 B per token", "10.74 GB")


def test_deepseek_v3_kv_cache_per_token_is_the_latent_and_the_rope_key(tmp_path: Path) -> None:
    layers, kv_lora_rank, rope = 61, 512, 64
    text = (EXAMPLES / "models" / "deepseek_v3.dag").read_text(encoding="utf-8")
    assert "dtype = fp8" in text
    # as written (fp8, one byte per element), and in bf16
    report = _analyze(EXAMPLES / "models" / "deepseek_v3.dag")
    assert report["totals"]["kv_cache_bytes_per_token"] == layers * (kv_lora_rank + rope) == 35_136
    bf16 = _analyze_text(tmp_path, text.replace("dtype = fp8", "dtype = bf16"))
    expected = layers * (kv_lora_rank + rope) * W
    assert bf16["totals"]["kv_cache_bytes_per_token"] == expected == 70_272
    assert f"{expected / 1024:.3f}" == "68.625"
    _in_doc("70,272 B", "68.6 KiB", "35,136 B")


# ---------------------------------------------------------------------------------------
# A dense decode step: Llama-3.1-8B on one H100

L8, H8, NH8, NKV8, D8, F8, V8 = 32, 4096, 32, 8, 128, 14_336, 128_256
LLAMA_8B = f"""\
model llama_3_1_8b {{
  layers = {L8}; hidden = {H8}; heads = {NH8}; kv_heads = {NKV8}; ffn = {F8}
  activation = swiglu; vocab = {V8}; attention_kernel = fused; attention_mask = causal
}}
WORKLOAD
devices {{ gpu = h100; group g = gpu[0] }}
layers 0..{L8 - 1} on g {{
  embed
  attention
  mlp
  lm_head
}}
"""
# Parameters the decode step's products read whole: every projection and lm_head's table
# (the embedding lookup reads B rows of its table, not the table).
PRODUCT_PARAMS_8B = L8 * (2 * H8 * NH8 * D8 + 2 * H8 * NKV8 * D8 + 3 * H8 * F8) + H8 * V8
KV_PER_TOKEN_8B = L8 * 2 * NKV8 * D8 * W


def llama_8b_step(b: int, c: int) -> float:
    """One decode step on one GPU: every operation in program order, nothing overlaps."""
    layer = (
        elem_time(b * H8)  # ln1
        + get_time(b, H8, NH8 * D8)  # q
        + 2 * get_time(b, H8, NKV8 * D8)  # k, v
        + decode_attn_time(b, NH8, NKV8, c, D8)
        + get_time(b, NH8 * D8, H8)  # o_proj
        + 2 * elem_time(b * H8)  # res1, ln2
        + 2 * get_time(b, H8, F8)  # mlp_up, mlp_gate
        + elem_time(b * F8)  # mlp_act
        + get_time(b, F8, H8)  # mlp_down
        + elem_time(b * H8)  # res2
    )
    return elem_time(b * H8) + L8 * layer + get_time(b, H8, V8)  # embed, layers, lm_head


def llama_8b_prefill(b: int, s: int) -> float:
    """The prefill of B prompts of S tokens on one GPU (T = B·S tokens, a fused causal
    attention kernel), every operation in program order."""
    t = b * s
    pairs = s * (s + 1) // 2
    attn = max(
        2 * b * NH8 * pairs * 2 * D8 / COMPUTE, b * s * (NH8 + NKV8) * 2 * D8 * W / MEMORY
    )  # Causal_Attn_Time(B, h, kv, S, d, d)
    layer = (
        elem_time(t * H8)
        + get_time(t, H8, NH8 * D8)
        + 2 * get_time(t, H8, NKV8 * D8)
        + attn
        + get_time(t, NH8 * D8, H8)
        + 2 * elem_time(t * H8)
        + 2 * get_time(t, H8, F8)
        + elem_time(t * F8)
        + get_time(t, F8, H8)
        + elem_time(t * H8)
    )
    return elem_time(t * H8) + L8 * layer + get_time(t, H8, V8)


def _llama_8b(tmp_path: Path, batch: int, context: int) -> dict[str, Any]:
    workload = f"workload {{ mode = decode; batch = {batch}; context = {context}; dtype = bf16 }}"
    return _analyze_text(tmp_path, LLAMA_8B.replace("WORKLOAD", workload))


def test_weights_and_kv_cache_of_llama_3_1_8b() -> None:
    assert PRODUCT_PARAMS_8B == 7_504_658_432
    assert KV_PER_TOKEN_8B == 131_072
    assert f"{PRODUCT_PARAMS_8B * W / 1e9:.2f}" == "15.01"
    _in_doc("7,504,658,432", "15.01 GB", "131,072 B")


def test_decode_at_batch_1_reads_the_weights_and_the_cache(tmp_path: Path) -> None:
    b, c = 1, 4096
    report = _llama_8b(tmp_path, b, c)
    step = llama_8b_step(b, c)
    assert report["critical_path"]["time_s"] == pytest.approx(step, rel=1e-9)
    attn = _step_of(report, "attn_decode_l0_gpu0")
    assert attn["terms"] == [f"Decode_Attn_Time({b}, {NH8}, {NKV8}, {c}, {D8}, {D8})"]
    # Bound by memory: the weights and the cache once, over the achievable bandwidth.
    weights_s = PRODUCT_PARAMS_8B * W / MEMORY
    kv_bytes = b * c * KV_PER_TOKEN_8B
    approx = weights_s + kv_bytes / MEMORY
    assert step / approx - 1 == pytest.approx(0.00064, abs=0.00001)  # norms, activations
    assert 2 * PRODUCT_PARAMS_8B * b / COMPUTE < 0.005 * step  # compute is nowhere near
    serving = report["serving"]
    assert serving["tpot_s"] == pytest.approx(step, rel=1e-9)
    assert serving["tokens_per_s"] == pytest.approx(b / step, rel=1e-9)
    assert serving["ttft_s"] is None
    _in_doc(
        f"{step * 1e3:.3f} ms",
        f"{approx * 1e3:.3f} ms",
        f"{weights_s * 1e3:.3f} ms",
        f"{kv_bytes / 1e9:.3f} GB",
        f"{b / step:.0f} tokens/s",
        "0.06%",
    )


def test_largest_batch_of_llama_3_1_8b_on_one_h100(tmp_path: Path) -> None:
    """The weights stay; each sequence adds its cache at context C (and a working set of a
    few hundred KB that does not change the answer)."""
    c = 4096
    embedding = V8 * H8
    weights = (PRODUCT_PARAMS_8B + embedding) * W  # the projections, lm_head, the table
    per_sequence = c * KV_PER_TOKEN_8B
    largest = int((PRESETS["h100"].memory_bytes - weights) // per_sequence)
    assert largest == 119
    report = _llama_8b(tmp_path, 1, c)
    memory = report["gpus"][0]["memory"]
    assert memory["weight_bytes"] == weights == 16_059_990_016
    assert memory["kv_cache_bytes"] == per_sequence
    assert memory["working_set_bytes"] * (largest + 1) < per_sequence  # it moves nothing
    assert report["serving"]["max_batch"] == largest
    _in_doc(
        f"{weights / 1e9:.2f} GB of weights",
        f"{per_sequence / 1e9:.3f} GB of cache per sequence",
        f"{largest} sequences",
    )


def test_decode_at_batch_512_is_bound_by_compute_and_the_kv_read(tmp_path: Path) -> None:
    b, c = 512, 512
    report = _llama_8b(tmp_path, b, c)
    step = llama_8b_step(b, c)
    assert report["critical_path"]["time_s"] == pytest.approx(step, rel=1e-9)
    # Every product is compute-bound at this batch (each is past its crossover, below) ...
    for k, n in ((H8, NH8 * D8), (H8, NKV8 * D8), (H8, F8), (F8, H8), (H8, V8)):
        assert get_time(b, k, n) == 2 * b * k * n / COMPUTE
    products_s = 2 * PRODUCT_PARAMS_8B * b / COMPUTE
    # ... and attention still reads the cache at memory speed.
    kv_bytes = b * c * KV_PER_TOKEN_8B
    attn = decode_attn_time(b, NH8, NKV8, c, D8)
    assert attn == b * (c * NKV8 + NH8) * 2 * D8 * W / MEMORY
    approx = products_s + kv_bytes / MEMORY
    assert step / approx - 1 == pytest.approx(0.0347, abs=0.0001)  # norms, activations
    assert report["serving"]["tokens_per_s"] == pytest.approx(b / step, rel=1e-9)
    _in_doc(
        f"{step * 1e3:.2f} ms",
        f"{products_s * 1e3:.2f} ms",
        f"{kv_bytes / MEMORY * 1e3:.2f} ms",
        f"{kv_bytes / 1e9:.1f} GB",
        f"{approx * 1e3:.2f} ms",
        f"{b / step:,.0f} tokens/s",
        "3.5%",
    )
    small = llama_8b_step(1, 4096)
    assert f"{(b / step) / (1 / small):.0f}" == "117" and f"{step / small:.1f}" == "4.4"
    _in_doc("117 times the throughput of B = 1 for 4.4 times the step time")


def test_serving_llama_3_1_8b_from_its_steps(tmp_path: Path) -> None:
    """TTFT, TPOT, end to end and tokens/s of B = 8 prompts of 2048 tokens and 256 output
    tokens: the prefill, then 255 decode steps at contexts 2049 … 2303, each in closed form."""
    b, i, o = 8, 2048, 256
    workload = f"workload {{ mode = serve; batch = {b}; input = {i}; output = {o}; dtype = bf16 }}"
    report = _analyze_text(tmp_path, LLAMA_8B.replace("WORKLOAD", workload))
    serving = report["serving"]
    ttft = llama_8b_prefill(b, i)
    steps = [llama_8b_step(b, i + j) for j in range(1, o)]
    total = sum(steps)
    assert serving["ttft_s"] == pytest.approx(ttft, rel=1e-9)
    assert serving["decode_step_first_s"] == pytest.approx(steps[0], rel=1e-9)
    assert serving["decode_step_last_s"] == pytest.approx(steps[-1], rel=1e-9)
    # 255 steps > 64: 65 sampled, the rest interpolated, the exact sum within the bound
    approximation = serving["approximation"]
    assert approximation["exact"] is False and approximation["priced_steps"] == 65
    assert approximation["sum_lower_s"] <= total <= approximation["sum_upper_s"]
    # every step is memory-bound in C here, so a step is linear in C and interpolation exact
    assert approximation["sum_s"] == pytest.approx(total, rel=1e-9)
    tpot = total / (o - 1)
    e2e = ttft + total
    assert serving["tpot_s"] == pytest.approx(tpot, rel=1e-9)
    assert serving["e2e_s"] == pytest.approx(e2e, rel=1e-9)
    assert serving["tokens_per_s"] == pytest.approx(b * o / e2e, rel=1e-9)
    assert serving["tokens_per_s_per_gpu"] == pytest.approx(b * o / e2e, rel=1e-9)
    _in_doc(
        f"{ttft * 1e3:.1f} ms",
        f"{tpot * 1e3:.3f} ms",
        f"{steps[0] * 1e3:.3f} ms",
        f"{steps[-1] * 1e3:.3f} ms",
        f"{e2e:.3f} s",
        f"{b * o / e2e:,.0f} tokens/s",
        f"T = {b * i:,} tokens",
        f"contexts {i + 1} … {i + o - 1}",
    )


# ---------------------------------------------------------------------------------------
# The batch at which decode turns compute-bound


def crossover(k: int, n: int, p: RooflineParams = H100, w: int = W) -> float:
    """The B at which 2·B·K·N / compute = (B·K + K·N + B·N)·w / memory."""
    ridge = p.peak_flops * p.matmul_efficiency / (p.hbm_bandwidth * p.memory_efficiency)
    return ridge * w * k * n / (2 * k * n - ridge * w * (k + n))


def test_the_ridge_and_the_crossover_batch() -> None:
    assert (H100.peak_flops, H100.hbm_bandwidth) == (989e12, 3.35e12)
    assert (H100.matmul_efficiency, H100.memory_efficiency) == (0.70, 0.85)
    _in_doc(
        "peak 989e12 FLOP/s",
        "matmul_efficiency 0.70",
        "HBM 3.35e12 bytes/s",
        "memory_efficiency 0.85",
    )
    assert f"{COMPUTE:.4g} / {MEMORY:.5g}" == "6.923e+14 / 2.8475e+12"
    _in_doc("r = 692.3e12 / 2.8475e12")
    ridge = COMPUTE / MEMORY  # FLOPs per byte where compute and memory take equally long
    assert f"{ridge:.1f}" == "243.1"
    limit = ridge * W / 2  # B* for K, N → ∞ (activation bytes negligible)
    assert f"{limit:.1f}" == "243.1"
    # fp8: twice the peak, half the bytes: the same batch
    fp8 = _roofline(dtype=DType.FP8)
    fp8_ridge = fp8.peak_flops * fp8.matmul_efficiency / (fp8.hbm_bandwidth * fp8.memory_efficiency)
    assert fp8_ridge * 1 / 2 == pytest.approx(limit, rel=1e-12)
    assert f"{crossover(H8, H8):.1f}" == "275.9"
    assert f"{crossover(H8, F8):.1f}" == "263.2"
    assert f"{crossover(H8, NKV8 * D8):.1f}" == "345.7"
    others = {gpu: _roofline(gpu) for gpu in ("a100", "h200")}
    limits = {
        gpu: p.peak_flops * p.matmul_efficiency / (p.hbm_bandwidth * p.memory_efficiency)
        for gpu, p in others.items()
    }
    assert f"{limits['a100']:.1f}" == "128.5" and f"{limits['h200']:.1f}" == "169.7"
    _in_doc("243.1", "275.9", "263.2", "345.7", "128.5", "169.7")


ONE_LAYER = """\
model m { layers = 1; hidden = 4096; heads = 32; kv_heads = 8; ffn = 14336; activation = swiglu }
workload { mode = decode; batch = BATCH; context = 512; dtype = bf16 }
devices { group g = gpu[0] }
layers 0..0 on g { attention; mlp }
"""


@pytest.mark.parametrize("batch", [275, 276])
def test_o_proj_turns_compute_bound_between_275_and_276(tmp_path: Path, batch: int) -> None:
    k = n = 4096
    assert 275 < crossover(k, n) < 276
    report = _analyze_text(tmp_path, ONE_LAYER.replace("BATCH", str(batch)))
    o_proj = _step_of(report, "o_proj_l0_gpu0")
    assert o_proj["terms"] == [f"Get_Time({batch}, {k}, {n})"]
    memory = (batch * k + k * n + batch * n) * W / MEMORY
    compute = 2 * batch * k * n / COMPUTE
    expected = memory if batch == 275 else compute
    assert (memory > compute) is (batch == 275)
    assert o_proj["time_s"] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------
# Decode attention's arithmetic intensity


def test_gqa_decode_attention_does_h_over_kv_flops_per_byte(tmp_path: Path) -> None:
    # 4BhCd FLOPs over about B·C·kv·2d·w bytes: 2h/(kv·w), h/kv in bf16, whatever B and C
    b, c = 64, 4096
    flops = 2 * b * NH8 * c * 2 * D8
    kv_bytes = b * c * NKV8 * 2 * D8 * W
    assert flops / kv_bytes == NH8 / NKV8 == 4
    assert 60 < COMPUTE / MEMORY / (NH8 / NKV8) < 61  # "a sixtieth of the ridge"
    report = _analyze_text(tmp_path, ONE_LAYER.replace("BATCH", str(b)).replace("512", str(c)))
    attn = _step_of(report, "attn_decode_l0_gpu0")
    assert attn["time_s"] == pytest.approx(decode_attn_time(b, NH8, NKV8, c, D8), rel=1e-12)
    assert attn["time_s"] == pytest.approx(b * (c * NKV8 + NH8) * 2 * D8 * W / MEMORY, rel=1e-12)


MLA = """\
model mla {
  layers = 1; hidden = 1024; heads = 128; q_lora_rank = 256; kv_lora_rank = 512
  qk_nope_head_dim = 128; qk_rope_head_dim = 64; v_head_dim = 128; ffn = 1024
}
workload { mode = decode; batch = 8; context = 4096; dtype = bf16 }
devices { gpu = GPU; group g = gpu[0] }
layers 0..0 on g { attention; mlp }
"""


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_mla_decode_attention_is_near_the_ridge(tmp_path: Path, gpu: str) -> None:
    h, dc, dr = 128, 512, 64
    # per cached token: 2·h·(2·d_c + d_r) FLOPs over (d_c + d_r)·w bytes
    assert f"{2 * h * (2 * dc + dr) / ((dc + dr) * W):.1f}" == "241.8"
    flops, moved = mla_decode_attn_flops_bytes(8, h, 4096, dc, dr)
    p = _roofline(gpu)
    compute = flops / (p.peak_flops * p.matmul_efficiency)
    memory = moved / (p.hbm_bandwidth * p.memory_efficiency)
    assert (compute > memory) is (gpu == "h200")  # compute-bound on h200 only
    report = _analyze_text(tmp_path, MLA.replace("GPU", gpu))
    attn = _step_of(report, "attn_decode_l0_gpu0")
    assert attn["terms"] == [f"MLA_Decode_Attn_Time(8, {h}, 4096, {dc}, {dr})"]
    assert attn["time_s"] == pytest.approx(max(compute, memory), rel=1e-12)
    _in_doc("241.8")


# ---------------------------------------------------------------------------------------
# The seed's attention/MoE separation as a decode step, two micro-batches in ping-pong


def _separation_units(context: int) -> tuple[float, float]:
    """Per-micro-batch products of one layer: a on gpu0 (3 of 32 heads, MHA), b on gpu12
    (the gate and its 4 experts of 16, every token visiting every expert: T_e = Bm)."""
    bm, h, heads_i, d, experts_i, fe, e = 32, 4096, 3, 128, 4, 16_384, 16
    a = (
        3 * get_time(bm, h, heads_i * d)
        + decode_attn_time(bm, heads_i, heads_i, context, d)
        + get_time(bm, heads_i * d, h)
    )
    b = get_time(bm, h, e) + experts_i * (get_time(bm, h, fe) + get_time(bm, fe, h))
    return a, b


def test_separation_example_is_the_seed_layout_as_a_decode_step() -> None:
    text = SEPARATION.read_text(encoding="utf-8")
    assert re.search(r"mode\s*=\s*decode", text)
    assert re.search(r"microbatches\s*=\s*2\b", text)
    assert re.search(r"batch\s*=\s*64\b", text) and re.search(r"context\s*=\s*4096\b", text)
    report = _analyze(SEPARATION)
    assert report["totals"]["gpus"] == 16


def test_separation_decode_is_moe_bound_at_context_4096() -> None:
    layers, m = 4, 2
    a, b = _separation_units(4096)
    assert a <= (m - 1) * b  # the MoE group is the slower: a + L·m·b
    report = _analyze(SEPARATION, "--matmul-only")
    expected = a + layers * m * b
    assert report["critical_path"]["time_s"] == pytest.approx(expected, rel=1e-9)
    _in_doc(f"{a * 1e3:.4f} ms", f"{b * 1e3:.4f} ms", f"{expected * 1e3:.3f} ms")
    assert round(1 - a / b, 2) == 0.80  # the attention GPUs' idle share: four fifths
    _in_doc("idle four fifths")


def test_separation_decode_is_attention_bound_at_context_32768(tmp_path: Path) -> None:
    layers, m = 4, 2
    a, b = _separation_units(32_768)
    assert b <= (m - 1) * a  # attention is the slower: L·m·a + b
    text = SEPARATION.read_text(encoding="utf-8")
    longer = re.sub(r"context\s*=\s*4096", "context = 32768", text)
    assert longer != text
    report = _analyze_text(tmp_path, longer, "--matmul-only")
    expected = layers * m * a + b
    assert report["critical_path"]["time_s"] == pytest.approx(expected, rel=1e-9)
    _in_doc(f"{a * 1e3:.4f} ms", f"{expected * 1e3:.3f} ms")
    assert round(1 - b / a, 2) == 0.33  # the expert GPUs' idle share: a third
    _in_doc("a third of it at 32768")


@pytest.mark.parametrize("context", [4096, 32_768])
def test_separation_decode_formula_is_the_ping_pong_for_every_cost_model(context: int) -> None:
    """`dagc formula --matmul-only` gives a + b + (L·m − 1)·max(a, b): both of the spec's
    cases at once. Evaluated with this file's roofline it is the closed form above."""
    result = runner.invoke(
        app,
        [
            "formula",
            str(SEPARATION),
            "--matmul-only",
            "--format",
            "python",
            "--context",
            str(context),
        ],
    )
    assert result.exit_code == 0, result.output
    formula = result.stdout.strip()
    assert "7 * max(" in formula
    a, b = _separation_units(context)
    names = {"Get_Time": get_time, "Decode_Attn_Time": _decode_attn_term, "max": max}
    value = eval(formula, {"__builtins__": {}}, names)
    assert value == pytest.approx(a + b + 7 * max(a, b), rel=1e-12)
    assert value == pytest.approx(a + 8 * b if a <= b else 8 * a + b, rel=1e-12)
    _in_doc("a + b + 7 × max(a, b)")


def _decode_attn_term(bm: int, h: int, kv: int, c: int, d_qk: int, d_v: int) -> float:
    assert d_qk == d_v
    return decode_attn_time(bm, h, kv, c, d_qk)
