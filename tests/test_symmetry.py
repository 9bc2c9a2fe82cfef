"""The symmetric fast path (collapse-symmetric) against the full expansion.

Collapsing keeps one GPU of each set doing identical work. Everything reported must be the
same as with the full expansion: critical-path time and names, the formula, the totals and
the per-GPU figures. The full expansion is the reference here; nothing is derived from the
collapsed graph alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from test_expansion import Config, configurations
from typer.testing import CliRunner

import dagc
from dagc.analysis.analyze import analyze
from dagc.api import cost_model
from dagc.backends.formula import python
from dagc.backends.report import analysis_json
from dagc.cli import app
from dagc.expand import expand
from helpers import example_files

runner = CliRunner()


def _report(compiled: dagc.CompileResult, symmetric: bool) -> dict[str, object]:
    model, params = cost_model(compiled.program)
    graph = expand(compiled, symmetric=symmetric).graph
    return analysis_json(analyze(graph, model, params.peak_flops, params.memory_bytes))


def _formula(compiled: dagc.CompileResult, symmetric: bool) -> str:
    return python(dagc.api.formula_compiled(compiled, symmetric=symmetric).expression)


def _same(compiled: dagc.CompileResult, *, formula: bool = True) -> None:
    full, collapsed = _report(compiled, False), _report(compiled, True)
    assert collapsed == full
    if formula:
        assert _formula(compiled, True) == _formula(compiled, False)


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_report_the_same_with_and_without_symmetry(path: Path) -> None:
    if "deepseek" in path.name:
        pytest.skip("checked at the CLI level below; its formula is slow without symmetry")
    # a training example's symbolic formula without symmetry walks 180,000 operations:
    # minutes; its report is compared here, the formula on a small training file below
    _same(dagc.compile_file(path), formula="training" not in path.parts)


def test_a_training_step_reports_and_formulates_the_same() -> None:
    text = (
        "model m { layers = 4; hidden = 64; heads = 4; kv_heads = 2; ffn = 128;"
        " activation = swiglu; vocab = 100; attention_kernel = fused; attention_mask = causal }\n"
        "workload { batch = 8; seq = 16; microbatch_size = 1 }\n"
        "training { dp = 2; schedule = 1f1b; recompute = selective; zero = 1;"
        " sequence_parallel = true; grad_overlap = true }\n"
        "devices { group s0 = gpu[0..3]; group s1 = gpu[4..7] }\n"
        "layers 0..3 on s0, s1 pp=2 { embed vocab_parallel; attention; mlp; lm_head }\n"
    )
    _same(dagc.compile_text(text, "t.dag"))


@given(configurations())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_configurations_report_the_same(config: Config) -> None:
    _same(dagc.compile_text(config.text, "t.dag"))


def test_collapse_keeps_one_gpu_per_class() -> None:
    # MA separation: attention ranks 0-7 have 3 heads and 8-11 have 2 (two classes);
    # the 4 MoE GPUs hold the same number of experts (one class): gpus 0, 8 and 12 remain.
    compiled = dagc.compile_file("examples/seed/ma_separation.dag")
    graph = expand(compiled, symmetric=True).graph
    assert sorted({g for step in graph.steps for g in step.gpus}) == [0, 8, 12]
    assert graph.symmetry is not None
    assert graph.symmetry.class_size == {0: 8, 8: 4, 12: 4}
    assert graph.gpus() == list(range(16))


def test_cli_json_is_byte_identical_with_and_without_symmetry() -> None:
    path = "examples/deepseek_v3_128gpu.dag"
    outputs = []
    for choice in ("on", "off"):
        result = runner.invoke(app, ["analyze", path, "--format", "json", "--symmetry", choice])
        assert result.exit_code == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    totals = json.loads(outputs[0])["totals"]
    assert totals["gpus"] == 128
