"""Golden files: `dagc lower FILE --emit ir` for every .dag file under examples/.

Regenerate with `DAGC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden_ir.py`, then read
every changed line before committing it: a golden file is only as right as its review.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dagc.cli import app
from helpers import EXAMPLES, REPO, check_golden, example_files

GOLDEN = Path(__file__).resolve().parent / "golden" / "ir"

runner = CliRunner()


def golden_path(example: Path) -> Path:
    """examples/seed/x.dag -> tests/golden/ir/seed/x.ir"""
    return GOLDEN / example.relative_to(EXAMPLES).with_suffix(".ir")


def lower_ir(example: Path) -> str:
    result = runner.invoke(app, ["lower", str(example), "--emit", "ir"])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_there_are_examples() -> None:
    assert len(example_files()) >= 2


@pytest.mark.parametrize(
    "example", example_files(), ids=lambda path: str(path.relative_to(EXAMPLES))
)
def test_golden_ir(example: Path) -> None:
    relative = example.relative_to(REPO)
    review = f"the output of `dagc lower {relative} --emit ir`, line by line"
    check_golden(golden_path(example), lower_ir(example), review)


def test_no_stale_golden_files() -> None:
    expected = {golden_path(example) for example in example_files()}
    stale = sorted(str(p.relative_to(REPO)) for p in GOLDEN.rglob("*.ir") if p not in expected)
    assert not stale, f"golden files without an example (delete them): {stale}"


_PRINT_ALL = (
    "import sys, dagc\nfor path in sys.argv[1:]:\n    print(dagc.compile_file(path).program)"
)


def test_printing_is_deterministic() -> None:
    """Two processes with different hash seeds print byte-identical IR (no set order leaks)."""
    files = [str(path) for path in example_files()]
    outputs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _PRINT_ALL, *files],
            capture_output=True,
            cwd=REPO,
            env=env,
            timeout=120,
            check=True,
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    in_process = "".join(lower_ir(Path(f)) for f in files).encode()
    assert outputs[0] == in_process
