"""The measured-table cost model, its CSV reader, and `dagc profile`."""

from __future__ import annotations

import json
import math
import sys
import time
from itertools import pairwise, product
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import dagc.profile
from dagc.analysis.costs import CostModel, roofline_for
from dagc.analysis.table import MeasuredTable, TableModel, load_cost_table, make_monotone
from dagc.cli import app
from dagc.diagnostics import DiagnosticError, Severity
from dagc.ir.logical import DType
from dagc.ir.terms import CostTerm, TermKind
from dagc.profile import (
    CPU_PASS_FLOPS,
    Backend,
    default_grid,
    grid_flops,
    profile_matmul,
    write_cost_table,
)
from helpers import REPO

runner = CliRunner()

MS, KS, NS = (256, 1024), (128, 512), (64, 256)
# Increasing along every axis, but no power law, so interpolation has something to do.
VALUES = {
    (256, 128, 64): 1.0e-5,
    (256, 128, 256): 3.0e-5,
    (256, 512, 64): 2.0e-5,
    (256, 512, 256): 9.0e-5,
    (1024, 128, 64): 5.0e-5,
    (1024, 128, 256): 7.0e-5,
    (1024, 512, 64): 6.0e-5,
    (1024, 512, 256): 4.0e-4,
}


def _csv(values: dict[tuple[int, int, int], float]) -> str:
    rows = [f"{m},{k},{n},{s!r}" for (m, k, n), s in values.items()]
    return "\n".join(["m,k,n,seconds", *rows]) + "\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "table.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _mm(m: int, k: int, n: int) -> CostTerm:
    return CostTerm(TermKind.MATMUL, (m, k, n))


class Constant(CostModel):
    """A fallback that prices every term at the same number of seconds."""

    name = "constant"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def term_seconds(self, term: CostTerm) -> float:
        return self.seconds


def _model(tmp_path: Path, fallback: CostModel | None = None) -> TableModel:
    table = load_cost_table(_write(tmp_path, _csv(VALUES)))
    return TableModel(table, fallback or Constant(1.0))


# --- interpolation ------------------------------------------------------------------------


def test_exact_at_grid_points(tmp_path: Path) -> None:
    model = _model(tmp_path)
    for point, seconds in VALUES.items():
        assert model.term_seconds(_mm(*point)) == seconds
    assert model.notes() == []
    assert model.name == f"table {tmp_path / 'table.csv'}"


def _log_lerp(low: float, high: float, t: float) -> float:
    return math.exp((1 - t) * math.log(low) + t * math.log(high))


def test_between_points_is_log_space_trilinear(tmp_path: Path) -> None:
    model = _model(tmp_path)
    m, k, n = 512, 200, 100
    tm = math.log(m / 256) / math.log(1024 / 256)
    tk = math.log(k / 128) / math.log(512 / 128)
    tn = math.log(n / 64) / math.log(256 / 64)

    # By hand, axis by axis in the other order: n first, then k, then m.
    def along_n(mm: int, kk: int) -> float:
        return _log_lerp(VALUES[(mm, kk, 64)], VALUES[(mm, kk, 256)], tn)

    def along_k(mm: int) -> float:
        return _log_lerp(along_n(mm, 128), along_n(mm, 512), tk)

    expected = _log_lerp(along_k(256), along_k(1024), tm)
    assert model.term_seconds(_mm(m, k, n)) == pytest.approx(expected, rel=1e-12)


def test_midpoint_in_log_space_is_the_geometric_mean(tmp_path: Path) -> None:
    model = _model(tmp_path)
    low, high = VALUES[(256, 128, 64)], VALUES[(1024, 128, 64)]
    assert model.term_seconds(_mm(512, 128, 64)) == pytest.approx(math.sqrt(low * high))


def test_a_single_value_axis_is_exact_there(tmp_path: Path) -> None:
    text = "m,k,n,seconds\n256,64,64,1e-5\n1024,64,64,4e-5\n"
    model = TableModel(load_cost_table(_write(tmp_path, text)), Constant(1.0))
    assert model.term_seconds(_mm(512, 64, 64)) == pytest.approx(2e-5)
    model.term_seconds(_mm(512, 65, 64))
    assert model.notes()[0].startswith("1 of 2 Get_Time terms falls outside")


