"""The training figures of `dagc analyze` and `dagc compare` (docs/training.md, "Report").

Each expected number is a closed form written here from the model's sizes: model FLOPs,
tokens per iteration, GPUs over every replica, the peak set with `--set peak_flops`.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest

from dagc.analysis.analyze import Analysis
from dagc.api import CostOptions, analyze_compiled, build_schedule
from dagc.backends.report import (
    analysis_json,
    comparison_json,
    write_comparison,
    write_markdown,
    write_text,
)
from dagc.backends.style import PHASE_COLOUR
from dagc.backends.timeline import _phase_legend, draw_gantt, gantt_rows, trace_events
from dagc.compiler import compile_text
from dagc.ir.steps import Phase
from helpers import two_stage_training

L, H, HEADS, D, FFN, SEQ = 4, 1024, 16, 64, 4096, 128
PEAK = 1e15  # --set peak_flops, so MFU's denominator is known here
N = 4  # the layout's GPUs: two stages of tp = 2
HAS_BACKWARD = importlib.util.find_spec("dagc.passes.backward") is not None


def training_file(*, dp: int = 2, m: int = 4, batch: int = 16, extra: str = "") -> str:
    """Four layers on two stages of tp=2 (the sizes L, H, HEADS, FFN, SEQ above)."""
    return two_stage_training(dp=dp, microbatches=m, batch=batch, extra=extra)


PREFILL = training_file().replace("training {\n  dp = 2\n}\n", "")


def forward_flops(batch: int) -> int:
    """The forward's model FLOPs of the global batch: 2 per token and product weight (q, k,
    v, o: 4·H²; mlp up and down: 2·H·F) and the full-mask S×S products, per layer."""
    tokens = batch * SEQ
    products = 2 * tokens * L * (4 * H * H + 2 * H * FFN)
    core = L * 2 * batch * HEADS * SEQ * SEQ * (D + D)
    return products + core


def analyse(text: str, **overrides: float) -> Analysis:
    options = CostOptions(overrides={"peak_flops": PEAK, **overrides})
    return analyze_compiled(compile_text(text, "train.dag"), options).analysis


@pytest.fixture(scope="module")
def trained() -> Analysis:
    return analyse(training_file())


def test_prefill_text_has_no_training_section() -> None:
    assert "training" not in PREFILL
    analysis = analyse(PREFILL)
    assert analysis.training is None
    document = analysis_json(analysis)
    assert "training" not in document
    assert all("memory" not in g for g in document["gpus"])


def test_tokens_per_second_over_every_replica(trained: Analysis) -> None:
    t = trained.training
    assert t is not None
    dp, batch = 2, 16
    assert t.tokens == batch * SEQ
    assert t.gpus == dp * N
    assert t.tokens_per_s == pytest.approx(batch * SEQ / trained.total_s, rel=1e-12)
    assert t.tokens_per_s_per_gpu == pytest.approx(batch * SEQ / trained.total_s / (dp * N))
    assert trained.tokens_per_s_per_gpu == t.tokens_per_s_per_gpu


def test_mfu_counts_three_times_the_forward(trained: Analysis) -> None:
    t = trained.training
    assert t is not None
    model = 3 * forward_flops(16)
    assert t.model_flops == model
    assert t.iteration_s == trained.total_s
    assert t.model_tflops_per_gpu == pytest.approx(model / trained.total_s / (2 * N) / 1e12)
    assert t.mfu == pytest.approx(model / (trained.total_s * PEAK * 2 * N), rel=1e-12)
    assert trained.mfu == t.mfu


def test_hfu_counts_what_every_replica_executes(trained: Analysis) -> None:
    t = trained.training
    assert t is not None
    # explicit attention under a full mask executes exactly the model's products; the
    # backward adds twice the forward's (input and weight gradients)
    executed = (3 if HAS_BACKWARD else 1) * forward_flops(16)
    assert t.executed_flops == executed
    assert t.hfu == pytest.approx(executed / (trained.total_s * PEAK * 2 * N), rel=1e-12)


def test_bubble_is_the_busiest_gpus_idle_share(trained: Analysis) -> None:
    t = trained.training
    assert t is not None
    busiest = max(trained.gpus, key=lambda g: g.busy_s)
    assert t.busiest_gpu == busiest.gpu
    assert t.bubble == pytest.approx(1 - busiest.busy_s / trained.total_s)
    assert t.bubble == pytest.approx(min(g.bubble for g in trained.gpus))


def test_exposed_communication_is_the_paths_communication(trained: Analysis) -> None:
    t = trained.training
    assert t is not None
    on_path = sum(n.time_s for n in trained.path if n.kind.is_communication)
    assert t.exposed_communication_s == pytest.approx(on_path)
    assert 0 < t.exposed_communication_s < t.iteration_s


def test_json_keys(trained: Analysis) -> None:
    document = json.loads(json.dumps(analysis_json(trained)))
    training = document["training"]
    for key in (
        "iteration_s",
        "tokens_per_s",
        "tokens_per_s_per_gpu",
        "model_tflops_per_gpu",
        "mfu",
        "hfu",
        "bubble",
        "exposed_communication_s",
        "model_flops",
        "executed_flops",
        "gpus",
        "dp",
        "peak_memory_bytes",
    ):
        assert key in training, key
    assert training["iteration_s"] == document["critical_path"]["time_s"]
    for gpu in document["gpus"]:
        memory = gpu["memory"]
        parts = ("weight_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes")
        assert memory["peak_bytes"] == sum(memory[p] for p in parts)
        assert memory["activation_bytes"] == (
            memory["saved_activation_bytes"] + memory["working_set_bytes"]
        )
        assert gpu["memory_bytes"] == memory["peak_bytes"]
    assert training["peak_memory_bytes"] == max(g["memory"]["peak_bytes"] for g in document["gpus"])


def test_text_and_markdown_sections(trained: Analysis) -> None:
    text = io.StringIO()
    write_text(trained, text)
    report = text.getvalue()
    assert "training       iteration" in report
    assert "dp 2 x 4 GPUs = 8 GPUs" in report
    assert "memory per GPU (capacity" in report
    assert all(len(line) <= 80 for line in report.splitlines())
    markdown = io.StringIO()
    write_markdown(trained, markdown)
    assert "| training | value |" in markdown.getvalue()
    assert "| GPUs | weights | gradients | optimizer states |" in markdown.getvalue()


def test_memory_warning_names_gradients_and_optimizer_states() -> None:
    analysis = analyse(training_file(), memory_bytes=1e8)
    assert analysis.warnings
    assert "gradients" in analysis.warnings[0]
    assert "optimizer states" in analysis.warnings[0]


def test_compare_training_row() -> None:
    trained = analyse(training_file())
    prefill = analyse(PREFILL)
    document = comparison_json([trained, prefill])
    row, plain = document["configs"]
    assert row["gpus"] == 2 * N
    assert row["training"] == {"iteration_s": trained.total_s, "mfu": trained.mfu}
    assert "training" not in plain
    stream = io.StringIO()
    write_comparison([trained, prefill], stream)
    assert "note: training (train.dag): time is one iteration" in stream.getvalue()


def test_trace_and_gantt_by_phase(tmp_path: Path) -> None:
    schedule, _ = build_schedule(compile_text(training_file(), "train.dag"))
    events = [e for e in trace_events(schedule) if e["ph"] == "X"]
    assert {e["args"]["phase"] for e in events} >= {"forward"}
    rows = gantt_rows(schedule, blocks=False)
    labels = [h.get_label() for h in _phase_legend(rows)]
    assert labels[0] == "forward"
    assert labels[-1] == "critical"
    assert len(set(PHASE_COLOUR.values())) == len(Phase)
    draw_gantt(schedule, tmp_path / "train.png")
    assert (tmp_path / "train.png").stat().st_size > 0
    prefill, _ = build_schedule(compile_text(PREFILL, "prefill.dag"))
    assert all("phase" not in e["args"] for e in trace_events(prefill) if e["ph"] == "X")


@pytest.mark.parametrize(("p", "m"), [(2, 4), (4, 8)])
def test_bubble_closed_form_under_1f1b(p: int, m: int) -> None:
    # equal stages, only products priced: the iteration is (m + p − 1)·(t_f + t_b), every
    # stage busy m·(t_f + t_b), so the bubble is (p − 1)/(m + p − 1)
    groups = "\n".join(f"  group s{s} = gpu[{s}]" for s in range(p))
    layers = "\n".join(f"layers {s} on s{s} {{\n  attention\n  mlp\n}}" for s in range(p))
    text = (
        f"model m {{\n  layers = {p}\n  hidden = 256\n  heads = 4\n  ffn = 1024\n}}\n"
        f"workload {{\n  batch = {m}\n  seq = 64\n  microbatches = {m}\n}}\n"
        f"training {{\n  schedule = 1f1b\n}}\ndevices {{\n{groups}\n}}\n{layers}\n"
    )
    options = CostOptions(matmul_only=True)
    analysis = analyze_compiled(compile_text(text, "pp.dag"), options).analysis
    assert analysis.training is not None
    assert analysis.training.bubble == pytest.approx((p - 1) / (m + p - 1), rel=1e-9)


def test_the_training_example_verifies_and_reports() -> None:
    # examples/training/ is left out of the every-example tests (its formula meets more
    # incomparable branches than the limit and takes minutes without symmetry): here it is
    # verified after every pass, collapsed, and its report names the 8 × 32 GPUs.
    from typer.testing import CliRunner

    import dagc
    from dagc.cli import app
    from dagc.expand import expand
    from dagc.passes.manager import PassOptions

    path = Path(__file__).parent.parent / "examples" / "training" / "llama_3_1_70b_train.dag"
    compiled = dagc.compile_file(path)
    expand(compiled, options=PassOptions(verify_each=True), symmetric=True)
    result = CliRunner().invoke(app, ["analyze", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    training = json.loads(result.stdout)["training"]
    assert training["gpus"] == 8 * 32
    assert training["iteration_s"] > 0
