"""`dagc analyze` and `dagc compare` against numbers derived by hand from the reference
semantics (/work/shared/spec/semantics.md, docs/semantics.md): the seed's two issue checks,
the pipeline rules, the report's figures (FLOPs, operations, edges, busy and idle time,
memory), the report formats, and compare.

Under `--matmul-only` with examples/plugins/flops_only.py a product costs
g(M, K, N) = 2·M·K·N / 1e15 seconds and everything else costs 0.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dagc
from dagc.api import CostOptions, analyze_compiled, analyze_file
from dagc.cli import app
from dagc.outputs import write_text_atomically as write_atomically
from helpers import REPO

runner = CliRunner()

SEED = REPO / "examples" / "seed"
BASELINE_FILE = SEED / "baseline_tp8_pp2.dag"
MA_FILE = SEED / "ma_separation.dag"
FLOPS_PLUGIN = REPO / "examples" / "plugins" / "flops_only.py"
SEED_COSTS = ["--cost-plugin", str(FLOPS_PLUGIN), "--matmul-only"]
SEED_OPTIONS = CostOptions(plugin=FLOPS_PLUGIN, matmul_only=True)


def g(m: int, k: int, n: int) -> float:
    """Get_Time under flops_only.py: 2·M·K·N FLOPs at 1 PFLOP/s."""
    return 2 * m * k * n / 1e15


# ---------------------------------------------------------------------------------------
# The seed: closed forms from the semantics (T = B·S = 1024·2048 tokens, one micro-batch)

T = 1024 * 2048
H, F = 4096, 16384

# Baseline: tp = 8 gives each GPU 4 heads of 128 (512 columns) and F/8 = 2048; with one
# micro-batch the path runs through all 4 layers (2 on stage 0, then 2 on stage 1).
BASELINE_LAYER = (
    3 * g(T, 4096, 512)  # q, k, v
    + g(1024 * 4 * 2048, 128, 2048)  # attn_scores: Bm·h_i·S x d x S
    + g(1024 * 4 * 2048, 2048, 128)  # attn_out
    + g(T, 512, 4096)  # o_proj
    + g(T, 4096, 2048)  # mlp_up
    + g(T, 2048, 4096)  # mlp_down
)
BASELINE_TIME = 4 * BASELINE_LAYER

# MA separation: 32 heads over tp = 12 give ranks 0-7 three heads (384 columns); the 16
# experts (top_k = 16, so T_e = T) sit 4 per MoE GPU and run one after another.
MA_LAYER = (
    3 * g(T, 4096, 384)
    + g(1024 * 3 * 2048, 128, 2048)
    + g(1024 * 3 * 2048, 2048, 128)
    + g(T, 384, 4096)
    + g(T, 4096, 16)  # gate
    + 4 * (g(T, 4096, 16384) + g(T, 16384, 4096))  # 4 experts, one after another
)
MA_TIME = 4 * MA_LAYER

# Unsharded matmul FLOPs of the baseline: per layer q/k/v 2·T·H·3H, scores and weights·V
# 2·(B·nh·S·d·S) each, o_proj 2·T·H·H, mlp up and down 2·T·H·F each.
BASELINE_FLOPS = 4 * (
    2 * T * H * 3 * H + 2 * 2 * (1024 * 32 * 2048 * 128 * 2048) + 2 * T * H * H + 2 * 2 * T * H * F
)


def test_closed_forms_match_the_issue() -> None:
    assert round(BASELINE_TIME, 6) == 0.457397
    assert round(MA_TIME, 6) == 9.140240


def _json(*args: str) -> tuple[dict[str, Any], str]:
    result = runner.invoke(app, ["analyze", *args, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    return _json(str(BASELINE_FILE), *SEED_COSTS)[0]


@pytest.fixture(scope="module")
def ma() -> tuple[dict[str, Any], str]:
    return _json(str(MA_FILE), *SEED_COSTS)


def test_issue_baseline_cli(baseline: dict[str, Any]) -> None:
    assert baseline["critical_path"]["time_s"] == pytest.approx(BASELINE_TIME, abs=1e-9)
    assert abs(baseline["critical_path"]["time_s"] - 0.457397) < 1e-6


def test_issue_ma_cli(ma: tuple[dict[str, Any], str]) -> None:
    report, _ = ma
    assert report["critical_path"]["time_s"] == pytest.approx(MA_TIME, abs=1e-9)
    assert abs(report["critical_path"]["time_s"] - 9.140240) < 1e-6


def test_issue_checks_through_the_library() -> None:
    assert analyze_file(BASELINE_FILE, SEED_OPTIONS).total_s == pytest.approx(
        BASELINE_TIME, abs=1e-9
    )
    result = analyze_compiled(dagc.compile_file(MA_FILE), SEED_OPTIONS)
    assert result.analysis.total_s == pytest.approx(MA_TIME, abs=1e-9)
    # The uneven head split is a compile warning, carried with the result.
    assert any("do not split evenly" in w.message for w in result.warnings)


def _layer_path(layer: int, gpu: int) -> list[str]:
    """A dense layer's nodes on one GPU, in program order (the spec's op tables)."""
    attention = ["ln1", "qkv", "attn_scores", "softmax", "attn_out", "o_proj"]
    mlp = ["ln2", "mlp_up", "mlp_act", "mlp_down"]
    return [
        *(f"{n}_l{layer}_gpu{gpu}" for n in attention),
        f"all_reduce_attn_l{layer}",
        f"res1_l{layer}_gpu{gpu}",
        *(f"{n}_l{layer}_gpu{gpu}" for n in mlp),
        f"all_reduce_mlp_l{layer}",
        f"res2_l{layer}_gpu{gpu}",
    ]


def test_baseline_critical_path_nodes(baseline: dict[str, Any]) -> None:
    # Ties break by the lowest GPU id: gpu0 in stage 0, gpu8 in stage 1.
    expected = [
        *_layer_path(0, 0),
        *_layer_path(1, 0),
        "send_stage1",
        "recv_stage1",
        *_layer_path(2, 8),
        *_layer_path(3, 8),
    ]
    nodes = baseline["critical_path"]["nodes"]
    assert nodes[0] == "ln1_l0_gpu0"
    i = nodes.index("send_stage1")
    assert nodes[i + 1] == "recv_stage1"
    assert nodes == expected
    steps = baseline["critical_path"]["steps"]
    assert [s["node"] for s in steps] == nodes
    qkv = steps[1]
    assert qkv["ops"] == ["qkv_l0_gpu0.q", "qkv_l0_gpu0.k", "qkv_l0_gpu0.v"]
    assert qkv["terms"] == ["Get_Time(2097152, 4096, 512)"] * 3
    assert qkv["time_s"] == pytest.approx(3 * g(T, 4096, 512), rel=1e-12)
    assert sum(s["time_s"] for s in steps) == pytest.approx(BASELINE_TIME, rel=1e-12)
    # Starts add up: each node starts when the one before it ends.
    for before, after in itertools.pairwise(steps):
        assert after["start_s"] == pytest.approx(before["start_s"] + before["time_s"], abs=1e-12)


def test_ma_critical_path_nodes(ma: tuple[dict[str, Any], str]) -> None:
    report, _ = ma
    nodes = report["critical_path"]["nodes"]
    layer0 = [
        "ln1_l0_gpu0",
        "qkv_l0_gpu0",
        "attn_scores_l0_gpu0",
        "softmax_l0_gpu0",
        "attn_out_l0_gpu0",
        "o_proj_l0_gpu0",
        "all_reduce_attn_l0",
        "res1_l0_gpu0",
        "broadcast_l0",
        "recv_moe_l0",
        "ln2_l0_gpu12",
        "gate_l0_gpu12",
        "expert_l0_0_gpu12",
        "expert_l0_1_gpu12",
        "expert_l0_2_gpu12",
        "expert_l0_3_gpu12",
        "expert_agg_l0_gpu12",
        "return_l0",
        "res2_l0_gpu0",
    ]
    assert nodes[: len(layer0)] == layer0
    assert nodes[len(layer0)] == "ln1_l1_gpu0"
    assert nodes[-1] == "res2_l3_gpu0"
    assert report["critical_path"]["bottleneck"]["family"] == "expert"
    expert_share = 4 * 4 * (g(T, 4096, 16384) + g(T, 16384, 4096)) / MA_TIME
    assert report["critical_path"]["bottleneck"]["share"] == pytest.approx(expert_share)


# ---------------------------------------------------------------------------------------
# The JSON report's figures, by hand


def test_baseline_totals(baseline: dict[str, Any]) -> None:
    totals = baseline["totals"]
    assert totals["matmul_flops"] == BASELINE_FLOPS
    # Operations: each of 16 GPUs runs 2 layers of 14 own operations (ln1, q, k, v,
    # attn_scores, softmax, attn_out, o_proj, res1, ln2, mlp_up, mlp_act, mlp_down, res2);
    # each of 4 layers has 2 all-reduces; plus send_stage1 and recv_stage1.
    assert totals["ops"] == 16 * 2 * 14 + 4 * 2 + 2
    # Edges: every GPU's program order is a chain of 33 nodes (its 28 operations, 4
    # all-reduces and the send or the receive): 32 edges each, plus send -> recv. Data edges
    # all coincide with those.
    # Data edges off the program-order chain, from the values the steps read: q, k and v
    # each read ln1, attn_scores reads q and k, attn_out reads v, res1 and res2 read the
    # residual x: ln1 -> k, ln1 -> v, q -> attn_scores, k -> attn_scores, v -> attn_out,
    # x -> res1, x -> res2: 7 per GPU and layer, except that layer 0's attention has no x
    # (the program's first block reads no step's output): 8 fewer.
    assert totals["edges"] == 16 * 32 + 1 + 7 * 16 * 2 - 8
    assert totals["gpus"] == 16
    assert totals["mfu"] == pytest.approx(BASELINE_FLOPS / BASELINE_TIME / (989e12 * 16))
    assert baseline["warnings"] == []
    assert baseline["format"] == "dagc-analysis"
    assert baseline["critical_path"]["compute_s"] == pytest.approx(BASELINE_TIME)
    assert baseline["critical_path"]["communication_s"] == 0.0


def test_baseline_per_gpu(baseline: dict[str, Any]) -> None:
    gpus = baseline["gpus"]
    assert [x["gpu"] for x in gpus] == list(range(16))
    total = baseline["critical_path"]["time_s"]
    two_layers = 2 * BASELINE_LAYER  # every GPU runs 2 layers' products, nothing else costs
    per_gpu_flops = 2 * (
        3 * 2 * T * 4096 * 512
        + 2 * 2 * (1024 * 4 * 2048 * 128 * 2048)
        + 2 * T * 512 * 4096
        + 2 * 2 * T * 4096 * 2048
    )
    for x in gpus:
        assert x["busy_s"] == pytest.approx(two_layers, rel=1e-12)
        assert x["idle_s"] == pytest.approx(total - two_layers, rel=1e-9)
        assert x["bubble"] == pytest.approx((total - two_layers) / total, rel=1e-9)
        assert x["matmul_flops"] == per_gpu_flops
        assert x["tflops"] == pytest.approx(per_gpu_flops / total / 1e12)
        assert x["hfu"] == pytest.approx(per_gpu_flops / total / 989e12)
        assert "mfu" not in x  # per GPU only executed FLOPs exist: it was renamed hfu
        assert x["memory_bytes"] == x["weight_bytes"] + x["activation_bytes"]
    assert sum(x["matmul_flops"] for x in gpus) == BASELINE_FLOPS


def test_baseline_memory_by_hand(baseline: dict[str, Any]) -> None:
    w = 2
    weights = 2 * (3 * 4096 * 512 + 512 * 4096 + 4096 * 2048 + 2048 * 4096) * w
    # The largest working set of one operation: softmax reads and writes Bm·h_i·S·S scores.
    softmax = 2 * (1024 * 4 * 2048 * 2048) * w
    scores = (1024 * 4 * 2048 * 128 + 128 * 2048 + 1024 * 4 * 2048 * 2048) * w
    mlp_act = 2 * T * 2048 * w
    assert softmax > max(scores, mlp_act)
    for x in baseline["gpus"]:
        assert x["weight_bytes"] == weights
        assert x["activation_bytes"] == softmax
    assert baseline["memory_limit_bytes"] == 80e9


def test_ma_memory_and_warnings(ma: tuple[dict[str, Any], str]) -> None:
    report, stderr = ma
    w = 2
    by_gpu = {x["gpu"]: x for x in report["gpus"]}
    # gpu0: 4 layers of 3 heads: q, k, v (4096 x 384 each) and o_proj (384 x 4096).
    assert by_gpu[0]["weight_bytes"] == 4 * (3 * 4096 * 384 + 384 * 4096) * w
    assert by_gpu[8]["weight_bytes"] == 4 * (3 * 4096 * 256 + 256 * 4096) * w
    # gpu12: 4 layers of a gate (4096 x 16) and 4 experts (4096 x 16384, 16384 x 4096).
    assert by_gpu[12]["weight_bytes"] == 4 * (4096 * 16 + 4 * 2 * 4096 * 16384) * w
    # Its largest operation: an expert's activation writes T_e·Fe = T·16384 elements.
    assert by_gpu[12]["activation_bytes"] == 2 * T * 16384 * w
    over = [g for g in range(16) if by_gpu[g]["memory_bytes"] > 80e9]
    assert over == [12, 13, 14, 15]
    # The four GPUs have the same figures: one warning names the run.
    [message] = report["warnings"]
    assert message.startswith("gpu[12..15] each needs 141.7 GB")
    assert message.endswith("more than 80 GB")
    assert f"{MA_FILE}: warning: {message}" in stderr


# ---------------------------------------------------------------------------------------
# Pipelines: (m + p − 1)·t with equal stages, Σ tₛ + (m − 1)·max tₛ otherwise

# hidden 256, 4 heads of 64, ffn 1024, gelu; batch 8 x seq 64.
MODEL = "model m {{ layers = {layers}; hidden = 256; heads = 4; ffn = 1024 }}\n"
WORKLOAD = "workload {{ batch = 8; seq = 64; microbatches = {m} }}\n"


def layer_time(m: int, tp: int = 1, cost: Any = g) -> float:
    """One layer's products on one GPU of a tp group, for one of m micro-batches."""
    bm, s, h, d = 8 // m, 64, 256, 64
    t = bm * s  # T = B/m · S
    heads, f = 4 // tp, 1024 // tp
    return (
        3 * cost(t, h, heads * d)
        + cost(bm * heads * s, d, s)
        + cost(bm * heads * s, s, d)
        + cost(t, heads * d, h)
        + cost(t, h, f)
        + cost(t, f, h)
    )