# --- outside the table ----------------------------------------------------------------------


def test_outside_uses_the_fallback_and_is_noted(tmp_path: Path) -> None:
    model = _model(tmp_path, Constant(1.0))
    assert model.term_seconds(_mm(2048, 128, 64)) == 1.0  # m above the table
    assert model.term_seconds(_mm(2048, 64, 64)) == 1.0  # m above, k below: fallback as is
    assert model.term_seconds(_mm(512, 256, 128)) < 1.0
    assert model.term_seconds(_mm(512, 256, 128)) < 1.0  # the same term counts once
    assert model.notes() == [
        "2 of 3 Get_Time terms fall outside the measured table and use the constant"
    ]


def test_other_terms_go_to_the_fallback(tmp_path: Path) -> None:
    model = _model(tmp_path, Constant(0.25))
    assert model.term_seconds(CostTerm(TermKind.ELEMENTWISE, (1000,))) == 0.25
    assert model.term_seconds(CostTerm(TermKind.ALL_REDUCE, (1000, 8))) == 0.25
    assert model.notes() == []


def test_outside_with_the_roofline(tmp_path: Path) -> None:
    roofline = roofline_for("h100", DType.BF16)
    model = _model(tmp_path, roofline)
    term = _mm(8192, 8192, 8192)  # the roofline says 2.2 ms, above every table entry
    assert model.term_seconds(term) == roofline.term_seconds(term)
    assert model.notes() == [
        "1 of 1 Get_Time terms falls outside the measured table and uses the roofline"
    ]


def test_fallback_is_bounded_by_the_table_edge(tmp_path: Path) -> None:
    # A fallback faster than the table above it, slower than the table below it.
    fast = _model(tmp_path, Constant(1e-9))
    assert fast.term_seconds(_mm(4096, 512, 256)) == VALUES[(1024, 512, 256)]
    slow = _model(tmp_path, Constant(1.0))
    assert slow.term_seconds(_mm(16, 128, 64)) == VALUES[(256, 128, 64)]
    assert slow.notes()[1] == (
        "1 of these was moved to the value at the table's edge so that Get_Time stays monotone"
    )


def test_get_time_stays_monotone_across_the_edge(tmp_path: Path) -> None:
    model = _model(tmp_path, roofline_for("h100", DType.BF16))
    sizes = [16, 64, 128, 200, 256, 300, 512, 1024, 2048, 8192]
    for m, k, n in product(sizes, sizes, sizes):
        here = model.term_seconds(_mm(m, k, n))
        for bigger in ((2 * m, k, n), (m, 2 * k, n), (m, k, 2 * n)):
            assert model.term_seconds(_mm(*bigger)) >= here


# --- monotone repair ------------------------------------------------------------------------


def test_monotone_repair_raises_a_noisy_entry(tmp_path: Path) -> None:
    noisy = dict(VALUES)
    noisy[(1024, 512, 64)] = 4.0e-5  # below (1024, 128, 64) = 5e-5 and (256, 512, 64)
    table = load_cost_table(_write(tmp_path, _csv(noisy)))
    assert table.raised == 1
    assert table.measured[1, 1, 0] == 4.0e-5
    model = TableModel(table, Constant(1.0))
    assert model.term_seconds(_mm(1024, 512, 64)) == 5.0e-5
    assert model.notes() == [
        "1 of 8 table entries was raised to keep Get_Time monotone (measurement noise)"
    ]


def test_make_monotone_covers_every_axis() -> None:
    values = np.array(np.random.default_rng(1).random((4, 3, 5)))
    repaired = make_monotone(values)
    assert (repaired >= values).all()
    for axis in range(3):
        assert (np.diff(repaired, axis=axis) >= 0).all()
    assert (make_monotone(repaired) == repaired).all()


# --- the CSV --------------------------------------------------------------------------------


