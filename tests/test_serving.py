"""Serving figures (`dagc analyze` on decode and serve files), the batch sweep, its plot,
and the --phase/--context options, against numbers derived by hand.

The configuration is tests/helpers.py's base file (4 layers, H = 1024, 16 heads of d = 64,
F = 4096, attention and mlp with tp = 4 on two pipeline stages of 4 GPUs) with a decode or
serve workload. Under `--matmul-only` with the plugin below, a product costs its FLOPs at
1 PFLOP/s and everything else 0, so one GPU of each stage runs, per layer:

    prefill (T = B·I tokens, h_i = 4 heads, F_i = 1024):
        3·g(T, H, 4d) + g(B·4·I, d, I) + g(B·4·I, I, d) + g(T, 4d, H) + 2·g(T, H, F_i)
    decode step at context C (T = B):
        3·g(B, H, 4d) + D(C) + g(B, 4d, H) + 2·g(B, H, F_i)

with g(M, K, N) = 2·M·K·N / 1e15 and D(C) = 2·B·4·C·(d + d) / 1e15 (Decode_Attn_Time's
FLOPs). With one micro-batch the path runs through the 4 layers one after another.
"""

from __future__ import annotations

import itertools
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dagc
from dagc.analysis.serving import (
    EXACT_STEPS,
    SAMPLED_STEPS,
    auto_batches,
    batch_problem,
    sample_positions,
    sum_steps,
)
from dagc.api import CostOptions, analyze_compiled, serve_compiled
from dagc.cli import app
from helpers import REPO, config

runner = CliRunner()

H, D_HEAD, HEADS_PER_RANK, F_RANK, LAYERS = 1024, 64, 4, 1024, 4
PLUGIN = """
def get_time(m, k, n):
    return 2 * m * k * n / 1e15


def decode_attn_time(b, h, kv, c, d_qk, d_v):
    return 2 * b * h * c * (d_qk + d_v) / 1e15
"""
# The same products, and a decode attention growing with C² (a convex step time).
SQUARE_PLUGIN = PLUGIN.replace("2 * b * h * c * (d_qk + d_v) / 1e15", "b * h * c * c / 1e15")


def g(m: int, k: int, n: int) -> float:
    return 2 * m * k * n / 1e15


def prefill_layer(batch: int, inputs: int) -> float:
    tokens = batch * inputs
    rows = batch * HEADS_PER_RANK * inputs
    return (
        3 * g(tokens, H, HEADS_PER_RANK * D_HEAD)
        + g(rows, D_HEAD, inputs)  # attn_scores
        + g(rows, inputs, D_HEAD)  # attn_out
        + g(tokens, HEADS_PER_RANK * D_HEAD, H)  # o_proj
        + 2 * g(tokens, H, F_RANK)  # mlp_up, mlp_down
    )


def step_without_attention(batch: int) -> float:
    """One decode step but its attention cores: 4 layers of qkv, o_proj, mlp."""
    return LAYERS * (
        3 * g(batch, H, HEADS_PER_RANK * D_HEAD)
        + g(batch, HEADS_PER_RANK * D_HEAD, H)
        + 2 * g(batch, H, F_RANK)
    )


def step(batch: int, context: int) -> float:
    """One decode step at context C under PLUGIN."""
    attention = 2 * batch * HEADS_PER_RANK * context * 2 * D_HEAD / 1e15
    return step_without_attention(batch) + LAYERS * attention


def square_step(batch: int, context: int) -> float:
    """One decode step at context C under SQUARE_PLUGIN."""
    return step_without_attention(batch) + LAYERS * batch * HEADS_PER_RANK * context**2 / 1e15


def squares(n: int) -> int:
    """1² + 2² + … + n²."""
    return n * (n + 1) * (2 * n + 1) // 6


def workload(line: str, path: Path) -> Path:
    """The base file with workload line 9 replaced, written to `path`."""
    path.write_text(config({9: line}), encoding="utf-8")
    return path


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    path = tmp_path / "costs.py"
    path.write_text(PLUGIN, encoding="utf-8")
    return path


def analyze_json(file: Path, plugin: Path, *extra: str) -> dict[str, Any]:
    args = ["analyze", str(file), "--cost-plugin", str(plugin), "--matmul-only"]
    result = runner.invoke(app, [*args, "--format", "json", *extra])
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