def _pipeline(
    layers: int, m: int, devices: str, placement: str, options: CostOptions = SEED_OPTIONS
) -> Any:
    text = MODEL.format(layers=layers) + WORKLOAD.format(m=m) + devices + placement
    return analyze_compiled(dagc.compile_text(text, path="p.dag"), options).analysis


TWO = "devices { group a = gpu[0]; group b = gpu[1] }\n"
THREE = "devices { group a = gpu[0]; group b = gpu[1]; group c = gpu[2] }\n"


@pytest.mark.parametrize("m", [1, 2, 4, 8])
def test_two_equal_stages(m: int) -> None:
    analysis = _pipeline(
        4, m, TWO, "layers 0..1 on a { attention; mlp }\nlayers 2..3 on b { attention; mlp }\n"
    )
    stage = 2 * layer_time(m)
    assert analysis.total_s == pytest.approx((m + 2 - 1) * stage, rel=1e-12)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_three_equal_stages_with_pp_sugar(m: int) -> None:
    analysis = _pipeline(6, m, THREE, "layers 0..5 on a, b, c pp=3 { attention; mlp }\n")
    stage = 2 * layer_time(m)
    assert analysis.total_s == pytest.approx((m + 3 - 1) * stage, rel=1e-12)


def test_equal_stages_with_tensor_parallel_groups() -> None:
    devices = "devices { group a = gpu[0..1]; group b = gpu[2..3] }\n"
    analysis = _pipeline(
        2, 4, devices, "layers 0 on a { attention; mlp }\nlayers 1 on b { attention; mlp }\n"
    )
    assert analysis.total_s == pytest.approx((4 + 2 - 1) * layer_time(4, tp=2), rel=1e-12)


