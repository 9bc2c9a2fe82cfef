"""Attention kernels, masks, qk_norm and multi-head latent attention (MLA).

Every expected number is worked out by hand in the test from the semantics
(docs/semantics.md, "Attention"): the fused kernel's FLOPs and bytes, the per-rank product
shapes of MLA at tp=2, and the FLOPs a whole file executes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import dagc
from dagc.analysis.costs import CostModel, roofline_for
from dagc.analysis.selection import CostOptions, cost_model
from dagc.analysis.table import TableModel, load_cost_table
from dagc.cli import app
from dagc.expand import expand
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import DType
from dagc.ir.terms import CostTerm, TermKind
from dagc.passes.manager import PassOptions
from helpers import check_golden

# -- the fused term by hand ------------------------------------------------------------


def attn(kind: TermKind, *args: int) -> CostTerm:
    return CostTerm(kind, args)


def test_fused_term_flops_full() -> None:
    # Bm=2, h=4 query heads, kv=1, S=64, d_qk=32, d_v=16: Q·Kᵀ is 2·64·64·32 per head and
    # sequence, weights·V 2·64·64·16; 2 sequences × 4 heads.
    term = attn(TermKind.ATTENTION, 2, 4, 1, 64, 32, 16)
    assert term.flops() == 2 * 4 * (2 * 64 * 64 * 32 + 2 * 64 * 64 * 16)
    assert term.flops() == 3_145_728


def test_fused_term_flops_causal() -> None:
    # Causal: 64·65/2 = 2080 query-key pairs per head and sequence instead of 4096.
    term = attn(TermKind.CAUSAL_ATTENTION, 2, 4, 1, 64, 32, 16)
    assert term.flops() == 2 * 4 * 2 * 2080 * (32 + 16)
    assert term.flops() == 1_597_440


def test_fused_term_bytes() -> None:
    # bf16 (w = 2): Q (2·64·4·32) and O (2·64·4·16) for the 4 query heads, K (2·64·1·32) and
    # V (2·64·1·16) for the one kv head; the scores never reach memory. Same for causal.
    expected = (2 * 64 * 4 * 32 + 2 * 64 * 4 * 16 + 2 * 64 * 32 + 2 * 64 * 16) * 2
    assert expected == 61_440
    for kind in (TermKind.ATTENTION, TermKind.CAUSAL_ATTENTION):
        assert attn(kind, 2, 4, 1, 64, 32, 16).bytes_moved(2) == expected


def test_roofline_prices_the_fused_kernel_like_a_product() -> None:
    model = roofline_for("h100", DType.BF16)
    p = model.params
    big = attn(TermKind.CAUSAL_ATTENTION, 8, 16, 16, 4096, 128, 128)
    # compute-bound: 2·8·16·(4096·4097/2)·256 FLOPs at peak × matmul efficiency
    flops = 2 * 8 * 16 * (4096 * 4097 // 2) * 256
    assert model.term_seconds(big) == pytest.approx(flops / (p.peak_flops * p.matmul_efficiency))
    small = attn(TermKind.ATTENTION, 1, 1, 1, 8, 16, 16)
    # memory-bound: (8·1·32 + 8·1·32)·2 bytes at HBM bandwidth × memory efficiency
    nbytes = (8 * 32 + 8 * 32) * 2
    assert model.term_seconds(small) == pytest.approx(
        nbytes / (p.hbm_bandwidth * p.memory_efficiency)
    )


# -- files ---------------------------------------------------------------------------------


def dense(kernel: str = "fused", mask: str = "causal", tp: int = 4, extra: str = "") -> str:
    """A small dense model: H=256, nh=8 of d=32, nkv=2, F=512 (gelu), B=4, S=64."""
    return f"""\