# ---------------------------------------------------------------------------------------
# The sampling rule, on closed forms


def test_short_outputs_price_every_step() -> None:
    assert sample_positions(EXACT_STEPS) == list(range(EXACT_STEPS))
    # step time a + b·C at contexts 101 … 164: the sum is a closed form
    total = sum_steps(101, 64, lambda c: 2.0 + 0.5 * c)
    assert total.exact and total.priced == 64
    assert total.total_s == pytest.approx(64 * 2.0 + 0.5 * (164 * 165 - 100 * 101) / 2)
    assert total.lower_s == total.upper_s == total.total_s
    assert (total.first_s, total.last_s) == (2.0 + 0.5 * 101, 2.0 + 0.5 * 164)


def test_long_outputs_sample_65_evenly_spaced_steps() -> None:
    positions = sample_positions(1000)
    assert len(positions) == SAMPLED_STEPS == 65
    assert positions[0] == 0 and positions[-1] == 999
    # k·999/64 rounded to the nearest step, halves up
    assert positions == [math.floor(k * 999 / 64 + 0.5) for k in range(65)]
    gaps = {b - a for a, b in itertools.pairwise(positions)}
    assert gaps == {15, 16}


def test_linear_step_times_are_summed_exactly_by_sampling() -> None:
    # interpolating a straight line is exact: sum of a + b·C over C = 513 … 1512
    total = sum_steps(513, 1000, lambda c: 1e-3 + 1e-6 * c)
    assert not total.exact and total.priced == 65
    exact = 1000 * 1e-3 + 1e-6 * (1512 * 1513 - 512 * 513) / 2
    assert total.total_s == pytest.approx(exact, rel=1e-12)


def test_sampled_sum_lies_within_its_bound_of_the_exact_sum() -> None:
    # a convex step time a + k·C²: the exact sum from the sum of squares
    a, k, first, steps = 2e-4, 3e-11, 2049, 4000
    last = first + steps - 1
    total = sum_steps(first, steps, lambda c: a + k * c * c)
    exact = steps * a + k * (squares(last) - squares(first - 1))
    assert total.lower_s <= exact <= total.upper_s
    assert total.lower_s <= total.total_s <= total.upper_s
    # chords of a convex function lie above it
    assert total.total_s >= exact
    # the bounds are the left and right Riemann sums over the samples
    positions = [math.floor(j * (steps - 1) / 64 + 0.5) for j in range(65)]
    times = [a + k * (first + p) ** 2 for p in positions]
    left = sum(times) + sum(
        (q - p - 1) * t for p, q, t in zip(positions, positions[1:], times, strict=False)
    )
    right = sum(times) + sum(
        (q - p - 1) * t for p, q, t in zip(positions, positions[1:], times[1:], strict=False)
    )
    assert total.lower_s == pytest.approx(left, rel=1e-12)
    assert total.upper_s == pytest.approx(right, rel=1e-12)
    assert "sampled: 65 of 4,000 decode steps" in total.describe()


def test_a_step_time_falling_with_the_context_is_flagged() -> None:
    total = sum_steps(1, 200, lambda c: 1.0 / c)
    assert not total.monotone
    assert "may not hold" in total.describe()


# ---------------------------------------------------------------------------------------
# Serve and decode figures of a file


SERVE = "  mode = serve; input = 128; output = 16"