def test_comments_extra_columns_quotes_and_equal_duplicates(tmp_path: Path) -> None:
    text = (
        "\ufeff# measured by hand\n"
        "device, M ,k,n,seconds\n"
        '"h100, sxm",256,64,64,1e-5\n'
        "\n"
        "  # a comment\n"
        '"h100, sxm",512,64,64,2e-5\n'
        '"h100, sxm",512,64,64,2e-5\n'
    )
    table = load_cost_table(_write(tmp_path, text))
    assert (table.ms, table.ks, table.ns) == ((256, 512), (64,), (64,))
    assert isinstance(table, MeasuredTable) and table.size == 2


def _error(tmp_path: Path, text: str | bytes) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(DiagnosticError) as caught:
        load_cost_table(path)
    assert all(d.severity is Severity.ERROR for d in caught.value.diagnostics)
    return [d.render().splitlines()[0].removeprefix(f"{path}:") for d in caught.value.diagnostics]


HEADER = "m,k,n,seconds\n"
CSV_ERRORS = [
    ("", "1:1: error: the table has no header line"),
    ("# only a comment\n", "1:17: error: the table has no header line"),
    (HEADER, "1:14: error: the table has no measurements"),
    ("m,k,time\n1,1,1\n", "1:1: error: the header lacks the columns `n` and `seconds`"),
    ("m,k,n,seconds,m\n", "1:15: error: column `m` appears twice in the header"),
    (HEADER + "256,64.5,64,1e-3\n", "2:5: error: `k` must be a positive whole number, got `64.5`"),
    (HEADER + "256,64,-64,1e-3\n", "2:8: error: `n` must be a positive whole number, got `-64`"),
    (HEADER + "0,64,64,1e-3\n", "2:1: error: `m` must be positive, got `0`"),
    (
        HEADER + "256,,64,1e-3\n",
        "2:5: error: `k` must be a positive whole number, the field is empty",
    ),
    (HEADER + "256,64,64,fast\n", "2:11: error: `seconds` must be a number, got `fast`"),
    (HEADER + "256,64,64, 0\n", "2:12: error: `seconds` must be positive, got `0`"),
    (HEADER + "256,64,64,-1e-3\n", "2:11: error: `seconds` must be positive, got `-1e-3`"),
    (HEADER + "256,64,64,nan\n", "2:11: error: `seconds` must be finite, got `nan`"),
    (HEADER + "256,64,64,inf\n", "2:11: error: `seconds` must be finite, got `inf`"),
    (HEADER + "256,64,64,1e308\n", "2:11: error: `seconds` must be at most 1e+09, got `1e308`"),
    (HEADER + "256,64,64,1e400\n", "2:11: error: `seconds` must be at most 1e+09, got `1e400`"),
    (HEADER + "256,64,64,١٫٥\n", "2:11: error: `seconds` must be a number, got `١٫٥`"),
    (HEADER + "256,64,64,1_000\n", "2:11: error: `seconds` must be a number, got `1_000`"),
    (HEADER + "1" * 5001 + ",64,64,1\n", "2:1: error: `m` is too large: 5,001 digits"),
    (
        HEADER + "256,64,64,1" + "0" * 5000 + "\n",
        "2:11: error: `seconds` must be at most 1e+09,"
        " got `1000000000000000000000000000000000000...`",
    ),
    (HEADER + "256,64,64\n", "2:10: error: this row has 3 fields but the header has 4"),
    (HEADER + "256,64,64,1e-3,x\n", "2:16: error: this row has 5 fields but the header has 4"),
    (
        HEADER + "64,64,64,1e-3\n64,64,64,2e-3\n",
        "3:10: error: m=64, k=64, n=64 is measured twice with different times (1e-3 and 2e-3)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CSV_ERRORS)
def test_csv_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert _error(tmp_path, text) == [expected]


def test_every_row_error_is_reported_at_once(tmp_path: Path) -> None:
    text = HEADER + "256,64,64,1e-3\nx,64,64,1e-3\n256,64,64\n512,64,64,0\n"
    assert _error(tmp_path, text) == [
        "3:1: error: `m` must be a positive whole number, got `x`",
        "4:10: error: this row has 3 fields but the header has 4",
        "5:11: error: `seconds` must be positive, got `0`",
    ]


def test_missing_grid_point(tmp_path: Path) -> None:
    text = HEADER + "256,256,256,1e-3\n256,256,1024,2e-3\n512,256,256,3e-3\n"
    path = _write(tmp_path, text)
    with pytest.raises(DiagnosticError) as caught:
        load_cost_table(path)
    rendered = caught.value.render().splitlines()
    assert rendered[0] == (
        f"{path}:4:1: error: the table is not a full grid: it has no row for m=512, k=256, n=1024"
    )
    assert f"{path}:3:9: note: n = 1024 first appears here" in rendered


def test_not_utf8(tmp_path: Path) -> None:
    assert _error(tmp_path, HEADER.encode() + b"256,64,\xff4,1e-3\n") == [
        "2:8: error: the table is not UTF-8 text (byte 0xff at offset 21)"
    ]


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticError) as caught:
        load_cost_table(tmp_path / "nope.csv")
    assert caught.value.render().startswith(f"{tmp_path / 'nope.csv'}: error: no such cost table")
    with pytest.raises(DiagnosticError) as caught:
        load_cost_table(tmp_path)
    assert "is a directory" in caught.value.render()


def test_bad_table_exits_2_from_analyze(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "256,64,64,0\n")
    seed = REPO / "examples" / "seed" / "baseline_tp8_pp2.dag"
    result = runner.invoke(app, ["analyze", str(seed), "--cost-table", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        f"{path}:2:11: error: `seconds` must be positive, got `0`"
    )


# --- extrapolation: products outside the table, reported with their share of the path ------

SEED = REPO / "examples" / "seed" / "baseline_tp8_pp2.dag"
T = 1024 * 2048
# The seed baseline's 6 distinct products (tp = 8) and how often each is on the critical
# path (4 layers; q, k and v are one term): docs/seed.md.
BASELINE_PRODUCTS = {
    (T, 4096, 512): 12,  # q, k, v
    (1024 * 4 * 2048, 128, 2048): 4,  # attn_scores
    (1024 * 4 * 2048, 2048, 128): 4,  # attn_out
    (T, 512, 4096): 4,  # o_proj
    (T, 4096, 2048): 4,  # mlp_up
    (T, 2048, 4096): 4,  # mlp_down
}


def _roofline(m: int, k: int, n: int) -> float:
    """Get_Time of the h100 bf16 roofline, from its documented formula."""
    return max(2 * m * k * n / (989e12 * 0.70), (m * k + k * n + m * n) * 2 / (3.35e12 * 0.85))


def _analyze_json(table: Path, *extra: str) -> tuple[dict[str, Any], str]:
    result = runner.invoke(
        app, ["analyze", str(SEED), "--cost-table", str(table), "--format", "json", *extra]
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_a_tiny_table_warns_with_its_range_and_share(tmp_path: Path) -> None:
    # 4 entries far below every product of the seed: each product takes the roofline.
    tiny = {(m, 4096, n): 1e-9 for m in (256, 512) for n in (512, 1024)}
    path = _write(tmp_path, _csv(tiny))
    report, stderr = _analyze_json(path, "--matmul-only")
    expected = sum(count * _roofline(*p) for p, count in BASELINE_PRODUCTS.items())
    assert report["critical_path"]["time_s"] == pytest.approx(expected, rel=1e-12)
    message = (
        f"6 of 6 distinct Get_Time terms lie outside the measured range of {path}"
        " (m 256..512, k 4096, n 512..1024) and were priced by the roofline (h100, bf16);"
        " they are 100.0% of the critical path's time"
    )
    assert f"{SEED}: warning: {message}" in stderr.splitlines()
    assert report["warnings"] == [message]
    assert report["cost_extrapolation"] == {
        "table": str(path),
        "range": {"m": [256, 512], "k": [4096, 4096], "n": [512, 1024]},
        "fallback": "roofline (h100, bf16)",
        "terms": 6,
        "priced_terms": 6,
        "raised_to_edge": 0,
        "lowered_to_edge": 0,
        "path_time_s": pytest.approx(expected, rel=1e-12),
        "path_share": pytest.approx(1.0),
    }
    text = runner.invoke(app, ["analyze", str(SEED), "--cost-table", str(path), "--matmul-only"])
    assert "warning: 6 of 6 distinct Get_Time terms" in text.stdout
    assert all(len(line) <= 80 for line in text.stdout.splitlines())


def test_edge_values_are_copied_to_larger_products(tmp_path: Path) -> None:
    # A slow 8-entry table below every product: each product is at least the table's
    # largest corner, 1 s, far above the roofline (at most 51 ms for these products).
    slow = {(m, k, n): 1.0 for m in (64, 128) for k in (64, 128) for n in (64, 128)}
    assert max(_roofline(*p) for p in BASELINE_PRODUCTS) < 0.06
    path = _write(tmp_path, _csv(slow))
    report, stderr = _analyze_json(path, "--matmul-only")
    assert report["critical_path"]["time_s"] == pytest.approx(32.0, rel=1e-12)  # 32 products
    reach = report["cost_extrapolation"]
    assert (reach["terms"], reach["raised_to_edge"], reach["lowered_to_edge"]) == (6, 6, 0)
    assert "6 raised to the table's value at its nearest edge; they are 100.0%" in stderr


def test_share_of_the_path_outside_the_table_by_hand(tmp_path: Path) -> None:
    # One measured point, q/k/v's product, at 0.5 s. mlp_up lies above it on every axis, so
    # it costs at least 0.5 s (its roofline is 51 ms); the other four products are below it
    # on one axis and above it on another, and keep the roofline.
    qkv, up = (T, 4096, 512), (T, 4096, 2048)
    path = _write(tmp_path, _csv({qkv: 0.5}))
    report, stderr = _analyze_json(path, "--matmul-only")
    others = {p: c for p, c in BASELINE_PRODUCTS.items() if p not in (qkv, up)}
    outside = 4 * 0.5 + sum(count * _roofline(*p) for p, count in others.items())
    total = 12 * 0.5 + outside
    assert report["critical_path"]["time_s"] == pytest.approx(total, rel=1e-12)
    reach = report["cost_extrapolation"]
    assert (reach["terms"], reach["priced_terms"], reach["raised_to_edge"]) == (5, 6, 1)
    assert reach["path_time_s"] == pytest.approx(outside, rel=1e-12)
    assert reach["path_share"] == pytest.approx(outside / total, rel=1e-12)
    assert f"they are {outside / total:.1%} of the critical path's time" in stderr
    assert f"(m {T}, k 4096, n 512)" in stderr  # a single-value axis shows one number


def test_no_warning_when_every_product_is_inside(tmp_path: Path) -> None:
    every = {p: 1e-3 for p in BASELINE_PRODUCTS}
    ms, ks, ns = ({p[a] for p in every} for a in range(3))
    grid = {(m, k, n): 1e-3 for m in ms for k in ks for n in ns}
    report, stderr = _analyze_json(_write(tmp_path, _csv(grid)), "--matmul-only")
    assert report["cost_extrapolation"] is None
    assert report["warnings"] == []
    assert "outside" not in stderr


def test_extrapolation_fails_werror(tmp_path: Path) -> None:
    path = _write(tmp_path, _csv({(T, 4096, 512): 0.5}))
    result = runner.invoke(
        app, ["analyze", str(SEED), "--cost-table", str(path), "--werror", "--matmul-only"]
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "5 of 6 distinct Get_Time terms lie outside" in result.stderr
    assert "dagc: error: warnings are errors (--werror)" in result.stderr


# --- dagc profile ---------------------------------------------------------------------------


def test_profile_numpy_round_trip(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    rows = profile_matmul(
        ([128, 64], [64, 128], [64, 128]),
        backend="numpy",
        repeats=1,
        progress=lambda done, total, row: seen.append((done, total)),
    )
    assert [row[:3] for row in rows] == list(product([64, 128], [64, 128], [64, 128]))
    assert all(seconds > 0 for *_, seconds in rows)
    assert seen == [(i, 8) for i in range(1, 9)]
    path = tmp_path / "measured.csv"
    write_cost_table(rows, path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# measured by dagc profile on numpy ")
    table = load_cost_table(path)
    assert (table.ms, table.ks, table.ns) == ((64, 128), (64, 128), (64, 128))


def test_default_grids() -> None:
    cpu = default_grid(Backend("numpy", "cpu", "float32", 4))
    assert grid_flops(cpu) <= CPU_PASS_FLOPS
    assert cpu[0][0] == cpu[1][0] == cpu[2][0] == 256 and max(cpu[0]) == 8192
    gpu = default_grid(Backend("torch", "gpu", "bf16", 2))
    assert (max(gpu[0]), max(gpu[1]), max(gpu[2])) == (2**22, 32768, 32768)
    for axis in (*cpu, *gpu):
        assert all(b == 2 * a for a, b in pairwise(axis))


def test_cli_profile(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    args = ["profile", "-o", str(path), "--m", "64,128", "--k", "64", "--n", "64"]
    result = runner.invoke(app, [*args, "--backend", "numpy", "--repeats", "1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("dagc: profiling 2 shapes (m 64..128 (2), k 64 (1), n 64 (1))")
    assert "with numpy float32 on " in lines[0]
    assert lines[-1].startswith("dagc: measured 2 shapes in ")
    assert lines[-1].endswith(f"; wrote {path}")
    assert load_cost_table(path).size == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--m", "64,x"], "dagc: error: --m expects positive whole numbers"),
        (["--n", "0"], "dagc: error: --n expects positive whole numbers"),
        (["--backend", "torch"], "dagc: error: the torch backend needs PyTorch with a CUDA GPU"),
    ],
)
def test_cli_profile_bad_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setattr(dagc.profile, "_torch", lambda: None)  # as on a machine without a GPU
    result = runner.invoke(app, ["profile", "-o", str(tmp_path / "x.csv"), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert not (tmp_path / "x.csv").exists()


def test_cli_profile_unwritable_output(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "x.csv"
    result = runner.invoke(app, ["profile", "-o", str(path), "--m", "64", "--k", "64"])
    assert result.exit_code == 2
    assert result.stderr == f"dagc: error: cannot write {path}: its folder does not exist\n"


class _FakeEvent:
    """torch.cuda.Event on the CPU clock."""

    def __init__(self, enable_timing: bool) -> None:
        self.at = 0.0

    def record(self) -> None:
        self.at = time.perf_counter()

    def elapsed_time(self, end: _FakeEvent) -> float:
        return (end.at - self.at) * 1000.0


def _fake_torch(free_bytes: int) -> SimpleNamespace:
    """Just enough of torch for the torch backend's code to run without a GPU."""

    def tensor(*shape: int, dtype: object, device: str) -> np.ndarray:
        return np.ones(shape, dtype=np.float32)

    cuda = SimpleNamespace(
        is_available=lambda: True,
        get_device_name=lambda index: "Fake GPU",
        mem_get_info=lambda: (free_bytes, 2 * free_bytes),
        synchronize=lambda: None,
        Event=_FakeEvent,
    )
    return SimpleNamespace(
        bfloat16="bf16",
        cuda=cuda,
        randn=tensor,
        empty=tensor,
        mm=lambda a, b, out: np.matmul(a, b, out=out),
    )


def test_torch_backend_code_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 100 kB free: 40 kB may be used, so A [512, 64] and C [512, 64] run as row blocks.
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(100_000))
    backend = dagc.profile.resolve_backend("auto")
    assert backend == Backend("torch", "Fake GPU", "bf16", 2)
    blocks = dagc.profile._TorchTimer()._row_blocks(512, 64, 64)
    assert len(blocks) > 1 and sum(blocks) == 512
    rows = profile_matmul(([256, 512], [64], [64]), backend=backend, repeats=2)
    path = tmp_path / "gpu.csv"
    write_cost_table(rows, path)
    assert path.read_text().splitlines()[:2] == [
        "# measured by dagc profile on torch Fake GPU",
        "# C = A @ B in bf16; seconds per product, median of 2 runs",
    ]
    assert load_cost_table(path).ms == (256, 512)