model tiny {{
  layers = 2
  hidden = 256
  heads = 8
  head_dim = 32
  kv_heads = 2
  ffn = 512
{extra}}}
workload {{ batch = 4; seq = 64 }}
devices {{ group g = gpu[0..{tp - 1}] }}
layers 0..1 on g {{
  attention tp={tp} kernel={kernel} mask={mask}
  mlp tp={tp}
}}
"""


def mla(q_lora: bool = True, fused_qkv: bool = False, kernel: str = "explicit") -> str:
    """A DeepSeek-like model: H=512, nh=8, q_lora_rank 96, kv_lora_rank 64, nope 32,
    rope 16, v 32; B=2, S=32 (T=64), tp=2."""
    return f"""\
model mla {{
  layers = 1
  hidden = 512
  heads = 8
  {"q_lora_rank = 96" if q_lora else ""}
  kv_lora_rank = 64
  qk_nope_head_dim = 32
  qk_rope_head_dim = 16
  v_head_dim = 32
  ffn = 1024
}}
workload {{ batch = 2; seq = 32 }}
devices {{ group g = gpu[0..1] }}
layers 0 on g {{
  attention tp=2 kernel={kernel}{" fused_qkv" if fused_qkv else ""}
  mlp tp=2
}}
"""


def graph_of(text: str, *, verify: bool = False) -> DeviceGraph:
    compiled = dagc.compile_text(text, "t.dag")
    options = PassOptions(verify_each=True) if verify else PassOptions()
    return expand(compiled, options=options).graph


def rank_terms(graph: DeviceGraph, gpu: int) -> dict[str, CostTerm]:
    """Layer 0's attention operations of one GPU, by step (`qkv.q_a`, `attn_core`)."""
    found = {}
    for op in graph.operations():
        if op.gpus == (gpu,) and op.layer == 0:
            base, _, part = op.name.partition(".")
            step = base.removesuffix(f"_l0_gpu{gpu}")
            found[step + (f".{part}" if part else "")] = op.term
    return found


def mm(m: int, k: int, n: int) -> CostTerm:
    return CostTerm(TermKind.MATMUL, (m, k, n))


def elem(n: int) -> CostTerm:
    return CostTerm(TermKind.ELEMENTWISE, (n,))


# -- the fused kernel in a file ------------------------------------------------------------


def test_fused_causal_kernel_replaces_scores_softmax_and_weights_v() -> None:
    terms = rank_terms(graph_of(dense()), 1)
    # rank 1 of tp=4: 2 query heads, 1 kv head
    assert terms["attn_core"] == attn(TermKind.CAUSAL_ATTENTION, 4, 2, 1, 64, 32, 32)
    assert not {"attn_scores", "softmax", "attn_out"} & set(terms)
    full = rank_terms(graph_of(dense(mask="full")), 1)
    assert full["attn_core"] == attn(TermKind.ATTENTION, 4, 2, 1, 64, 32, 32)