@pytest.mark.parametrize(
    ("placement", "stage_layers"),
    [
        ("layers 0..2 on a { attention; mlp }\nlayers 3 on b { attention; mlp }\n", [3, 1]),
        ("layers 0 on a { attention; mlp }\nlayers 1..3 on b { attention; mlp }\n", [1, 3]),
    ],
)
@pytest.mark.parametrize("m", [1, 2, 4])
def test_two_unequal_stages(placement: str, stage_layers: list[int], m: int) -> None:
    analysis = _pipeline(4, m, TWO, placement)
    stages = [n * layer_time(m) for n in stage_layers]
    assert analysis.total_s == pytest.approx(sum(stages) + (m - 1) * max(stages), rel=1e-12)


def test_three_unequal_stages() -> None:
    m = 4
    placement = (
        "layers 0 on a { attention; mlp }\n"
        "layers 1..2 on b { attention; mlp }\n"
        "layers 3 on c { attention; mlp }\n"
    )
    analysis = _pipeline(4, m, THREE, placement)
    stages = [1 * layer_time(m), 2 * layer_time(m), 1 * layer_time(m)]
    assert analysis.total_s == pytest.approx(sum(stages) + (m - 1) * max(stages), rel=1e-12)
    names = [node.name for node in analysis.path]
    assert names[0] == "ln1_l0_gpu0_mb0"
    assert "send_stage1_mb0" in names and "send_stage2_mb0" in names


