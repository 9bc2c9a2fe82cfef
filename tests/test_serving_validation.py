"""The serving validation against published measurements (benchmarks/serving_validation.py).

Every row of examples/validation/serving/measurements.csv names its source, its file is
exactly what the generator writes (`dagc new --hf` and the row's `devices` lines), compiles
into the row's configuration, and the table in docs/validation.md ("Serving") shows the
figures `dagc analyze --format json` gives today. No threshold on the error: a miss is a
finding, explained in docs/validation.md.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

import dagc
from helpers import EXAMPLES, REPO, example_files

FOLDER = EXAMPLES / "validation" / "serving"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "serving_validation", REPO / "benchmarks" / "serving_validation.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serving_validation"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


V = _generator()
ROWS = V.read_rows()
FILES = V.files(ROWS)


def test_every_row_has_a_source_and_a_known_metric() -> None:
    assert len(ROWS) >= 3
    for row in ROWS:
        assert row.source.startswith("https://"), row.id
        assert row.metric in V.METRICS
        assert row.measured > 0
    assert len({r.id for r in ROWS}) == len(ROWS)


def test_the_files_are_what_the_generator_writes() -> None:
    written = sorted(p.name for p in FOLDER.glob("*.dag"))
    assert written == sorted(FILES)
    for name, rows in FILES.items():
        assert (FOLDER / name).read_text() == V.render(rows), f"{name}: rerun the generator"


def test_the_validation_files_stay_out_of_the_every_example_tests() -> None:
    assert not any(p.is_relative_to(FOLDER) for p in example_files())


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_file_compiles_to_its_rows_configuration(name: str) -> None:
    row = FILES[name][0]
    program = dagc.compile_file(str(FOLDER / name)).program
    workload = program.workload
    assert workload.mode.value == row.mode
    assert workload.batch == row.batch
    assert workload.microbatches == row.microbatches
    assert workload.dtype.value == row.dtype
    assert program.hardware.gpu == row.gpu
    assert len({g for group in program.groups for g in group.gpus}) == row.gpus
    if row.mode == "decode":
        assert workload.context == row.context
    else:
        assert (workload.seq, workload.output) == (row.input, row.output)
    if "nvlink_bandwidth" in row.devices:
        assert program.hardware.overrides["nvlink_bandwidth"] == 200e9  # H800


def _table_cells() -> dict[str, list[str]]:
    doc = V.DOC.read_text()
    start, end = doc.index(V.TABLE_BEGIN), doc.index(V.TABLE_END)
    cells: dict[str, list[str]] = {}
    for line in doc[start:end].splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if parts and parts[0] in {r.id for r in ROWS}:
            cells[parts[0]] = parts
    return cells


def test_the_documented_table_is_what_dagc_analyze_gives() -> None:
    cells = _table_cells()
    assert sorted(cells) == sorted(r.id for r in ROWS)
    reports: dict[str, dict[str, Any]] = {name: V.analyse(FOLDER / name) for name in FILES}
    for row in ROWS:
        value = V.predicted(row, reports[row.file])
        measured, predicted, error = cells[row.id][6:9]
        assert measured == V.shown(row, row.measured), row.id
        assert predicted == V.shown(row, value), row.id
        assert error == f"{100 * V.error(row, value):+.1f}%", row.id
    assert V.table(ROWS, reports) in V.DOC.read_text()