def test_fused_causal_file_executes_the_closed_form() -> None:
    T, H, nh, d, nkv, F, B, S, tp, L = 4 * 64, 256, 8, 32, 2, 512, 4, 64, 4, 2
    projections = 2 * T * H * nh * d + 2 * 2 * T * H * nkv * d + 2 * T * nh * d * H
    core = 2 * B * nh * (S * (S + 1) // 2) * (d + d)  # the causal triangle
    replicated_kv = 2 * 2 * T * H * d * (tp - nkv)  # nkv=2 < tp=4: each rank computes one
    mlp = 2 * T * H * F * 2
    expected = L * (projections + core + replicated_kv + mlp)
    assert expected == 2 * (83_886_080 + 8_519_680 + 16_777_216 + 134_217_728)
    assert graph_of(dense()).total_matmul_flops() == expected


def test_explicit_kernel_ignores_the_mask() -> None:
    # An explicit masked GEMM computes every S×S entry: the same operations either way.
    full, causal = graph_of(dense("explicit", "full")), graph_of(dense("explicit", "causal"))
    assert [op.term for op in full.operations()] == [op.term for op in causal.operations()]
    assert rank_terms(causal, 0)["attn_scores"] == mm(4 * 64 * 2, 32, 64)


def test_qk_norm_is_an_elementwise_step_after_the_projections() -> None:
    terms = rank_terms(graph_of(dense(extra="  qk_norm = true\n")), 1)
    steps = list(terms)
    assert steps.index("qk_norm") == steps.index("qkv.v") + 1
    assert terms["qk_norm"] == elem(4 * 64 * (2 + 1) * 32)  # T·(h_i + kv_i)·d


def test_qk_norm_and_biases_add_no_flops() -> None:
    plain = graph_of(dense()).total_matmul_flops()
    extra = "  qk_norm = true\n  qkv_bias = true\n  o_bias = true\n"
    assert graph_of(dense(extra=extra)).total_matmul_flops() == plain


# -- MLA -------------------------------------------------------------------------------


def test_mla_rank_shapes_with_q_lora() -> None:
    # T=64, H=512, h_i = 8/2 = 4, d = nope+rope = 48, d_v = 32, r_q = 96, r_kv = 64
    terms = rank_terms(graph_of(mla()), 1)
    expected = {
        "ln1": elem(64 * 512),
        "qkv.q_a": mm(64, 512, 96),  # replicated: the whole q_a on every rank
        "qkv.q_a_norm": elem(64 * 96),
        "qkv.q_b": mm(64, 96, 4 * 48),
        "qkv.kv_a": mm(64, 512, 64 + 16),  # replicated: latent + the shared rope key
        "qkv.kv_a_norm": elem(64 * 64),
        "qkv.kv_b": mm(64, 64, 4 * (32 + 32)),  # k_nope and v of the rank's 4 heads
        "attn_scores": mm(2 * 32 * 4, 48, 32),
        "softmax": elem(2 * 32 * 4 * 32),
        "attn_out": mm(2 * 32 * 4, 32, 32),
        "o_proj": mm(64, 4 * 32, 512),
        "res1": elem(64 * 512),
    }
    assert {k: v for k, v in terms.items() if k in expected} == expected
    assert list(terms)[: len(expected)] == list(expected)


def test_mla_rank_shapes_without_q_lora() -> None:
    terms = rank_terms(graph_of(mla(q_lora=False)), 0)
    assert terms["qkv.q"] == mm(64, 512, 4 * 48)
    assert "qkv.q_a" not in terms and "qkv.q_b" not in terms and "qkv.q_a_norm" not in terms
    assert terms["qkv.kv_a"] == mm(64, 512, 80)


def test_mla_fused_qkv() -> None:
    terms = rank_terms(graph_of(mla(fused_qkv=True)), 0)
    assert terms["qkv.qkv_a"] == mm(64, 512, 96 + 64 + 16)  # q_a beside kv_a
    assert "qkv.q_a" not in terms and "qkv.kv_a" not in terms
    assert terms["qkv.q_b"] == mm(64, 96, 192) and terms["qkv.kv_b"] == mm(64, 64, 256)
    # without q_lora_rank: the rank's slice of q beside the whole kv_a
    no_lora = rank_terms(graph_of(mla(q_lora=False, fused_qkv=True)), 0)
    assert no_lora["qkv.qkv_a"] == mm(64, 512, 4 * 48 + 64 + 16)
    assert "qkv.q" not in no_lora


def test_mla_fused_kernel() -> None:
    terms = rank_terms(graph_of(mla(kernel="fused")), 1)
    # h_i = kv_i = 4 (every head its own K and V), d_qk = 48, d_v = 32
    assert terms["attn_core"] == attn(TermKind.ATTENTION, 2, 4, 4, 32, 48, 32)


def test_mla_heads_need_not_divide_hidden() -> None:
    # d = qk_nope_head_dim + qk_rope_head_dim = 48, whatever hidden/heads (512/6) would be
    text = mla().replace("heads = 8", "heads = 6")
    terms = rank_terms(graph_of(text), 0)
    assert terms["qkv.q_b"] == mm(64, 96, 3 * 48)


@pytest.mark.parametrize("q_lora", [True, False])
def test_mla_executes_the_closed_form_with_replicated_down_projections(q_lora: bool) -> None:
    T, H, nh, B, S, tp = 64, 512, 8, 2, 32, 2
    r_q, r_kv, nope, rope, dv = 96, 64, 32, 16, 32
    if q_lora:
        query = 2 * T * H * r_q + 2 * T * r_q * nh * (nope + rope)
        extra = (tp - 1) * (2 * T * H * r_q + 2 * T * H * (r_kv + rope))
    else:
        query = 2 * T * H * nh * (nope + rope)
        extra = (tp - 1) * 2 * T * H * (r_kv + rope)
    kv = 2 * T * H * (r_kv + rope) + 2 * T * r_kv * nh * (nope + dv)
    core = 2 * B * nh * S * S * (nope + rope) + 2 * B * nh * S * S * dv
    o_proj = 2 * T * nh * dv * H
    mlp = 2 * T * H * 1024 * 2
    expected = query + kv + core + o_proj + mlp + extra
    assert graph_of(mla(q_lora=q_lora)).total_matmul_flops() == expected


# -- the verifier ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        dense(),
        dense(mask="full"),
        dense("explicit", "causal"),
        dense(tp=8, extra="  qk_norm = true\n"),
        dense(tp=1),
        mla(),
        mla(kernel="fused"),
        mla(q_lora=False),
        mla(fused_qkv=True, kernel="fused"),
        mla(q_lora=False, fused_qkv=True),
    ],
    ids=[
        "fused-causal",
        "fused-full",
        "explicit-causal",
        "fused-qk-norm-tp8",
        "fused-tp1",
        "mla",
        "mla-fused",
        "mla-no-q-lora",
        "mla-fused-qkv-fused",
        "mla-no-q-lora-fused-qkv",
    ],
)
@pytest.mark.parametrize("symmetric", [False, True], ids=["full", "collapsed"])
def test_verifier_passes(text: str, symmetric: bool) -> None:
    compiled = dagc.compile_text(text, "t.dag")
    expand(compiled, options=PassOptions(verify_each=True), symmetric=symmetric)