def test_pipeline_matmul_only_over_the_roofline() -> None:
    """The same rule with the roofline pricing the products (h100 defaults by hand)."""

    def roofline(m: int, k: int, n: int) -> float:
        return max(2 * m * k * n / (989e12 * 0.70), (m * k + k * n + m * n) * 2 / (3.35e12 * 0.85))

    m = 4
    analysis = _pipeline(
        4,
        m,
        TWO,
        "layers 0..2 on a { attention; mlp }\nlayers 3 on b { attention; mlp }\n",
        CostOptions(matmul_only=True),
    )
    stages = [3 * layer_time(m, cost=roofline), layer_time(m, cost=roofline)]
    assert analysis.total_s == pytest.approx(sum(stages) + (m - 1) * max(stages), rel=1e-12)


def test_pipeline_bottleneck_family_ignores_the_microbatch(tmp_path: Path) -> None:
    plugin = tmp_path / "p2p.py"
    plugin.write_text(
        "def get_time(m, k, n):\n    return 0.0\n"
        "def elem_time(n):\n    return 0.0\n"
        "def p2p_time(nbytes):\n    return 10.0\n"
    )
    m = 4
    analysis = _pipeline(
        2,
        m,
        TWO,
        "layers 0 on a { attention; mlp }\nlayers 1 on b { attention; mlp }\n",
        CostOptions(plugin=plugin),
    )
    # The sends run one after another on gpu0: m x 10 s, and nothing else costs.
    assert analysis.total_s == pytest.approx(m * 10.0)
    assert analysis.bottleneck() == ("send_stage", pytest.approx(1.0))
    assert analysis.communication_s == pytest.approx(m * 10.0)


# ---------------------------------------------------------------------------------------
# The critical path split by kind and by block, and throughput

# The seed baseline's products per layer, by block (the closed form above, taken apart).
BASELINE_ATTENTION = 4 * (
    3 * g(T, 4096, 512)
    + g(1024 * 4 * 2048, 128, 2048)
    + g(1024 * 4 * 2048, 2048, 128)
    + g(T, 512, 4096)
)
BASELINE_MLP = 4 * (g(T, 4096, 2048) + g(T, 2048, 4096))


