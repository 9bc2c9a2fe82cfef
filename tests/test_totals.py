"""Model totals (params, active params, model FLOPs, KV cache per token), MFU and HFU, and
the note on explicit attention's S×S work, against closed forms written out by hand from
docs/analyze.md ("Model totals") for small configurations.

Symbols: H hidden, nh heads, nkv kv_heads, d head_dim, F ffn, p matrices per MLP/expert
(3 with swiglu, else 2), E experts, k top_k, Fe expert_ffn, V vocab, B batch, S seq, w
bytes per element, L layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dagc
from dagc.analysis.totals import model_totals
from dagc.api import CostOptions, analyze_compiled
from dagc.cli import app
from dagc.expand import expand
from helpers import REPO

runner = CliRunner()
MA_FILE = REPO / "examples" / "seed" / "ma_separation.dag"


def _program(text: str) -> Any:
    return dagc.compile_text(text, path="t.dag").program


# ---------------------------------------------------------------------------------------
# Dense, grouped-query attention, tied embeddings, q/k/v biases

DENSE_MODEL = """\
model dense {
  layers = 2
  hidden = 64
  heads = 4
  kv_heads = 2
  head_dim = 16
  ffn = 128
  activation = swiglu
  vocab = 1000
  tied_embeddings = true
  qkv_bias = true
  attention_mask = MASK
}
workload { batch = 2; seq = 8 }
devices { group g = gpu[0..1] }
layers 0..1 on g {
  embed
  attention tp=2
  mlp tp=2
  lm_head tp=2
}
"""


def dense(mask: str) -> str:
    return DENSE_MODEL.replace("MASK", mask)


# H = 64, nh = 4, nkv = 2, d = 16, F = 128, p = 3, V = 1000, L = 2, B = 2, S = 8, w = 2.
# attention: ln1 64, q 64·64, k and v 64·32 each, o 64·64, biases nh·d + 2·nkv·d = 128
DENSE_ATTENTION = 64 + 64 * 64 + 2 * 64 * 32 + 64 * 64 + (4 * 16 + 2 * 2 * 16)
DENSE_MLP = 64 + 3 * 64 * 128  # ln2, up, gate, down
# the table once (tied), the final norm once
DENSE_PARAMS = 2 * (DENSE_ATTENTION + DENSE_MLP) + 1000 * 64 + 64
# FLOPs: 2·B·S per product weight (q, k, v, o, the MLP, lm_head over the shared table)
DENSE_PRODUCTS = 2 * (2 * 8) * (2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128) + 1000 * 64)
# Q·Kᵀ and weights·V per layer: 2·B·nh·P·(d + d), P = S·(S+1)/2 = 36 or S·S = 64
DENSE_CAUSAL_CORE = 2 * (2 * 2 * 4 * 36 * (16 + 16))
DENSE_FULL_CORE = 2 * (2 * 2 * 4 * 64 * (16 + 16))


def test_dense_gqa_tied_embeddings_and_qkv_bias() -> None:
    totals = model_totals(_program(dense("causal")))
    assert DENSE_PARAMS == 138_304
    assert totals.params == DENSE_PARAMS
    assert totals.active_params == DENSE_PARAMS  # no experts: every weight is active
    assert totals.model_flops == DENSE_PRODUCTS + DENSE_CAUSAL_CORE == 4_444_160
    assert totals.kv_cache_bytes_per_token == 2 * (2 * 2 * 16 * 2)  # L · 2·nkv·d·w


def test_causal_mask_counts_half_the_pairs_and_full_all() -> None:
    full = model_totals(_program(dense("full")))
    causal = model_totals(_program(dense("causal")))
    assert full.model_flops == DENSE_PRODUCTS + DENSE_FULL_CORE
    assert full.model_flops - causal.model_flops == 2 * (2 * 2 * 4 * (64 - 36) * 32)
    assert (full.params, full.kv_cache_bytes_per_token) == (
        causal.params,
        causal.kv_cache_bytes_per_token,
    )


def test_untied_table_counts_twice() -> None:
    untied = model_totals(_program(dense("full").replace("tied_embeddings = true", "")))
    assert untied.params == DENSE_PARAMS + 1000 * 64


def test_o_bias_and_qk_norm_are_parameters_without_flops() -> None:
    text = dense("full").replace(
        "qkv_bias = true", "qkv_bias = true\n  o_bias = true\n  qk_norm = true"
    )
    totals = model_totals(_program(text))
    # per layer: o_bias H = 64, qk_norm 2·d = 32 (one weight per q and k head dimension)
    assert totals.params == DENSE_PARAMS + 2 * (64 + 2 * 16)
    assert totals.model_flops == DENSE_PRODUCTS + DENSE_FULL_CORE


def test_an_explicit_kernel_under_a_causal_mask_executes_every_pair() -> None:
    # The extra of an explicit kernel under a causal mask: S·S − S·(S+1)/2 pairs per head
    # and sequence, 2·B·nh·(64 − 36)·(d + d) FLOPs per layer.
    compiled = dagc.compile_text(dense("causal"), path="t.dag")
    graph = expand(compiled).graph
    assert graph.total_matmul_flops() == (
        DENSE_PRODUCTS + DENSE_CAUSAL_CORE + 2 * (2 * 2 * 4 * (64 - 36) * 32)
    )


# ---------------------------------------------------------------------------------------
# MoE with shared experts, a shared-expert gate and a router bias (compiled only)

MOE = """\
model moe {
  layers = 2
  hidden = 32
  heads = 4
  experts = 8
  top_k = 2
  expert_ffn = 16
  shared_experts = 2
  shared_expert_ffn = 24
  shared_expert_gate = true
  router_bias = true
}
workload { batch = 4; seq = 16 }
devices { group g = gpu[0..3] }
layers 0..1 on g {
  attention tp=4
  moe ep=4
}
"""


def test_moe_with_shared_experts_and_router_bias() -> None:
    # H = 32, nh = nkv = 4, d = 8, E = 8, k = 2, Fe = 16, two shared experts of 24, p = 2
    attention = 32 + 4 * 32 * 32  # ln1, q, k, v, o
    routed = 8 * 2 * 32 * 16
    shared = 2 * 2 * 32 * 24
    moe = 32 + 32 * 8 + 8 + routed + shared + 32  # ln2, router, its bias, ..., shared gate
    totals = model_totals(_program(MOE))
    assert totals.params == 2 * (attention + moe) == 31_440
    # a token visits k = 2 of the 8 routed experts
    assert totals.active_params == totals.params - 2 * (8 - 2) * 2 * 32 * 16 == 19_152
    products = 4 * 32 * 32 + 32 * 8 + 2 * (2 * 32 * 16) + shared + 32  # no ln, no bias
    core = 2 * 4 * 4 * 16 * 16 * (8 + 8)  # full mask: 2·B·nh·S·S·(d + d)
    assert totals.model_flops == 2 * (2 * (4 * 16) * products + core) == 2_695_168
    assert totals.kv_cache_bytes_per_token == 2 * (2 * 4 * 8 * 2)


# ---------------------------------------------------------------------------------------
# Multi-head latent attention, with and without query compression (compiled only)

MLA = """\
model mla {
  layers = 1
  hidden = 64
  heads = 4
  QLORA
  kv_lora_rank = 16
  qk_nope_head_dim = 8
  qk_rope_head_dim = 4
  v_head_dim = 8
  ffn = 128
}
workload { batch = 2; seq = 8 }
devices { group g = gpu[0..1] }
layers 0..0 on g {
  attention tp=2
  mlp tp=2
}
"""

MLA_MLP = 64 + 2 * 64 * 128
# Q·Kᵀ over nope + rope = 12 and weights·V over v = 8: 2·B·nh·S·S·(12 + 8)
MLA_CORE = 2 * 2 * 4 * 8 * 8 * (12 + 8)


def test_mla_with_query_compression() -> None:
    totals = model_totals(_program(MLA.replace("QLORA", "q_lora_rank = 32")))
    # q_a 64·32, q_b 32·nh·(8+4), kv_a 64·(16+4), kv_b 16·nh·(8+8), o nh·8·64
    products = 64 * 32 + 32 * 4 * 12 + 64 * (16 + 4) + 16 * 4 * (8 + 8) + 4 * 8 * 64
    norms = 64 + 32 + 16  # ln1, q_a_norm, kv_a_norm
    assert totals.params == products + norms + MLA_MLP == 24_496
    assert totals.active_params == totals.params
    assert totals.model_flops == 2 * (2 * 8) * (products + 2 * 64 * 128) + MLA_CORE == 798_720
    assert totals.kv_cache_bytes_per_token == (16 + 4) * 2  # (kv_lora + rope)·w


def test_mla_without_query_compression() -> None:
    totals = model_totals(_program(MLA.replace("QLORA", "")))
    # q 64·nh·(8+4) instead of q_a, q_a_norm and q_b
    products = 64 * 4 * 12 + 64 * (16 + 4) + 16 * 4 * (8 + 8) + 4 * 8 * 64
    norms = 64 + 16  # ln1, kv_a_norm
    assert totals.params == products + norms + MLA_MLP == 23_952
    assert totals.model_flops == 2 * (2 * 8) * (products + 2 * 64 * 128) + MLA_CORE == 782_336
    assert totals.kv_cache_bytes_per_token == (16 + 4) * 2


# ---------------------------------------------------------------------------------------
# MFU and HFU on the seed's MoE file


def test_mfu_is_hfu_times_model_over_executed_flops() -> None:
    # The seed's attention/MoE separation: L = 4, H = 4096, nh = 32, d = 128, E = k = 16,
    # Fe = 16384 (gelu), B = 1024, S = 2048, one micro-batch, moe over e = 4 GPUs.
    t, h = 1024 * 2048, 4096
    layer = 2 * t * (4 * h * h + h * 16 + 16 * 2 * h * 16384) + 2 * 1024 * 32 * 2048**2 * 256
    # Executed extras: the gate runs on each of the e = 4 MoE GPUs, (e − 1)·2·T·H·E per
    # layer; 32 kv heads over tp = 12 need no copies; k = E leaves no capacity rounding.
    replicated_gate = (4 - 1) * 2 * t * h * 16
    analysis = analyze_compiled(dagc.compile_file(MA_FILE)).analysis
    assert analysis.model_flops == 4 * layer
    assert analysis.executed_flops == 4 * layer + 4 * replicated_gate
    assert analysis.matmul_flops == analysis.executed_flops
    peak = analysis.peak_flops * 16 * analysis.total_s
    assert analysis.hfu == pytest.approx(analysis.executed_flops / peak, rel=1e-12)
    assert analysis.mfu == pytest.approx(
        analysis.hfu * analysis.model_flops / analysis.executed_flops, rel=1e-12
    )
    assert analysis.mfu < analysis.hfu


# ---------------------------------------------------------------------------------------
# The reports


def _analyze(path: Path, *args: str) -> Any:
    result = runner.invoke(app, ["analyze", str(path), *args])
    assert result.exit_code == 0, result.stderr
    return result


@pytest.fixture()
def dense_file(tmp_path: Path) -> Path:
    path = tmp_path / "dense.dag"
    path.write_text(dense("causal"))
    return path


def test_json_report_has_the_totals(dense_file: Path) -> None:
    report = json.loads(_analyze(dense_file, "--format", "json").stdout)
    totals = report["totals"]
    executed = DENSE_PRODUCTS + DENSE_CAUSAL_CORE + 2 * (2 * 2 * 4 * (64 - 36) * 32)
    assert totals["params"] == DENSE_PARAMS
    assert totals["active_params"] == DENSE_PARAMS
    assert totals["model_flops"] == DENSE_PRODUCTS + DENSE_CAUSAL_CORE
    assert totals["executed_flops"] == totals["matmul_flops"] == executed
    assert totals["kv_cache_bytes_per_token"] == 256
    peak = 989e12 * 2 * report["critical_path"]["time_s"]  # h100 bf16, 2 GPUs
    assert totals["hfu"] == pytest.approx(executed / peak, rel=1e-12)
    assert totals["mfu"] == pytest.approx((DENSE_PRODUCTS + DENSE_CAUSAL_CORE) / peak, rel=1e-12)
    for gpu in report["gpus"]:
        assert gpu["hfu"] == pytest.approx(gpu["matmul_flops"] / 989e12 / (peak / 989e12 / 2))
        assert "mfu" not in gpu


def test_text_and_markdown_reports_show_the_totals(dense_file: Path) -> None:
    text = _analyze(dense_file).stdout.splitlines()
    assert "params         138,304 (active 138,304)" in text
    assert "KV cache       256 bytes per token" in text
    assert any(line.startswith("model FLOPs    4.4442e+06   MFU ") for line in text)
    assert any(line.startswith("executed FLOPs 4.4728e+06   HFU ") for line in text)
    markdown = _analyze(dense_file, "--format", "markdown").stdout.splitlines()
    for row in (
        "| params | 138,304 |",
        "| active params | 138,304 |",
        "| KV cache per token | 256 bytes |",
        "| model FLOPs | 4.4442e+06 |",
        "| executed FLOPs | 4.4728e+06 |",
    ):
        assert row in markdown
    assert any(row.startswith("| MFU | ") for row in markdown)
    assert any(row.startswith("| HFU | ") for row in markdown)


def test_compare_json_has_the_totals(dense_file: Path) -> None:
    result = runner.invoke(app, ["compare", str(dense_file), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout)["configs"][0]
    assert (config["params"], config["active_params"]) == (DENSE_PARAMS, DENSE_PARAMS)
    assert config["model_flops"] == DENSE_PRODUCTS + DENSE_CAUSAL_CORE
    assert config["kv_cache_bytes_per_token"] == 256
    assert config["mfu"] < config["hfu"]


# ---------------------------------------------------------------------------------------
# The note on explicit attention's S×S work

LONG = """\
model long {
  layers = 2
  hidden = 256
  heads = 4
  ffn = 512
  KERNEL
}
workload { batch = 1; seq = 8192 }
devices { group g = gpu[0..1] }
layers 0..1 on g {
  attention tp=2
  mlp tp=2
}
"""
NOTE = "attention's explicit kernel writes the S×S scores to memory"


def test_score_note_fires_on_a_long_explicit_sequence(tmp_path: Path) -> None:
    path = tmp_path / "long.dag"
    path.write_text(LONG.replace("KERNEL", ""))
    report = json.loads(_analyze(path, "--format", "json", "--werror").stdout)
    assert report["warnings"] == []  # a note, not a warning: --werror passes
    [note] = report["notes"]
    assert note.startswith(NOTE)
    # Per GPU: 2 heads, Bm·h_i·S·S = 2·8192² scores; softmax reads and writes them (w = 2),
    # the largest working set of any operation.
    softmax = 2 * (2 * 8192 * 8192) * 2
    assert f"gpu0's largest activation working set, {softmax / 1e9:.2f} GB, is softmax's" in note
    assert "of the critical path" in note
    assert "`attention_kernel = fused`" in note
    text = _analyze(path).stdout
    assert f"note: {NOTE}" in text
    assert f"> note: {NOTE}" in _analyze(path, "--format", "markdown").stdout


def test_score_note_is_silent_where_the_scores_are_small(tmp_path: Path) -> None:
    path = tmp_path / "short.dag"
    path.write_text(LONG.replace("KERNEL", "").replace("seq = 8192", "seq = 16"))
    report = json.loads(_analyze(path, "--format", "json").stdout)
    assert report["notes"] == []


def test_score_note_is_silent_with_a_fused_kernel(tmp_path: Path) -> None:
    text = LONG.replace("KERNEL", "attention_kernel = fused")
    compiled = dagc.compile_text(text, path="t.dag")
    bases = {step.base for step in expand(compiled).graph.steps}
    if "attn_core" not in bases:
        pytest.skip("the fused attention kernel (step attn_core) is not lowered yet")
    analysis = analyze_compiled(compiled, CostOptions()).analysis
    assert analysis.notes == ()