@st.composite
def attention_configs(draw: st.DrawFn) -> tuple[str, int]:
    """A random attention + mlp file (kernel, mask, qk_norm, fused_qkv, GQA or MLA, tp,
    micro-batches) and the matmul FLOPs it must execute, by the closed forms of the
    semantics (written here, not asked of dagc)."""
    layers, heads = draw(st.integers(1, 3)), draw(st.sampled_from([1, 2, 3, 4, 6]))
    tp = draw(st.integers(1, heads))
    # ffn >= tp: a tp larger than the MLP's columns is an error of its own
    hidden, ffn = draw(st.sampled_from([8, 16, 24])), draw(st.integers(max(4, tp), 20))
    m, bm, seq = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 9))
    kernel, mask = (
        draw(st.sampled_from(["explicit", "fused"])),
        draw(st.sampled_from(["full", "causal"])),
    )
    qk_norm, fused_qkv, latent = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    T, pairs = bm * seq, seq * seq
    if kernel == "fused" and mask == "causal":
        pairs = seq * (seq + 1) // 2
    if latent:
        r_q = draw(st.none() | st.integers(2, 12))
        r_kv, nope, rope, dv = (draw(st.integers(1, 8)) for _ in range(4))
        keys = f"kv_lora_rank = {r_kv}; qk_nope_head_dim = {nope}; qk_rope_head_dim = {rope};"
        keys += f" v_head_dim = {dv};" + (f" q_lora_rank = {r_q};" if r_q else "")
        d = nope + rope
        down = 2 * T * hidden * (r_kv + rope) + (2 * T * hidden * r_q if r_q else 0)
        query = 2 * T * r_q * heads * d if r_q else 2 * T * hidden * heads * d
        attention = tp * down + query + 2 * T * r_kv * heads * (nope + dv)
        attention += 2 * bm * heads * pairs * (d + dv) + 2 * T * heads * dv * hidden
    else:
        d = draw(st.integers(1, 8))
        kv = draw(st.sampled_from([k for k in range(1, heads + 1) if heads % k == 0]))
        keys = f"head_dim = {d}; kv_heads = {kv};"
        attention = 2 * T * hidden * heads * d + 2 * 2 * T * hidden * kv * d
        attention += 2 * bm * heads * pairs * (d + d) + 2 * T * heads * d * hidden
        attention += 2 * 2 * T * hidden * d * max(tp - kv, 0)
    flags = " fused_qkv" if fused_qkv else ""
    text = (
        f"model m {{ layers = {layers}; hidden = {hidden}; heads = {heads}; {keys}"
        f" ffn = {ffn}; qk_norm = {str(qk_norm).lower()} }}\n"
        f"workload {{ batch = {bm * m}; seq = {seq}; microbatches = {m} }}\n"
        f"devices {{ group g = gpu[0..{tp - 1}] }}\n"
        f"layers 0..{layers - 1} on g {{ attention kernel={kernel} mask={mask}{flags}; mlp }}\n"
    )
    mlp = 2 * T * hidden * ffn * 2
    return text, layers * m * (attention + mlp)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attention_configs(), st.booleans())