def test_serve_figures_by_hand(tmp_path: Path, plugin: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    serving = analyze_json(file, plugin)["serving"]
    ttft = LAYERS * prefill_layer(8, 128)
    steps = [step(8, 128 + j) for j in range(1, 16)]  # C = I + j, j = 1 … O − 1
    e2e = ttft + sum(steps)
    assert serving["mode"] == "serve"
    assert (serving["batch"], serving["input"], serving["output"]) == (8, 128, 16)
    assert serving["ttft_s"] == pytest.approx(ttft, rel=1e-12)
    assert serving["tpot_s"] == pytest.approx(sum(steps) / 15, rel=1e-12)
    assert serving["decode_step_first_s"] == pytest.approx(step(8, 129), rel=1e-12)
    assert serving["decode_step_last_s"] == pytest.approx(step(8, 143), rel=1e-12)
    assert serving["e2e_s"] == pytest.approx(e2e, rel=1e-12)
    assert serving["tokens_per_s"] == pytest.approx(8 * 16 / e2e, rel=1e-12)
    assert serving["gpus"] == 8
    assert serving["tokens_per_s_per_gpu"] == pytest.approx(8 * 16 / e2e / 8, rel=1e-12)
    assert serving["approximation"]["exact"] is True
    assert serving["approximation"]["steps"] == 15
    assert serving["disaggregated"] is False and serving["kv_handoff_s"] is None


def test_serve_report_describes_the_last_decode_step(
    tmp_path: Path, plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a short path: the header is wrapped at spaces only
    file = workload(SERVE, Path("serve.dag"))
    report = analyze_json(file, plugin)
    assert report["critical_path"]["time_s"] == pytest.approx(step(8, 143), rel=1e-12)
    assert report["serving"]["context"] == 143
    assert "Decode_Attn_Time(8, 4, 4, 143, 64, 64)" in {
        term for node in report["critical_path"]["steps"] for term in node["terms"]
    }
    args = ["analyze", str(file), "--cost-plugin", str(plugin), "--matmul-only"]
    text = runner.invoke(app, args).stdout.splitlines()
    header = " ".join(line.strip() for line in text[:2])  # wrapped at 80 columns
    assert header == (
        "dagc analyze: serve.dag (serve; the report below is its last decode step, at context 143)"
    )
    assert any(line.startswith("TTFT           ") for line in text)
    assert any(line.startswith("approximation  exact: every decode step priced") for line in text)
    markdown = runner.invoke(app, [*args, "--format", "markdown"]).stdout
    assert markdown.startswith(f"# dagc analyze: `{file}` (serve;")
    assert "| TPOT | " in markdown


def test_long_serve_samples_within_its_bound(tmp_path: Path) -> None:
    square = tmp_path / "square.py"
    square.write_text(SQUARE_PLUGIN, encoding="utf-8")
    file = workload("  mode = serve; input = 128; output = 1001", tmp_path / "long.dag")
    serving = analyze_json(file, square)["serving"]
    # steps at C = 129 … 1128: a constant part plus 4 layers of B·4·C²/1e15
    exact = (
        1000 * step_without_attention(8)
        + LAYERS * 8 * HEADS_PER_RANK * (squares(1128) - squares(128)) / 1e15
    )
    approximation = serving["approximation"]
    assert approximation["exact"] is False
    assert (approximation["steps"], approximation["priced_steps"]) == (1000, 65)
    assert approximation["sum_lower_s"] <= exact <= approximation["sum_upper_s"]
    assert approximation["sum_lower_s"] <= approximation["sum_s"] <= approximation["sum_upper_s"]
    width = approximation["sum_upper_s"] - approximation["sum_lower_s"]
    assert abs(approximation["sum_s"] - exact) <= width
    assert serving["tpot_s"] == pytest.approx(approximation["sum_s"] / 1000, rel=1e-12)
    assert serving["decode_step_first_s"] == pytest.approx(square_step(8, 129), rel=1e-12)
    assert serving["decode_step_last_s"] == pytest.approx(square_step(8, 1128), rel=1e-12)


def test_decode_figures_by_hand(tmp_path: Path, plugin: Path) -> None:
    file = workload("  mode = decode; context = 4096", tmp_path / "decode.dag")
    report = analyze_json(file, plugin)
    serving = report["serving"]
    tpot = step(8, 4096)
    assert serving["mode"] == "decode" and serving["context"] == 4096
    assert serving["tpot_s"] == pytest.approx(tpot, rel=1e-12)
    assert serving["tokens_per_s"] == pytest.approx(8 / tpot, rel=1e-12)
    assert serving["tokens_per_s_per_gpu"] == pytest.approx(8 / tpot / 8, rel=1e-12)
    assert serving["ttft_s"] is None and serving["e2e_s"] is None
    assert report["critical_path"]["time_s"] == pytest.approx(tpot, rel=1e-12)


def test_serving_json_keys(tmp_path: Path, plugin: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    serving = analyze_json(file, plugin)["serving"]
    for key in (
        "ttft_s",
        "tpot_s",
        "e2e_s",
        "tokens_per_s",
        "tokens_per_s_per_gpu",
        "max_batch",
        "approximation",
        "decode_step_first_s",
        "decode_step_last_s",
    ):
        assert key in serving


def test_prefill_reports_have_no_serving_section(tmp_path: Path, plugin: Path) -> None:
    file = tmp_path / "prefill.dag"
    file.write_text(config(), encoding="utf-8")
    assert "serving" not in analyze_json(file, plugin)
    args = ["analyze", str(file), "--cost-plugin", str(plugin), "--matmul-only"]
    text = runner.invoke(app, args).stdout.splitlines()
    assert text[0].startswith("dagc analyze:") and "(" not in " ".join(text[:3])
    assert not any(line.startswith("serving") for line in text)


def test_one_output_token_is_the_prefill_alone(tmp_path: Path) -> None:
    compiled = dagc.compile_text(config({9: "  mode = serve; input = 128; output = 1"}))
    options = CostOptions(plugin=REPO / "examples" / "plugins" / "flops_only.py", matmul_only=True)
    analysis = serve_compiled(compiled, options).analysis
    assert analysis.serving is not None
    ttft = LAYERS * prefill_layer(8, 128)
    assert analysis.serving.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert analysis.serving.e2e_s == pytest.approx(ttft, rel=1e-12)
    assert analysis.serving.tpot_s is None
    assert analysis.total_s == pytest.approx(ttft, rel=1e-12)  # the report: the prefill
    # analyze_compiled routes the serve program the same way
    routed = analyze_compiled(compiled, options).analysis
    assert routed.serving == analysis.serving


# ---------------------------------------------------------------------------------------
# The batch sweep and its plot


DECODE = "  mode = decode; context = 256"


def sweep(file: Path, plugin: Path, *extra: str) -> Any:
    args = ["analyze", str(file), "--cost-plugin", str(plugin), "--matmul-only"]
    return runner.invoke(app, [*args, *extra])


def test_sweep_table_rows_by_hand(tmp_path: Path, plugin: Path) -> None:
    file = workload(DECODE + "; microbatches = 2", tmp_path / "decode.dag")
    result = sweep(file, plugin, "--batch-sweep", "8,1,2,3", "--format", "json")
    assert result.exit_code == 0, result.stderr
    table = json.loads(result.stdout)
    assert table["format"] == "dagc-batch-sweep" and table["mode"] == "decode"
    assert [row["batch"] for row in table["rows"]] == [2, 8]
    assert [s["batch"] for s in table["skipped"]] == [1, 3]
    assert "dagc: note: batch 1 skipped: not divisible by the 2 micro-batches" in result.stderr
    for row in table["rows"]:
        # two micro-batches of B/2 sequences run one after another through the 2 stages:
        # (m + p − 1)·t = 3 stage times of 2 layers each
        half = step(row["batch"] // 2, 256) / 2
        assert row["tpot_s"] == pytest.approx(3 * half, rel=1e-12)
        assert row["tokens_per_s"] == pytest.approx(row["batch"] / (3 * half), rel=1e-12)
        assert row["tokens_per_s_per_gpu"] == pytest.approx(row["tokens_per_s"] / 8, rel=1e-12)
        assert row["ttft_s"] is None and row["fits"] is True


def test_sweep_text_and_markdown(tmp_path: Path, plugin: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    text = sweep(file, plugin, "--batch-sweep", "1,2").stdout.splitlines()
    text = text[[line.startswith("batch  ") for line in text].index(True) - 1 :]  # the title wraps
    assert text[1].split() == ["batch", "TTFT", "TPOT", "ms", "tokens/s", "tokens/s/GPU", "fits"]
    assert [line.split()[0] for line in text[2:]] == ["1", "2"]
    assert all(line.split()[-1] == "yes" for line in text[2:])
    markdown = sweep(file, plugin, "--batch-sweep", "1,2", "--format", "markdown").stdout
    lines = markdown.splitlines()
    assert lines[2] == "| batch | TTFT | TPOT ms | tokens/s | tokens/s/GPU | fits |"
    assert lines[3] == "|---:|---:|---:|---:|---:|---|"
    assert len(lines) == 6


def test_sweep_auto_doubles_from_the_smallest_batch(tmp_path: Path) -> None:
    compiled = dagc.compile_text(config({8: "  batch = 12", 9: DECODE + "; microbatches = 3"}))
    assert auto_batches(compiled.program, None) == [3 * 2**k for k in range(11)]  # ≤ 4096
    assert auto_batches(compiled.program, 20) == [3, 6, 12]  # 20 is no multiple of m = 3
    # the largest batch that fits ends the sweep, where the doublings stop short of it
    assert auto_batches(compiled.program, 21) == [3, 6, 12, 21]
    assert batch_problem(compiled.program, 4) == "not divisible by the 3 micro-batches"
    assert batch_problem(compiled.program, 6) is None


def test_sweep_skips_batches_leaving_a_replica_without_a_sequence() -> None:
    # attention and mlp as 4 data-parallel replicas (tp = 1) on g0: each needs a sequence
    replicas = "layers 0..3 on g0 {\n  attention tp=1 dp=4\n  mlp tp=1 dp=4\n}"
    text = config({9: DECODE, 15: replicas, 16: "", 17: "", 18: "", 19: "", 20: "", 21: "", 22: ""})
    program = dagc.compile_text(text).program
    assert batch_problem(program, 2) == (
        "a micro-batch of 2 sequences leaves some of the dp=4 replicas without one"
    )
    assert batch_problem(program, 4) is None
    assert auto_batches(program, 16) == [4, 8, 16]


def test_sweep_plot_is_deterministic_svg(tmp_path: Path, plugin: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    for picture in (first, second):
        result = sweep(file, plugin, "--batch-sweep", "4,1,2,8", "--plot", str(picture))
        assert result.exit_code == 0, result.stderr
        assert f"dagc: wrote {picture}" in result.stderr
    assert first.read_bytes() == second.read_bytes()
    root = ET.fromstring(first.read_text(encoding="utf-8"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}circle")) == 4
    labels = [t.text for t in root.findall(f"{ns}text")]
    assert {"1", "2", "4", "8"} <= set(labels)
    assert "tokens/s per GPU" in labels
    # the curve joins the points in batch order: TPOT (x) grows with the batch here
    line = root.find(f"{ns}polyline")
    assert line is not None
    xs = [float(p.split(",")[0]) for p in line.attrib["points"].split()]
    assert xs == sorted(xs)


@pytest.mark.parametrize(
    ("extra", "message", "help"),
    [
        (
            ["--plot", "x.svg"],
            "dagc: error: --plot needs --batch-sweep",
            "e.g. --batch-sweep 1,8,64 --plot curve.svg",
        ),
        (
            ["--batch-sweep", "1,two"],
            "dagc: error: --batch-sweep expects positive batches separated by commas, or auto;"
            " got `two`",
            "e.g. --batch-sweep 1,2,4,8 or --batch-sweep auto",
        ),
        (
            ["--batch-sweep", "1", "--plot", "curve.png"],
            "dagc: error: cannot tell the output format of `curve.png`: unknown extension `.png`",
            "name the output with one of .svg",
        ),
    ],
)
def test_sweep_option_errors(
    tmp_path: Path, plugin: Path, extra: list[str], message: str, help: str
) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    result = sweep(file, plugin, *extra)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == message
    assert lines[1].strip() == f"= help: {help}"


def test_sweep_of_a_prefill_file_is_an_error(tmp_path: Path, plugin: Path) -> None:
    file = tmp_path / "prefill.dag"
    file.write_text(config(), encoding="utf-8")
    result = sweep(file, plugin, "--batch-sweep", "1,2")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "dagc: error: --batch-sweep needs a decode or serve workload"
    )


# ---------------------------------------------------------------------------------------
# --phase and --context


def formula(file: Path, *extra: str) -> Any:
    return runner.invoke(app, ["formula", str(file), "--format", "python", *extra])


def test_formula_phases_of_a_serve_file(tmp_path: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    default = formula(file)
    assert default.exit_code == 0, default.stderr
    assert "Decode_Attn_Time(8, 4, 4, 143, 64, 64)" in default.stdout  # C = I + O − 1
    assert "Decode_Attn_Time(8, 4, 4, 300, 64, 64)" in formula(file, "--context", "300").stdout
    prefill = formula(file, "--phase", "prefill").stdout
    assert "Decode_Attn_Time" not in prefill
    assert "Get_Time(4096, 64, 128)" in prefill  # attn_scores: B·h_i·I x d x I


def test_formula_context_of_a_decode_file(tmp_path: Path) -> None:
    file = workload(DECODE, tmp_path / "decode.dag")
    assert "Decode_Attn_Time(8, 4, 4, 256, 64, 64)" in formula(file).stdout
    assert "Decode_Attn_Time(8, 4, 4, 7, 64, 64)" in formula(file, "--context", "7").stdout


def test_lower_and_timeline_phases(tmp_path: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    whole = runner.invoke(app, ["lower", str(file), "--emit", "ir"]).stdout
    assert "mode=serve" in whole  # the file's program, both phases
    prefill = runner.invoke(app, ["lower", str(file), "--emit", "ir", "--phase", "prefill"])
    assert "mode=" not in prefill.stdout
    steps = runner.invoke(app, ["lower", str(file), "--emit", "steps", "--context", "200"])
    assert "Decode_Attn_Time(8, 4, 4, 200, 64, 64)" in steps.stdout
    trace = tmp_path / "trace.json"
    result = runner.invoke(app, ["timeline", str(file), "-o", str(trace), "--phase", "prefill"])
    assert result.exit_code == 0, result.stderr
    names = {e.get("name", "") for e in json.loads(trace.read_text())["traceEvents"]}
    assert any(n.startswith("attn_scores_l0") for n in names)
    assert not any(n.startswith("attn_decode") for n in names)


@pytest.mark.parametrize(
    ("line", "options", "message", "help"),
    [
        (
            None,
            ["--phase", "decode"],
            "--phase decode needs a decode or serve workload",
            "this file's workload is a prefill; set `mode = decode` or `mode = serve` in its"
            " workload",
        ),
        (
            None,
            ["--context", "8"],
            "--context needs a decode or serve workload",
            "this file's workload is a prefill, which has no context",
        ),
        (
            DECODE,
            ["--phase", "prefill"],
            "--phase prefill needs a serve workload",
            "a decode workload is one decode step and has no prefill; drop --phase",
        ),
        (
            SERVE,
            ["--phase", "prefill", "--context", "9"],
            "--context applies to the decode phase, not to --phase prefill",
            "drop --context, or use --phase decode",
        ),
    ],
)
def test_phase_option_errors(
    tmp_path: Path, line: str | None, options: list[str], message: str, help: str
) -> None:
    file = tmp_path / "t.dag"
    file.write_text(config({9: line} if line else None), encoding="utf-8")
    for command in (["formula"], ["lower", "--emit", "steps"], ["timeline", "-o", "t.json"]):
        result = runner.invoke(app, [command[0], str(file), *command[1:], *options])
        assert result.exit_code == 2, command
        lines = result.stderr.splitlines()
        assert lines[0] == f"dagc: error: {message}"
        assert lines[1].strip() == f"= help: {help}"


def test_phase_with_emit_ast_is_an_error(tmp_path: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    result = runner.invoke(app, ["lower", str(file), "--emit", "ast", "--phase", "decode"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "dagc: error: --phase does nothing with --emit ast"


def test_sweep_marks_batches_that_do_not_fit(tmp_path: Path, plugin: Path) -> None:
    # 1 MB per GPU: not even the weights fit
    file = workload(DECODE, tmp_path / "decode.dag")
    picture = tmp_path / "curve.svg"
    small = ["--set", "memory_bytes=1e6", "--batch-sweep", "1,2", "--plot", str(picture)]
    result = sweep(file, plugin, *small, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [row["fits"] for row in json.loads(result.stdout)["rows"]] == [False, False]
    root = ET.fromstring(picture.read_text(encoding="utf-8"))
    circles = root.findall("{http://www.w3.org/2000/svg}circle")
    assert [c.attrib["fill"] for c in circles] == ["white", "white"]


def test_analyze_formula_of_a_serve_file_is_its_reported_step(tmp_path: Path, plugin: Path) -> None:
    file = workload(SERVE, tmp_path / "serve.dag")
    report = analyze_json(file, plugin, "--formula")
    assert "Decode_Attn_Time(8, 4, 4, 143, 64, 64)" in report["formula"]["python"]
    assert "Get_Time(1024, 1024, 256)" not in report["formula"]["python"]  # no prefill


# ---------------------------------------------------------------------------------------
# Disaggregated serving: prefill on g0, decode on g1, the KV cache sent layer by layer

DISAGGREGATED = {
    9: SERVE,
    15: "layers 0..3 on g0 prefill {",
    19: "layers 0..3 on g1 decode {",
}
# Products as PLUGIN; norms, residuals and all-reduces free; a P2P moves 1 GB/s.
SLOW_LINK_PLUGIN = (
    PLUGIN
    + """

def elem_time(n):
    return 0.0


def all_reduce_time(nbytes, n):
    return 0.0


def p2p_time(nbytes):
    return nbytes / 1e9
"""
)


def test_disaggregated_serve_by_hand(tmp_path: Path) -> None:
    costs = tmp_path / "slow_link.py"
    costs.write_text(SLOW_LINK_PLUGIN, encoding="utf-8")
    file = tmp_path / "disaggregated.dag"
    file.write_text(config(DISAGGREGATED), encoding="utf-8")
    result = runner.invoke(
        app, ["analyze", str(file), "--cost-plugin", str(costs), "--format", "json"]
    )
    assert result.exit_code == 0, result.stderr
    serving = json.loads(result.stdout)["serving"]
    # the prefill runs its 4 layers on g0; the first token is known at their end
    ttft = LAYERS * prefill_layer(8, 128)
    # each layer sends its K and V after its qkv: B·I tokens × 2·nkv·d·w bytes over the 4
    # GPUs, 8·128·(2·16·64·2)/4 = 1 MiB, 1.048576 ms at 1 GB/s; the sends queue on the
    # communication stream from the end of layer 0's qkv
    send = 8 * 128 * (2 * 16 * 64 * 2) // 4 / 1e9
    handoff = 3 * g(8 * 128, H, HEADS_PER_RANK * D_HEAD) + LAYERS * send
    assert handoff > ttft
    steps = sum(step(8, 128 + j) for j in range(1, 16))
    assert serving["disaggregated"] is True
    assert serving["ttft_s"] == pytest.approx(ttft, rel=1e-12)
    assert serving["kv_handoff_s"] == pytest.approx(handoff, rel=1e-12)
    assert serving["prefill_makespan_s"] == pytest.approx(handoff, rel=1e-12)
    assert serving["e2e_s"] == pytest.approx(handoff + steps, rel=1e-12)
    # steady state: one batch prefills (and sends) while the previous one decodes
    assert serving["tokens_per_s"] == pytest.approx(8 * 16 / max(handoff, steps), rel=1e-12)
    assert serving["gpus"] == 8  # both layouts


# ---------------------------------------------------------------------------------------
# The largest batch that fits (dagc/analysis/capacity.py) in the serving figures


def test_max_batch_bounds_the_sweep(tmp_path: Path, plugin: Path) -> None:
    # 2 GB per GPU: the KV cache (2·4 kv heads·64·2 bytes = 2 KiB per token, layer and GPU
    # rank; 2 layers per GPU) at C = 4096 takes 16 MiB per sequence
    file = workload("  mode = decode; context = 4096", tmp_path / "decode.dag")
    small = ["--set", "memory_bytes=2e9"]
    serving = analyze_json(file, plugin, *small)["serving"]
    largest = serving["max_batch"]
    assert serving["max_batch_context"] == 4096
    per_sequence = 2 * 2 * 4 * 64 * 2 * 4096
    assert 0 < largest <= 2e9 // per_sequence
    result = sweep(file, plugin, *small, "--batch-sweep", "auto", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    doublings = [row["batch"] for row in rows[:-1]]
    assert doublings == [2**k for k in range(len(rows) - 1)]
    assert rows[-1]["batch"] == largest  # the sweep ends where memory does
    assert doublings[-1] < largest < 2 * doublings[-1]
    assert all(row["fits"] for row in rows)
    beyond = sweep(file, plugin, *small, "--batch-sweep", f"{largest},{largest + 1}")
    fits = [line.split()[-1] for line in beyond.stdout.splitlines()[-2:]]
    assert fits == ["yes", "no"]
