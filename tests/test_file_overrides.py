"""Roofline parameters set in the file's devices section (the same names as --set)."""

from __future__ import annotations

import pytest

import dagc
from dagc.api import CostOptions, analyze_compiled

BASE = """model m {{ layers = 1; hidden = 1024; heads = 8; ffn = 4096 }}
workload {{ batch = 8; seq = 512 }}
devices {{ group a = gpu[0..0]{extra} }}
layers 0 on a {{ mlp }}
"""


def _time(extra: str, options: CostOptions | None = None) -> float:
    compiled = dagc.compile_text(BASE.format(extra=extra), "t.dag")
    return analyze_compiled(compiled, options or CostOptions(matmul_only=True)).analysis.total_s


def test_file_sets_matmul_efficiency() -> None:
    # One GPU, matmul only: mlp_up and mlp_down, each 2·T·H·F FLOPs with T = 8·512 = 4096,
    # compute-bound on an h100 (989 TFLOP/s): (M·K + K·N + M·N)·2 bytes = 50.3 MB take
    # 17.7 us at 3.35 TB/s x 0.85, less than the 69.5 us of compute at half the peak.
    flops = 2 * 4096 * 1024 * 4096
    assert _time("; matmul_efficiency = 0.5") == pytest.approx(2 * flops / (989e12 * 0.5))
    assert _time("") == pytest.approx(2 * flops / (989e12 * 0.7))


def test_set_overrides_the_file() -> None:
    options = CostOptions(matmul_only=True, overrides={"matmul_efficiency": 0.25})
    flops = 2 * 4096 * 1024 * 4096
    assert _time("; matmul_efficiency = 0.5", options) == pytest.approx(2 * flops / (989e12 * 0.25))


def test_efficiency_above_one_is_an_error() -> None:
    with pytest.raises(dagc.DiagnosticError) as caught:
        dagc.compile_text(BASE.format(extra="; link_efficiency = 1.5"), "t.dag")
    [error] = caught.value.diagnostics
    # `devices { group a = gpu[0..0]; link_efficiency = ` is 49 characters: 1.5 is at 50.
    assert error.span is not None and (error.span.line, error.span.column) == (3, 50)
    assert error.message == (
        "`link_efficiency` must be between 0.001 and 1 (a fraction of the peak), not 1.5"
    )


def test_overrides_are_printed_in_the_ir() -> None:
    compiled = dagc.compile_text(BASE.format(extra="; network_bandwidth = 100e9"), "t.dag")
    assert "  hardware gpu=h100 node_size=8 network_bandwidth=1e+11" in str(compiled.program)