def test_generated_attention_verifies_and_executes_its_closed_form(
    config: tuple[str, int], symmetric: bool
) -> None:
    text, flops = config
    compiled = dagc.compile_text(text, "t.dag")
    graph = expand(compiled, options=PassOptions(verify_each=True), symmetric=symmetric).graph
    if not symmetric:
        assert graph.total_matmul_flops() == flops, text


# -- costs ---------------------------------------------------------------------------------


def test_cost_plugin_overrides_the_fused_kernel(tmp_path: Path) -> None:
    plugin = tmp_path / "attn.py"
    plugin.write_text(
        "def causal_attn_time(b, h, kv, s, d_qk, d_v):\n"
        "    return b * h * s * 1e-6\n"
        "def attn_time(b, h, kv, s, d_qk, d_v):\n"
        "    return 1.0\n"
    )
    program = dagc.compile_text(dense(), "t.dag").program
    model, _ = cost_model(program, CostOptions(plugin=plugin))
    causal = attn(TermKind.CAUSAL_ATTENTION, 4, 2, 1, 64, 32, 32)
    assert model.term_seconds(causal) == pytest.approx(4 * 2 * 64 * 1e-6)
    assert model.term_seconds(attn(TermKind.ATTENTION, 4, 2, 1, 64, 32, 32)) == 1.0
    assert "causal_attn_time" in model.name


def test_cost_table_leaves_fused_kernels_to_its_fallback(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    rows = [f"{m},{k},{n},1.0" for m in (64, 128) for k in (32, 64) for n in (32, 64)]
    table.write_text("m,k,n,seconds\n" + "\n".join(rows) + "\n")

    class Fallback(CostModel):
        name = "fallback"

        def term_seconds(self, term: CostTerm) -> float:
            return 42.0

    model = TableModel(load_cost_table(table), Fallback())
    # (Bm·h·S, d, S) = (64, 32, 64) is inside the table's range: still not a product
    assert model.term_seconds(attn(TermKind.ATTENTION, 1, 1, 1, 64, 32, 32)) == 42.0
    assert model.term_seconds(attn(TermKind.CAUSAL_ATTENTION, 1, 1, 1, 64, 32, 32)) == 42.0
    assert model.term_seconds(mm(64, 32, 64)) == 1.0


# -- golden step IR ------------------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parent / "golden" / "steps"


@pytest.mark.parametrize(
    ("name", "text"),
    [("fused_causal", dense(extra="  qk_norm = true\n")), ("mla", mla(kernel="fused"))],
)
def test_golden_steps(tmp_path: Path, name: str, text: str) -> None:
    """`dagc lower --emit steps` of a fused causal and an MLA file, reviewed line by line."""
    path = tmp_path / f"{name}.dag"
    path.write_text(text)
    result = CliRunner().invoke(app, ["lower", str(path), "--emit", "steps"])
    assert result.exit_code == 0, result.stderr
    check_golden(GOLDEN / f"{name}.txt", result.stdout, "the step IR, step by step")
