"""Cost models checked by hand: the roofline's documented defaults, bus factors and dtype
rates, --gpu and --set, matmul-only, and cost plugins, including every way loading or
calling a plugin fails (exit 2, a clear message, no traceback).

Every expected number is computed here from the documented constants, never pasted from a
dagc run: h100 peak 989e12 FLOP/s (bf16) x matmul_efficiency 0.70, HBM 3.35e12 B/s x 0.85,
NVLink 450e9 and network 50e9 B/s x link_efficiency 0.80, latency 10 us (NVLink) or 25 us
(network); bus factors all-reduce 2(n-1)/n, all-to-all (n-1)/n, broadcast and p2p 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import dagc
from dagc.analysis.costs import (
    PLUGIN_NAMES,
    MatmulOnly,
    PluginModel,
    Roofline,
    RooflineParams,
    bus_factor,
    roofline_for,
)
from dagc.analysis.plugin import load_plugin
from dagc.api import CostOptions, analyze_compiled, cost_model
from dagc.cli import app
from dagc.hardware import PRESETS
from dagc.ir.logical import DType
from dagc.ir.terms import CostTerm, TermKind

runner = CliRunner()

# The documented figures (docs/analyze.md, dagc/hardware.py), written out by hand.
H100 = {"peak": 989e12, "hbm": 3.35e12, "nvlink": 450e9, "memory": 80e9}
A100 = {"peak": 312e12, "hbm": 2.0e12, "nvlink": 300e9, "memory": 80e9}
NETWORK = 50e9
MATMUL_EFF, MEMORY_EFF, LINK_EFF = 0.70, 0.85, 0.80
NVLINK_LATENCY, NETWORK_LATENCY = 10e-6, 25e-6


def hand_matmul(
    m: int,
    k: int,
    n: int,
    *,
    w: int = 2,
    gpu: dict[str, float] = H100,
    matmul_eff: float = MATMUL_EFF,
    peak_scale: float = 1.0,
) -> float:
    compute = 2 * m * k * n / (gpu["peak"] * peak_scale * matmul_eff)
    memory = (m * k + k * n + m * n) * w / (gpu["hbm"] * MEMORY_EFF)
    return max(compute, memory)


def hand_elem(n: int, *, w: int = 2, gpu: dict[str, float] = H100) -> float:
    return 2 * n * w / (gpu["hbm"] * MEMORY_EFF)


def hand_comm(
    nbytes: int,
    factor: float,
    *,
    inter_node: bool,
    gpu: dict[str, float] = H100,
    link_eff: float = LINK_EFF,
) -> float:
    if inter_node:
        return NETWORK_LATENCY + nbytes * factor / (NETWORK * link_eff)
    return NVLINK_LATENCY + nbytes * factor / (gpu["nvlink"] * link_eff)


def term(kind: TermKind, *args: int, nodes: int = 1) -> CostTerm:
    return CostTerm(kind, tuple(args), nodes)


# ---------------------------------------------------------------------------------------
# The roofline, term by term


def test_h100_defaults() -> None:
    p = RooflineParams.for_gpu(PRESETS["h100"], DType.BF16)
    assert (p.peak_flops, p.hbm_bandwidth, p.nvlink_bandwidth) == (989e12, 3.35e12, 450e9)
    assert (p.network_bandwidth, p.memory_bytes) == (50e9, 80e9)
    assert (p.matmul_efficiency, p.memory_efficiency, p.link_efficiency) == (0.70, 0.85, 0.80)
    assert (p.nvlink_latency, p.network_latency) == (10e-6, 25e-6)


def test_matmul_is_the_larger_of_compute_and_memory() -> None:
    model = roofline_for("h100", DType.BF16)
    # 8192^3: 1.1e12 FLOPs in 1.59 ms against 403 MB in 0.14 ms -> compute bound.
    compute = 2 * 8192**3 / (989e12 * 0.70)
    assert compute > 3 * 8192**2 * 2 / (3.35e12 * 0.85)
    assert model.term_seconds(term(TermKind.MATMUL, 8192, 8192, 8192)) == pytest.approx(
        compute, rel=1e-12
    )
    # A matrix-vector product: 134 MB of weights dominate its 134 MFLOPs -> memory bound.
    memory = (1 * 8192 + 8192 * 8192 + 1 * 8192) * 2 / (3.35e12 * 0.85)
    assert memory > 2 * 8192 * 8192 / (989e12 * 0.70)
    assert model.term_seconds(term(TermKind.MATMUL, 1, 8192, 8192)) == pytest.approx(
        memory, rel=1e-12
    )


def test_elementwise_sync_and_collectives() -> None:
    model = roofline_for("h100", DType.BF16)
    gib = 1 << 30
    cases = [
        (term(TermKind.ELEMENTWISE, 10**6), 2 * 10**6 * 2 / (3.35e12 * 0.85)),
        (term(TermKind.SYNC), 0.0),
        (term(TermKind.ALL_REDUCE, gib, 8), 10e-6 + gib * (2 * 7 / 8) / (450e9 * 0.8)),
        (term(TermKind.ALL_TO_ALL, gib, 8), 10e-6 + gib * (7 / 8) / (450e9 * 0.8)),
        (term(TermKind.BROADCAST, gib, 5), 10e-6 + gib / (450e9 * 0.8)),
        (term(TermKind.P2P, gib), 10e-6 + gib / (450e9 * 0.8)),
        # nodes > 1: the network instead of NVLink.
        (term(TermKind.ALL_REDUCE, gib, 12, nodes=2), 25e-6 + gib * (22 / 12) / (50e9 * 0.8)),
        (term(TermKind.ALL_TO_ALL, gib, 16, nodes=2), 25e-6 + gib * (15 / 16) / (50e9 * 0.8)),
        (term(TermKind.BROADCAST, gib, 16, nodes=2), 25e-6 + gib / (50e9 * 0.8)),
        (term(TermKind.P2P, gib, nodes=2), 25e-6 + gib / (50e9 * 0.8)),
    ]
    for cost_term, expected in cases:
        assert model.term_seconds(cost_term) == pytest.approx(expected, rel=1e-12), cost_term


def test_bus_factors() -> None:
    assert bus_factor(TermKind.ALL_REDUCE, 8) == pytest.approx(2 * 7 / 8)
    assert bus_factor(TermKind.ALL_REDUCE, 2) == pytest.approx(1.0)
    assert bus_factor(TermKind.ALL_TO_ALL, 4) == pytest.approx(3 / 4)
    assert bus_factor(TermKind.BROADCAST, 16) == 1.0
    assert bus_factor(TermKind.P2P, 2) == 1.0


@pytest.mark.parametrize(
    ("gpu", "dtype", "peak"),
    [
        ("h100", DType.BF16, 989e12),
        ("h100", DType.FP16, 989e12),
        ("h100", DType.FP8, 2 * 989e12),
        ("h200", DType.FP8, 2 * 989e12),
        ("a100", DType.FP8, 312e12),  # no FP8 tensor cores: the peak does not double
        ("a100", DType.BF16, 312e12),
    ],
)
def test_dtype_peak(gpu: str, dtype: DType, peak: float) -> None:
    assert roofline_for(gpu, dtype).params.peak_flops == pytest.approx(peak)


def test_fp8_matmul_by_hand() -> None:
    model = roofline_for("h100", DType.FP8)
    assert model.element_bytes == 1
    expected = max(2 * 8192**3 / (2 * 989e12 * 0.70), 3 * 8192**2 * 1 / (3.35e12 * 0.85))
    got = model.term_seconds(term(TermKind.MATMUL, 8192, 8192, 8192))
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(
        roofline_for("h100", DType.BF16).term_seconds(term(TermKind.MATMUL, 8192, 8192, 8192)) / 2,
        rel=1e-12,
    )


def test_overrides_are_checked() -> None:
    params = RooflineParams.for_gpu(PRESETS["h100"], DType.BF16)
    assert params.with_overrides({"matmul_efficiency": 0.5}).matmul_efficiency == 0.5
    with pytest.raises(KeyError):
        params.with_overrides({"matmul_eficiency": 0.5})
    for bad in ({"matmul_efficiency": 1.5}, {"hbm_bandwidth": 0.0}, {"peak_flops": -1.0}):
        with pytest.raises(ValueError):
            params.with_overrides(bad)
    with pytest.raises(ValueError):
        params.with_overrides({"link_efficiency": math.nan})


def test_matmul_only_keeps_products_and_zeroes_the_rest() -> None:
    base = roofline_for("h100", DType.BF16)
    model = MatmulOnly(base)
    product = term(TermKind.MATMUL, 4096, 4096, 4096)
    assert model.term_seconds(product) == base.term_seconds(product)
    for other in (
        term(TermKind.ELEMENTWISE, 1000),
        term(TermKind.ALL_REDUCE, 1 << 20, 8),
        term(TermKind.P2P, 1 << 20, nodes=2),
        term(TermKind.SYNC),
    ):
        assert model.term_seconds(other) == 0.0
    assert "matmul only" in model.name
    assert any("matmul only" in note for note in model.notes())


def test_plugin_model_overrides_only_its_terms() -> None:
    base = roofline_for("h100", DType.BF16)
    seen: list[tuple[int, ...]] = []

    def all_reduce_time(nbytes: int, n: int, nodes: int = 1) -> float:
        seen.append((nbytes, n, nodes))
        return 0.25

    model = PluginModel(base, {TermKind.ALL_REDUCE: all_reduce_time}, "p.py")
    assert model.term_seconds(term(TermKind.ALL_REDUCE, 100, 4, nodes=2)) == 0.25
    assert seen == [(100, 4, 2)]
    product = term(TermKind.MATMUL, 64, 64, 64)
    assert model.term_seconds(product) == base.term_seconds(product)
    assert "plugin p.py (all_reduce_time)" in model.name


def test_plugin_names() -> None:
    assert PLUGIN_NAMES[TermKind.MATMUL] == "get_time"
    assert PLUGIN_NAMES[TermKind.ELEMENTWISE] == "elem_time"
    assert TermKind.SYNC not in PLUGIN_NAMES


# ---------------------------------------------------------------------------------------
# A whole configuration priced by hand: tp=2, one layer, every op on the path


def _tp2_config(gpus: str, devices_extra: str = "") -> str:
    return (
        "model m { layers = 1; hidden = 1024; heads = 8; ffn = 4096 }\n"
        "workload { batch = 8; seq = 1024 }\n"
        f"devices {{ group a = gpu[{gpus}]{devices_extra} }}\n"
        "layers 0 on a { attention; mlp }\n"
    )


def _tp2_total(
    *,
    gpu: dict[str, float] = H100,
    matmul_eff: float = MATMUL_EFF,
    link_eff: float = LINK_EFF,
    inter_node: bool = False,
) -> float:
    """Both ranks run the same chain, so the critical path is the chain's sum.

    T = 8·1024 tokens, H = 1024, 8 heads of d = 128 over tp = 2: 4 heads (512 columns) and
    F_i = 2048 per rank; softmax writes Bm·h_i·S·S = 8·4·1024·1024 elements.
    """
    t, h, bm, s, d = 8 * 1024, 1024, 8, 1024, 128
    mm = lambda m, k, n: hand_matmul(m, k, n, gpu=gpu, matmul_eff=matmul_eff)  # noqa: E731
    el = lambda n: hand_elem(n, gpu=gpu)  # noqa: E731
    ar = hand_comm(t * h * 2, 2 * 1 / 2, inter_node=inter_node, gpu=gpu, link_eff=link_eff)
    attention = (
        el(t * h)  # ln1
        + 3 * mm(t, h, 4 * d)  # q, k, v
        + mm(bm * 4 * s, d, s)  # attn_scores
        + el(bm * 4 * s * s)  # softmax
        + mm(bm * 4 * s, s, d)  # attn_out
        + mm(t, 4 * d, h)  # o_proj
        + ar  # all_reduce_attn
        + el(t * h)  # res1
    )
    mlp = el(t * h) + mm(t, h, 2048) + el(t * 2048) + mm(t, 2048, h) + ar + el(t * h)
    return attention + mlp


def _analyze_json(tmp_path: Path, text: str, *options: str) -> dict:
    import json

    path = tmp_path / "t.dag"
    path.write_text(text)
    result = runner.invoke(app, ["analyze", str(path), "--format", "json", *options])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_efficiency_changes_a_compute_bound_product() -> None:
    # Guard: the test below only means something if some product is compute bound.
    assert hand_matmul(8192, 1024, 512, matmul_eff=0.5) > hand_matmul(8192, 1024, 512)
    assert _tp2_total(matmul_eff=0.5) > _tp2_total() * 1.01


@pytest.mark.parametrize(
    ("gpus", "devices_extra", "options", "expected"),
    [
        ("0..1", "", [], _tp2_total()),
        ("0..1", "", ["--gpu", "a100"], _tp2_total(gpu=A100)),
        ("0..1", "; gpu = a100", [], _tp2_total(gpu=A100)),
        ("0..1", "; gpu = a100", ["--gpu", "h100"], _tp2_total()),
        ("0..1", "", ["--set", "matmul_efficiency=0.5"], _tp2_total(matmul_eff=0.5)),
        (
            "0..1",
            "",
            ["--set", "matmul_efficiency=0.5", "--set", "link_efficiency=0.4"],
            _tp2_total(matmul_eff=0.5, link_eff=0.4),
        ),
        # GPUs 7 and 8 sit on two nodes (node_size 8): the all-reduces use the network.
        ("7..8", "", [], _tp2_total(inter_node=True)),
        ("0..1", "; node_size = 1", [], _tp2_total(inter_node=True)),
    ],
)
def test_roofline_whole_config_by_hand(
    tmp_path: Path, gpus: str, devices_extra: str, options: list[str], expected: float
) -> None:
    report = _analyze_json(tmp_path, _tp2_config(gpus, devices_extra), *options)
    assert report["critical_path"]["time_s"] == pytest.approx(expected, rel=1e-9)


def test_roofline_path_terms(tmp_path: Path) -> None:
    report = _analyze_json(tmp_path, _tp2_config("7..8"))
    steps = {s["node"]: s for s in report["critical_path"]["steps"]}
    ar = steps["all_reduce_attn_l0"]
    assert ar["kind"] == "collective"
    assert ar["terms"] == [f"AllReduce_Time({8 * 1024 * 1024 * 2}, 2, nodes=2)"]
    assert ar["time_s"] == pytest.approx(25e-6 + 8 * 1024 * 1024 * 2 / (50e9 * 0.8), rel=1e-12)
    qkv = steps["qkv_l0_gpu7"]
    assert qkv["ops"] == ["qkv_l0_gpu7.q", "qkv_l0_gpu7.k", "qkv_l0_gpu7.v"]
    assert qkv["time_s"] == pytest.approx(3 * hand_matmul(8192, 1024, 512), rel=1e-12)


def test_fp8_workload_through_the_cli(tmp_path: Path) -> None:
    text = _tp2_config("0").replace("seq = 1024 }", "seq = 1024; dtype = fp8 }")
    report = _analyze_json(tmp_path, text, "--matmul-only")
    t, h, bm, s, d = 8 * 1024, 1024, 8, 1024, 128
    mm = lambda m, k, n: hand_matmul(m, k, n, w=1, peak_scale=2.0)  # noqa: E731
    # One GPU: all 8 heads, the whole ffn.
    expected = (
        3 * mm(t, h, 8 * d)
        + mm(bm * 8 * s, d, s)
        + mm(bm * 8 * s, s, d)
        + mm(t, 8 * d, h)
        + mm(t, h, 4096)
        + mm(t, 4096, h)
    )
    assert report["critical_path"]["time_s"] == pytest.approx(expected, rel=1e-9)


def test_cost_model_from_the_library() -> None:
    program = dagc.compile_text(_tp2_config("0..1", "; gpu = a100")).program
    model, params = cost_model(program)
    assert params.peak_flops == 312e12
    assert model.name == "roofline (a100, bf16)"
    model, params = cost_model(
        program, CostOptions(gpu="h200", overrides={"memory_efficiency": 0.5})
    )
    assert (params.hbm_bandwidth, params.memory_efficiency, params.memory_bytes) == (
        4.8e12,
        0.5,
        141e9,
    )
    product = term(TermKind.MATMUL, 1, 8192, 8192)  # memory bound
    expected = (8192 + 8192 * 8192 + 8192) * 2 / (4.8e12 * 0.5)
    assert model.term_seconds(product) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------
# Option errors: exit 2, one clear message, nothing on stdout


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ["--set", "matmul_eficiency=0.5"],
            [
                "dagc: error: unknown roofline parameter `matmul_eficiency`",
                "did you mean `matmul_efficiency`?",
            ],
        ),
        (["--set", "matmul_efficiency"], ["--set expects KEY=NUMBER, got `matmul_efficiency`"]),
        (["--set", "matmul_efficiency=fast"], ["--set expects KEY=NUMBER"]),
        (["--set", "matmul_efficiency=1.5"], ["matmul_efficiency must be between 0.001 and 1"]),
        (["--set", "hbm_bandwidth=0"], ["hbm_bandwidth must be between 1e8 and 1e16 bytes/s"]),
        (  # b100 is another chip, not a typo of h100: no did-you-mean
            ["--gpu", "b100"],
            [
                "dagc: error: unknown GPU preset `b100`\n     = help: presets: a100, h100, h200;"
                " for another GPU, start from one and give its figures, e.g. --set"
                " peak_flops=... --set hbm_bandwidth=... --set memory_bytes=..."
                " (docs/cost-models.md lists them)\n"
            ],
        ),
        (["--gpu", "H100"], ["dagc: error: unknown GPU preset `H100`", "did you mean `h100`?"]),
        (["--gpu", "tpu"], ["dagc: error: unknown GPU preset `tpu`", "a100, h100, h200"]),
    ],
)
def test_bad_cost_options(tmp_path: Path, options: list[str], expected: list[str]) -> None:
    path = tmp_path / "t.dag"
    path.write_text(_tp2_config("0..1"))
    result = runner.invoke(app, ["analyze", str(path), *options])
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_gpu_in_compare_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "t.dag"
    path.write_text(_tp2_config("0..1"))
    result = runner.invoke(app, ["compare", str(path), str(path), "--gpu", "b100"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "unknown GPU preset `b100`" in result.stderr


# ---------------------------------------------------------------------------------------
# Cost plugins

ONE_GPU = (
    "model m { layers = 1; hidden = 256; heads = 4; ffn = 1024 }\n"
    "workload { batch = 2; seq = 64 }\n"
    "devices { group a = gpu[0] }\n"
    "layers 0 on a { attention; mlp }\n"
)
# ONE_GPU's operations by hand: T = 128, Bm = 2, S = 64, H = 256, 4 heads of 64, F = 1024.
ONE_GPU_PRODUCTS = [
    (128, 256, 256),  # q
    (128, 256, 256),  # k
    (128, 256, 256),  # v
    (2 * 4 * 64, 64, 64),  # attn_scores
    (2 * 4 * 64, 64, 64),  # attn_out
    (128, 256, 256),  # o_proj
    (128, 256, 1024),  # mlp_up
    (128, 1024, 256),  # mlp_down
]
# ln1, softmax, res1, ln2, mlp_act, res2
ONE_GPU_ELEMENTWISE = [128 * 256, 2 * 4 * 64 * 64, 128 * 256, 128 * 256, 128 * 1024, 128 * 256]


def _plugin_run(tmp_path: Path, plugin_text: str | None, *options: str) -> tuple[Path, Result]:
    config = tmp_path / "t.dag"
    config.write_text(ONE_GPU)
    plugin = tmp_path / "plugin.py"
    if plugin_text is not None:
        plugin.write_text(plugin_text)
    result = runner.invoke(
        app, ["analyze", str(config), "--cost-plugin", str(plugin), "--format", "json", *options]
    )
    return plugin, result


def test_plugin_with_only_elem_time_leaves_products_to_the_roofline(tmp_path: Path) -> None:
    import json

    _, result = _plugin_run(tmp_path, "def elem_time(n):\n    return 1e-3\n")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    expected = sum(hand_matmul(*p) for p in ONE_GPU_PRODUCTS) + 1e-3 * len(ONE_GPU_ELEMENTWISE)
    assert report["critical_path"]["time_s"] == pytest.approx(expected, rel=1e-9)
    assert "(elem_time)" in report["cost_model"]


def test_plugin_get_time_sees_the_products(tmp_path: Path) -> None:
    import json

    _, result = _plugin_run(
        tmp_path, "def get_time(m, k, n):\n    return m * k * n * 1e-12\n", "--matmul-only"
    )
    assert result.exit_code == 0, result.stderr
    expected = sum(m * k * n * 1e-12 for m, k, n in ONE_GPU_PRODUCTS)
    report = json.loads(result.stdout)
    assert report["critical_path"]["time_s"] == pytest.approx(expected, rel=1e-12)
    assert report["gpus"][0]["busy_s"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "signature", ["nbytes, n", "nbytes, n, nodes=1", "nbytes, n, **extra", "*args, **extra"]
)
def test_plugin_communication_functions(tmp_path: Path, signature: str) -> None:
    """A communication function gets `nodes=` when it takes it; `(bytes, n)` works too."""
    import json

    config = tmp_path / "t.dag"
    config.write_text(_tp2_config("7..8"))
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "def get_time(m, k, n):\n    return 0.0\n"
        "def elem_time(n):\n    return 0.0\n"
        f"def all_reduce_time({signature}):\n"
        "    extra = locals().get('extra') or {}\n"
        "    nodes = locals().get('nodes', extra.get('nodes', 1))\n"
        "    return 1.0 + nodes\n"
    )
    result = runner.invoke(
        app, ["analyze", str(config), "--cost-plugin", str(plugin), "--format", "json"]
    )
    assert result.exit_code == 0, result.stderr
    # Two all-reduces across two nodes: 2 x (1 + 2), or 2 x (1 + 1) when nodes is not taken.
    takes_nodes = "nodes" in signature or "**" in signature
    expected = 2 * (1.0 + (2 if takes_nodes else 1))
    assert json.loads(result.stdout)["critical_path"]["time_s"] == pytest.approx(expected)


def _syntax_position(text: str) -> tuple[int, int, str]:
    try:
        compile(text, "plugin.py", "exec")
    except SyntaxError as error:
        assert error.lineno is not None and error.offset is not None
        return error.lineno, error.offset, error.msg
    raise AssertionError("no syntax error")


SYNTAX_ERROR = "def get_time(m, k, n):\n    return 2 * * m\n"


@pytest.mark.parametrize(
    ("plugin_text", "first_line"),
    [
        (None, "{path}: error: no such cost plugin"),
        (SYNTAX_ERROR, "{path}:{line}:{column}: error: the cost plugin has a syntax error: {msg}"),
        (
            "x = 1 / 0\n",
            "{path}:1:1: error: the cost plugin failed while loading:"
            " ZeroDivisionError: division by zero",
        ),
        (
            "import dagc_no_such_module\n",
            "{path}:1:1: error: the cost plugin failed while loading: ModuleNotFoundError:",
        ),
        ("def get_tme(m, k, n):\n    return 1.0\n", "{path}:1:1: error: the cost plugin defines"),
        ("get_time = 3\n", "{path}:1:1: error: the cost plugin defines no cost function"),
        (
            "def get_time(m, k, n):\n    raise RuntimeError('boom')\n",
            "{path}:2:1: error: get_time(",  # the line of the raise
        ),
        ("def get_time(m, k, n):\n    return -1.0\n", "{path}: error: get_time("),
        ("def get_time(m, k, n):\n    return float('nan')\n", "{path}: error: get_time("),
        ("def get_time(m, k, n):\n    return float('inf')\n", "{path}: error: get_time("),
        ("def get_time(m, k, n):\n    return 'abc'\n", "{path}: error: get_time("),
        ("def get_time(m, k, n):\n    return '1.5'\n", "{path}: error: get_time("),
        ("def get_time(m, k, n):\n    return None\n", "{path}: error: get_time("),
        ("def get_time(m, k, n):\n    return [1.0]\n", "{path}: error: get_time("),
        ("def elem_time(n):\n    return -2\n", "{path}: error: elem_time("),
        ("def get_time(m, k):\n    return 1.0\n", "{path}: error: get_time("),
    ],
)
def test_plugin_errors(tmp_path: Path, plugin_text: str | None, first_line: str) -> None:
    plugin, result = _plugin_run(tmp_path, plugin_text)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    fields = {"path": plugin, "line": "", "column": "", "msg": ""}
    if plugin_text == SYNTAX_ERROR:
        line, column, msg = _syntax_position(SYNTAX_ERROR)
        fields.update(line=line, column=column, msg=msg)
    assert result.stderr.splitlines()[0].startswith(first_line.format(**fields)), result.stderr
    assert "= help: " in result.stderr


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("raise RuntimeError('boom')", r"get_time\(\d+, \d+, \d+\) raised RuntimeError: boom$"),
        ("return -1.0", r"get_time\(\d+, \d+, \d+\) returned -1\.0$"),
        ("return float('nan')", r"get_time\(\d+, \d+, \d+\) returned nan$"),
        ("return 'abc'", r"get_time\(\d+, \d+, \d+\) returned 'abc', not a number$"),
        ("return '1.5'", r"get_time\(\d+, \d+, \d+\) returned '1\.5', not a number$"),
        ("return None", r"get_time\(\d+, \d+, \d+\) returned None, not a number$"),
        ("return True", r"get_time\(\d+, \d+, \d+\) returned True, not a number$"),
    ],
)
def test_plugin_call_errors_name_the_call(tmp_path: Path, body: str, message: str) -> None:
    import re

    plugin, result = _plugin_run(tmp_path, f"def get_time(m, k, n):\n    {body}\n")
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    # A raise points at its line (2, the function's body); a bad value at no line.
    where = ":2:1" if body.startswith("raise") else ""
    assert first.startswith(f"{plugin}{where}: error: ")
    assert re.search(message, first), first


def test_plugin_error_names_a_one_argument_call_plainly(tmp_path: Path) -> None:
    _, result = _plugin_run(tmp_path, "def elem_time(n):\n    return -2\n")
    assert result.exit_code == 2
    # Elem_Time's first term is ln1's T·H = 128·256 elements; no tuple comma in the call.
    assert "elem_time(32768) returned -2.0" in result.stderr


def test_plugin_returning_numpy_and_int_is_accepted(tmp_path: Path) -> None:
    import json

    text = (
        "import numpy as np\ndef get_time(m, k, n):\n    return np.float32(2) if m > 200 else 1\n"
    )
    _, result = _plugin_run(tmp_path, text, "--matmul-only")
    assert result.exit_code == 0, result.stderr
    expected = sum(2.0 if m > 200 else 1.0 for m, _, _ in ONE_GPU_PRODUCTS)
    assert json.loads(result.stdout)["critical_path"]["time_s"] == pytest.approx(expected)


def test_plugin_errors_from_the_library(tmp_path: Path) -> None:
    base = roofline_for("h100", DType.BF16)
    with pytest.raises(dagc.DiagnosticError) as info:
        load_plugin(tmp_path / "missing.py", base)
    assert "no such cost plugin" in info.value.render()

    plugin = tmp_path / "p.py"
    plugin.write_text("def get_time(m, k, n):\n    return -1\n")
    model = load_plugin(plugin, base)
    with pytest.raises(dagc.DiagnosticError) as info:
        model.term_seconds(term(TermKind.MATMUL, 2, 3, 4))
    assert "get_time(2, 3, 4) returned -1.0" in info.value.render()
    # Terms the plugin does not define go to the base model.
    assert model.term_seconds(term(TermKind.ELEMENTWISE, 1000)) == base.term_seconds(
        term(TermKind.ELEMENTWISE, 1000)
    )

    compiled = dagc.compile_text(ONE_GPU)
    with pytest.raises(dagc.DiagnosticError):
        analyze_compiled(compiled, CostOptions(plugin=plugin))


def test_roofline_is_a_plain_class() -> None:
    params = RooflineParams(1e12, 1e12, 1e9, 1e9, 1e9)
    model = Roofline(params, 2)
    # 2·10·10·10 = 2000 FLOPs at 0.7e12 (2.9 ns) vs (100 + 100 + 100)·2 bytes at 0.85e12
    # (0.7 ns): compute wins.
    assert model.term_seconds(term(TermKind.MATMUL, 10, 10, 10)) == pytest.approx(
        2000 / 0.7e12, rel=1e-12
    )