def test_seed_split_is_all_matmul(baseline: dict[str, Any]) -> None:
    path = baseline["critical_path"]
    assert abs(BASELINE_ATTENTION + BASELINE_MLP - BASELINE_TIME) < 1e-12
    assert set(path["by_kind"]) == {"matmul", "elementwise", "collective", "transfer"}
    assert path["by_kind"]["matmul"]["time_s"] == pytest.approx(BASELINE_TIME, rel=1e-12)
    assert path["by_kind"]["matmul"]["share"] == pytest.approx(1.0)
    for kind in ("elementwise", "collective", "transfer"):
        assert path["by_kind"][kind] == {"time_s": 0.0, "share": 0.0}
    blocks = path["by_block"]
    assert set(blocks) == {"attention", "mlp", "pipeline_transfer"}
    assert blocks["attention"]["time_s"] == pytest.approx(BASELINE_ATTENTION, rel=1e-12)
    assert blocks["mlp"]["time_s"] == pytest.approx(BASELINE_MLP, rel=1e-12)
    assert blocks["pipeline_transfer"]["time_s"] == 0.0


def test_seed_split_in_text_and_markdown() -> None:
    attention, mlp = BASELINE_ATTENTION / BASELINE_TIME, BASELINE_MLP / BASELINE_TIME
    assert mlp > attention  # mlp 50.4%, attention 49.6%: largest first
    lines = _run("analyze", str(BASELINE_FILE), *SEED_COSTS).stdout.splitlines()
    assert "by kind        matmul 100.0%" in lines
    assert f"by block       mlp {mlp:.1%}, attention {attention:.1%}" in lines
    markdown = _run("analyze", str(BASELINE_FILE), "--format", "markdown", *SEED_COSTS).stdout
    md = markdown.splitlines()
    assert md[md.index("| kind | time | share |") + 2] == (
        f"| matmul | {BASELINE_TIME * 1e3:.3f} ms | 100.0% |"
    )
    first_block = md[md.index("| block | time | share |") + 2]
    assert first_block == f"| mlp | {BASELINE_MLP * 1e3:.3f} ms | {mlp:.1%} |"


def test_ma_split_puts_the_experts_in_the_moe_block(ma: tuple[dict[str, Any], str]) -> None:
    blocks = ma[0]["critical_path"]["by_block"]
    moe = 4 * (g(T, 4096, 16) + 4 * (g(T, 4096, 16384) + g(T, 16384, 4096)))
    attention = 4 * (
        3 * g(T, 4096, 384)
        + g(1024 * 3 * 2048, 128, 2048)
        + g(1024 * 3 * 2048, 2048, 128)
        + g(T, 384, 4096)
    )
    assert set(blocks) == {"attention", "moe"}
    assert blocks["moe"]["time_s"] == pytest.approx(moe, rel=1e-12)
    assert blocks["attention"]["time_s"] == pytest.approx(attention, rel=1e-12)
    assert blocks["moe"]["share"] == pytest.approx(moe / MA_TIME, rel=1e-12)


# Every product 1 us, every elementwise op 100 us, an all-reduce 10 ms, a send 1 s: the
# split then counts the operations of each kind and block on the path.
COUNTING_PLUGIN = (
    "def get_time(m, k, n):\n    return 1e-6\n"
    "def elem_time(n):\n    return 1e-4\n"
    "def all_reduce_time(nbytes, n):\n    return 1e-2\n"
    "def p2p_time(nbytes):\n    return 1.0\n"
)


def test_split_counts_a_small_pipeline_by_hand(tmp_path: Path) -> None:
    plugin = tmp_path / "counting.py"
    plugin.write_text(COUNTING_PLUGIN)
    devices = "devices { group a = gpu[0..1]; group b = gpu[2..3] }\n"
    analysis = _pipeline(
        2,
        1,
        devices,
        "layers 0 on a { attention tp=2; mlp tp=2 }\nlayers 1 on b { attention tp=2; mlp tp=2 }\n",
        CostOptions(plugin=plugin),
    )
    # Per layer (the op tables of docs/semantics.md): attention has ln1, softmax and res1
    # (elementwise), q, k, v, scores, attn_out and o_proj (6 products) and one all-reduce;
    # mlp has ln2, mlp_act and res2, mlp_up and mlp_down, and one all-reduce. Between the
    # stages one send (the recv is a Sync, 0 s).
    attention = 2 * (6 * 1e-6 + 3 * 1e-4 + 1e-2)
    mlp = 2 * (2 * 1e-6 + 3 * 1e-4 + 1e-2)
    total = attention + mlp + 1.0
    assert analysis.total_s == pytest.approx(total, rel=1e-12)
    kinds = {part.name: part.time_s for part in analysis.by_kind}
    assert kinds == pytest.approx(
        {"transfer": 1.0, "collective": 4e-2, "elementwise": 12e-4, "matmul": 16e-6}, rel=1e-12
    )
    assert [part.name for part in analysis.by_kind] == [
        "transfer",
        "collective",
        "elementwise",
        "matmul",
    ]  # largest first
    blocks = {part.name: part.time_s for part in analysis.by_block}
    assert blocks == pytest.approx(
        {"pipeline_transfer": 1.0, "attention": attention, "mlp": mlp}, rel=1e-12
    )
    assert sum(part.share for part in analysis.by_block) == pytest.approx(1.0)


