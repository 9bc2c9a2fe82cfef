"""Shared test helpers: a small valid .dag file to vary, diagnostic assertions, golden files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dagc
from dagc.diagnostics import Diagnostic, Severity

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
UPDATE_GOLDEN = os.environ.get("DAGC_UPDATE_GOLDEN") == "1"


def check_golden(golden: Path, actual: str, review: str) -> None:
    """Compare `actual` with a golden file; with DAGC_UPDATE_GOLDEN=1, write it instead.

    `review` says what to read before accepting a new or changed file, e.g. "the output of
    `dagc lower FILE --emit ir`, line by line".
    """
    name = golden.relative_to(REPO)
    how = f"DAGC_UPDATE_GOLDEN=1 .venv/bin/pytest tests -k {golden.stem.split('.')[0]}"
    if UPDATE_GOLDEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
        return
    if not golden.is_file():
        pytest.fail(f"{name} is missing: check {review}, then create it with `{how}`")
    assert actual == golden.read_text(encoding="utf-8"), (
        f"{name} differs: if the change is intended, review {review} and run `{how}`"
    )


# The base configuration, one entry per line; the comments are the 1-based line numbers
# that the tests' expected positions refer to.
BASE_LINES: tuple[str, ...] = (
    "model m {",  # 1
    "  layers = 4",  # 2
    "  hidden = 1024",  # 3
    "  heads = 16",  # 4
    "  ffn = 4096",  # 5
    "}",  # 6
    "workload {",  # 7
    "  batch = 8",  # 8
    "  seq = 128",  # 9
    "}",  # 10
    "devices {",  # 11
    "  group g0 = gpu[0..3]",  # 12
    "  group g1 = gpu[4..7]",  # 13
    "}",  # 14
    "layers 0..1 on g0 {",  # 15
    "  attention tp=4",  # 16
    "  mlp tp=4",  # 17
    "}",  # 18
    "layers 2..3 on g1 {",  # 19
    "  attention tp=4",  # 20
    "  mlp tp=4",  # 21
    "}",  # 22
)


def config(lines: dict[int, str] | None = None, *, append: str = "") -> str:
    """The base file with line N replaced by `lines[N]` and `append` added at the end.

    A replacement may hold several lines (later line numbers then shift) or be "" (the line
    is blanked, so the numbering stays). `append` starts on line 23.
    """
    out = list(BASE_LINES)
    for number, text in (lines or {}).items():
        assert 1 <= number <= len(out), f"the base config has no line {number}"
        out[number - 1] = text
    return "\n".join(out) + "\n" + append


def example_files() -> list[Path]:
    """Every .dag file under examples/, in a stable order."""
    return sorted(EXAMPLES.rglob("*.dag"))


def diagnostics_of(text: str, *, werror: bool = False) -> list[Diagnostic]:
    """The diagnostics compiling `text` (as t.dag) raises; fails if it compiles."""
    with pytest.raises(dagc.DiagnosticError) as info:
        dagc.compile_text(text, path="t.dag", werror=werror)
    return list(info.value.diagnostics)


def only_diagnostic(text: str) -> Diagnostic:
    """The one diagnostic compiling `text` raises."""
    found = diagnostics_of(text)
    assert len(found) == 1, "\n\n".join(d.render() for d in found)
    return found[0]


def caret_column(rendered_excerpt_line: str) -> int:
    """The 1-based column of the first `^` in an excerpt's caret line (`    | ^^^`)."""
    gutter, sep, carets = rendered_excerpt_line.partition(" | ")
    assert sep and not gutter.strip(), rendered_excerpt_line
    assert set(carets.strip()) == {"^"}, rendered_excerpt_line
    return len(carets) - len(carets.lstrip(" ")) + 1


def check(
    diagnostic: Diagnostic,
    line: int,
    column: int,
    message: str,
    *,
    severity: Severity = Severity.ERROR,
    help: str | None = None,
    width: int | None = None,
    path: str = "t.dag",
) -> None:
    """Pin a diagnostic's place, severity, message (and help, caret width) and its text."""
    assert diagnostic.span is not None, diagnostic.render()
    assert (diagnostic.span.line, diagnostic.span.column) == (line, column), diagnostic.render()
    assert diagnostic.severity is severity
    assert diagnostic.message == message
    if help is not None:
        assert diagnostic.help == help
    rendered = diagnostic.render().splitlines()
    assert rendered[0] == f"{path}:{line}:{column}: {severity.value}: {message}"
    assert rendered[1].lstrip().startswith(f"{line} | ")
    assert caret_column(rendered[2]) == column
    if width is not None:
        assert rendered[2].count("^") == width