def test_throughput_is_tokens_over_the_critical_path(baseline: dict[str, Any]) -> None:
    totals = baseline["totals"]
    assert totals["tokens"] == 1024 * 2048
    assert totals["tokens_per_s"] == pytest.approx(T / BASELINE_TIME, rel=1e-12)
    assert totals["tokens_per_s_per_gpu"] == pytest.approx(T / BASELINE_TIME / 16, rel=1e-12)
    lines = _run("analyze", str(BASELINE_FILE), *SEED_COSTS).stdout.splitlines()
    rate = T / BASELINE_TIME  # 4,585,012 tokens/s
    expected = f"throughput     {rate:,.0f} tokens/s, {rate / 16:,.0f} per GPU (2,097,152 tokens)"
    assert expected in lines


# ---------------------------------------------------------------------------------------
# Memory warnings

BIG = (
    "model big { layers = 2; hidden = 16384; heads = 128; ffn = 1048576 }\n"
    "workload { batch = 1; seq = 16 }\n"
    "devices { group a = gpu[0] }\n"
    "layers 0..1 on a { attention; mlp }\n"
)


def test_weights_over_the_limit_warn(tmp_path: Path) -> None:
    path = tmp_path / "big.dag"
    path.write_text(BIG)
    report, stderr = _json(str(path))
    h, f, w = 16384, 1048576, 2
    weights = 2 * (3 * h * h + h * h + h * f + f * h) * w  # 141.7 GB on one GPU
    assert weights > 80e9
    gpu0 = report["gpus"][0]
    assert gpu0["weight_bytes"] == weights
    assert gpu0["activation_bytes"] == 2 * 16 * f * w  # mlp_act: T·F written, read back
    [message] = report["warnings"]
    assert message.startswith(f"gpu0 needs {(weights + 2 * 16 * f * w) / 1e9:.1f} GB")
    assert f"(weights {weights / 1e9:.1f} GB" in message
    assert f"{path}: warning: {message}" in stderr.splitlines()
    assert "warning" not in json.dumps(report["critical_path"])

    # Enough memory: no warning.
    report, stderr = _json(str(path), "--set", "memory_bytes=2e11")
    assert report["warnings"] == []
    assert "needs" not in stderr

    # --werror makes it fatal; nothing on stdout.
    result = runner.invoke(app, ["analyze", str(path), "--werror"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "gpu0 needs" in result.stderr


# ---------------------------------------------------------------------------------------
# Report formats and streams


def _run(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.stderr
    return result


@pytest.mark.parametrize("file", [BASELINE_FILE, MA_FILE])
def test_text_report_fits_80_columns(file: Path) -> None:
    for options in ([], SEED_COSTS):
        stdout = _run("analyze", str(file), "--path-limit", "0", *options).stdout
        too_long = [line for line in stdout.splitlines() if len(line) > 80]
        assert too_long == []


def test_text_report_with_a_long_path_fits_80_columns(tmp_path: Path) -> None:
    folder = tmp_path / ("a_rather_long_folder_name_" * 4)
    folder.mkdir()
    path = folder / "ma_separation_with_a_long_name.dag"
    path.write_text(MA_FILE.read_text())
    stdout = _run("analyze", str(path), *SEED_COSTS).stdout
    assert max(len(line) for line in stdout.splitlines()) <= 80
    assert "warning: gpu[12..15] each needs" in stdout


def test_text_report_content() -> None:
    lines = _run("analyze", str(BASELINE_FILE), *SEED_COSTS).stdout.splitlines()
    assert lines[0] == f"dagc analyze: {BASELINE_FILE}"
    assert f"critical path  {BASELINE_TIME * 1e3:.3f} ms" in lines[lines.index("") + 1]
    # The path has 2 x 2 layers of 14 nodes and the send/recv pair: 58 rows, all shown.
    rows = [line.split()[1] for line in lines if line[:6].strip().isdigit()]
    assert len(rows) == 58
    assert rows.index("recv_stage1") == rows.index("send_stage1") + 1
    short = _run("analyze", str(BASELINE_FILE), "--path-limit", "8", *SEED_COSTS).stdout
    assert "  ... 50 more nodes (--path-limit 0 shows all)" in short.splitlines()


def test_markdown_report_has_the_tables() -> None:
    stdout = _run("analyze", str(BASELINE_FILE), "--format", "markdown", *SEED_COSTS).stdout
    lines = stdout.splitlines()
    assert lines[0] == f"# dagc analyze: `{BASELINE_FILE}`"
    assert "| # | node | kind | term | time | share |" in lines
    assert "| GPUs | busy | idle | bubble | TFLOP/s | HFU | memory |" in lines
    path_rows = [line for line in lines if line.startswith("| ") and "`" in line.split("|")[2]]
    assert len(path_rows) == 58  # markdown lists the whole path
    assert any(row.startswith("| 29 | `send_stage1` | transfer |") for row in path_rows)
    gpu_rows = [line for line in lines if line.startswith("| gpu")]
    assert [row.split(" | ")[0] for row in gpu_rows] == ["| gpu[0..15]"]


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_reports_are_byte_identical_across_runs(fmt: str) -> None:
    args = ("analyze", str(MA_FILE), "--format", fmt)
    first, second = _run(*args), _run(*args)
    assert first.stdout_bytes == second.stdout_bytes
    assert first.stderr_bytes == second.stderr_bytes


def test_stdout_carries_only_the_report() -> None:
    result = _run("analyze", str(MA_FILE), "--format", "json")
    report = json.loads(result.stdout)  # nothing but the JSON
    # gpu12..15 hold the same experts and shapes: one warning names the whole run.
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith("gpu[12..15] each needs")
    assert "do not split evenly" in result.stderr
    assert "gpu[12..15] each needs" in result.stderr
    assert "do not split evenly" not in result.stdout


def test_output_file_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old contents\n")
    result = _run("analyze", str(BASELINE_FILE), "--format", "json", "-o", str(target))
    assert result.stdout == ""
    expected = _run("analyze", str(BASELINE_FILE), "--format", "json").stdout
    assert target.read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary left

    # A run that fails before writing leaves the old file alone.
    bad = runner.invoke(
        app,
        [
            "analyze",
            str(BASELINE_FILE),
            "--cost-plugin",
            str(tmp_path / "no.py"),
            "-o",
            str(target),
        ],
    )
    assert bad.exit_code == 2
    assert target.read_text() == expected

    # A folder that does not exist: exit 2 and a message.
    missing = tmp_path / "nowhere" / "r.txt"
    result = runner.invoke(app, ["analyze", str(BASELINE_FILE), "-o", str(missing)])
    assert result.exit_code == 2
    assert "cannot write" in result.stderr
    assert not missing.parent.exists()


def test_write_atomically_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    target.write_text("old\n")

    def half_then_fail(stream: Any) -> None:
        stream.write("half a report")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["r.txt"]


# ---------------------------------------------------------------------------------------
# compare


def test_compare_rows_speedup_and_throughput() -> None:
    result = _run("compare", str(BASELINE_FILE), str(MA_FILE), *SEED_COSTS)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "config",
        "time",
        "tokens/s",
        "tokens/s/GPU",
        "GPUs",
        "speedup",
        "bottleneck",
        "MFU",
        "HFU",
        "params",
        "active",
        "model",
        "FLOPs",
        "executed",
        "FLOPs",
        "max",
        "memory",
        "KV/token",
    ]
    first, second = lines[1].split(), lines[2].split()
    assert first[0] == str(BASELINE_FILE) and second[0] == str(MA_FILE)
    assert first[1:7] == [
        f"{BASELINE_TIME * 1e3:.3f}",
        "ms",
        f"{T / BASELINE_TIME:,.0f}",
        f"{T / BASELINE_TIME / 16:,.0f}",
        "16",
        "1.00x",
    ]
    assert second[1:7] == [
        f"{MA_TIME:.4f}",
        "s",
        f"{T / MA_TIME:,.0f}",
        f"{T / MA_TIME / 16:,.0f}",
        "16",
        f"{BASELINE_TIME / MA_TIME:.2f}x",
    ]
    assert second[7] == "expert"
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns
    # Same batch and seq, different models: the speedup stays, with a note under the table.
    assert lines[3:] == [
        "note: models differ (dense_4l, moe_4l): a token costs different work in each"
    ]


def _doubled_batch(tmp_path: Path) -> Path:
    path = tmp_path / "baseline_b2048.dag"
    text = BASELINE_FILE.read_text()
    assert "batch = 1024" in text
    path.write_text(text.replace("batch = 1024", "batch = 2048"))
    return path


def test_compare_different_workloads_has_no_speedup(tmp_path: Path) -> None:
    doubled = _doubled_batch(tmp_path)
    result = _run("compare", str(BASELINE_FILE), str(doubled), *SEED_COSTS)
    lines = result.stdout.splitlines()
    assert "speedup" not in lines[0].split()
    assert "0.50x" not in result.stdout
    # Every product's M doubles with the batch, so the time doubles and tokens/s is equal.
    rate = f"{T / BASELINE_TIME:,.0f}"
    assert lines[1].split()[1:5] == [
        f"{BASELINE_TIME * 1e3:.3f}",
        "ms",
        rate,
        f"{T / BASELINE_TIME / 16:,.0f}",
    ]
    assert lines[2].split()[1:4] == [f"{2 * BASELINE_TIME * 1e3:.3f}", "ms", rate]
    note = (
        f"workloads differ (batch x seq: 1024 x 2048 in {BASELINE_FILE}, 2048 x 2048 in"
        f" {doubled}): the times are for different numbers of tokens, so there is no speedup"
        " column; compare tokens/s"
    )
    # The note is wrapped to 80 columns, and a long temporary path is cut where it must be.
    assert lines[3].startswith("note: workloads differ")
    assert all(len(line) <= 80 for line in lines[3:])
    assert "".join("".join(lines[3:]).split()) == "".join(f"note: {note}".split())
    report = json.loads(
        _run("compare", str(BASELINE_FILE), str(doubled), "--format", "json", *SEED_COSTS).stdout
    )
    assert report["same_workload"] is False
    assert [c["speedup"] for c in report["configs"]] == [None, None]
    assert [c["tokens"] for c in report["configs"]] == [T, 2 * T]
    assert report["configs"][1]["tokens_per_s"] == pytest.approx(T / BASELINE_TIME, rel=1e-12)
    assert report["notes"] == [note]


def test_compare_markdown() -> None:
    result = _run("compare", str(MA_FILE), str(BASELINE_FILE), "--markdown", *SEED_COSTS)
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "| config | time | tokens/s | tokens/s/GPU | GPUs | speedup | bottleneck | MFU | HFU |"
        " params | active | model FLOPs | executed FLOPs | max memory | KV/token |"
    )
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---|" + "---:|" * 8
    assert lines[2].startswith(f"| {MA_FILE} | {MA_TIME:.4f} s | {T / MA_TIME:,.0f} |")
    assert "| 1.00x |" in lines[2]
    assert lines[3].startswith(f"| {BASELINE_FILE} | {BASELINE_TIME * 1e3:.3f} ms |")
    assert f"| {MA_TIME / BASELINE_TIME:.2f}x |" in lines[3]
    assert lines[4:] == [
        "",
        "> note: models differ (dense_4l, moe_4l): a token costs different work in each",
    ]
    same = _run("compare", str(MA_FILE), str(BASELINE_FILE), "--format", "markdown", *SEED_COSTS)
    assert same.stdout == result.stdout


def test_compare_json() -> None:
    result = _run("compare", str(BASELINE_FILE), str(MA_FILE), "--format", "json", *SEED_COSTS)
    report = json.loads(result.stdout)
    assert (report["format"], report["version"], report["same_workload"]) == (
        "dagc-comparison",
        1,
        True,
    )
    base, ma = report["configs"]
    assert (base["source"], ma["source"]) == (str(BASELINE_FILE), str(MA_FILE))
    assert base["time_s"] == pytest.approx(BASELINE_TIME, rel=1e-12)
    assert ma["speedup"] == pytest.approx(BASELINE_TIME / MA_TIME, rel=1e-12)
    assert base["speedup"] == 1.0
    assert ma["tokens_per_s_per_gpu"] == pytest.approx(T / MA_TIME / 16, rel=1e-12)
    assert base["by_kind"]["matmul"]["share"] == pytest.approx(1.0)
    assert base["by_block"]["mlp"]["time_s"] == pytest.approx(BASELINE_MLP, rel=1e-12)
    assert ma["warnings"][0].startswith("gpu[12..15] each needs")
    assert report["notes"] == [
        "models differ (dense_4l, moe_4l): a token costs different work in each"
    ]


def test_compare_one_file_is_a_one_row_table() -> None:
    result = _run("compare", str(BASELINE_FILE), *SEED_COSTS)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "speedup" not in lines[0]  # nothing to compare with
    assert lines[1].split()[:3] == [str(BASELINE_FILE), f"{BASELINE_TIME * 1e3:.3f}", "ms"]


def test_compare_output_werror_and_symmetry(tmp_path: Path) -> None:
    args = ["compare", str(BASELINE_FILE), str(MA_FILE), *SEED_COSTS]
    expected = _run(*args).stdout
    target = tmp_path / "table.txt"
    target.write_text("old\n")
    written = _run(*args, "-o", str(target))
    assert written.stdout == ""
    assert target.read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.txt"]
    for choice in ("on", "off"):
        assert _run(*args, "--symmetry", choice).stdout == expected
    # ma_separation warns (uneven heads, memory): --werror fails, no table, old file kept.
    failed = runner.invoke(app, [*args, "--werror", "-o", str(target)])
    assert failed.exit_code == 2
    assert failed.stdout == ""
    assert "do not split evenly" in failed.stderr
    assert target.read_text() == expected
    assert _run("compare", str(BASELINE_FILE), "--werror", *SEED_COSTS).stdout != ""


def test_compare_option_errors(tmp_path: Path) -> None:
    both = runner.invoke(app, ["compare", str(BASELINE_FILE), "--markdown", "--format", "json"])
    assert both.exit_code == 2
    assert both.stdout == ""
    assert both.stderr.splitlines()[0] == "dagc: error: --markdown contradicts --format json"
    assert "help:" in both.stderr.splitlines()[1]
    nowhere = runner.invoke(app, ["compare", str(BASELINE_FILE), "-o", str(tmp_path / "x" / "t")])
    assert nowhere.exit_code == 2
    assert "dagc: error: cannot write" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_compare_is_byte_identical_across_runs(fmt: str) -> None:
    args = ("compare", str(MA_FILE), str(BASELINE_FILE), "--format", fmt)
    first, second = _run(*args), _run(*args)
    assert first.stdout_bytes == second.stdout_bytes
    assert first.stderr_bytes == second.stderr_bytes


def test_compare_bad_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", str(BASELINE_FILE), str(tmp_path / "no.dag")])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "no such file" in result.stderr
