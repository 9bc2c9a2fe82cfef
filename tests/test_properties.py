"""Property tests: whatever the text, dagc answers with a program or with diagnostics.

(a) texts generated from the grammar, (b) random mutations of the examples, (c) the split
rule. The only exception compile_text may raise is DiagnosticError, and every diagnostic
points at a real place in the file.
"""

from __future__ import annotations

import itertools
import re
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

import dagc
from dagc.frontend.parser import grammar_text
from dagc.split import split_evenly
from helpers import example_files

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _spaced(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # from_lark joins tokens without spaces; names and numbers need them to stay apart.
    return strategy.map(lambda text: f" {text} ")


# Names worth generating: keys, block kinds, choice values, group names and keywords.
WORDS = (
    "layers", "hidden", "heads", "head_dim", "kv_heads", "ffn", "activation", "experts",
    "top_k", "expert_ffn", "capacity_factor", "vocab", "batch", "seq", "dtype", "microbatches",
    "gpu", "node_size", "pp", "tp", "ep", "fused_qkv", "embed", "attention", "mlp", "moe",
    "lm_head", "gelu", "swiglu", "bf16", "fp16", "fp32", "fp8", "h100", "h200", "a100", "true",
    "false", "g0", "g1", "g2", "s0", "s1", "tpu", "model", "workload", "devices",
    "group", "on", "x",
)  # fmt: skip
NAMES = _spaced(
    st.one_of(st.sampled_from(WORDS), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True))
)
INTS = _spaced(
    st.one_of(
        st.integers(0, 40).map(str),
        st.sampled_from(["64", "128", "1024", "4_096", "16384", "65_536"]),
    )
)
FLOATS = _spaced(st.sampled_from(["0.0", "1.5", "1.25", "2e0", "1e999", "0.5e-3"]))
EXPLICIT = {
    "NAME": NAMES,
    "INT": INTS,
    "FLOAT": FLOATS,
    "_NL": st.sampled_from(["\n", "\r\n", "  # a comment\n"]),
    "COMMENT": st.sampled_from([" ", "\t"]),  # a comment must end its line: see _NL
}


@cache
def _grammar() -> Lark:
    # dagc.frontend.parser._lark() is loaded from generated tables (dagc/frontend/dag_lalr.py)
    # and has no `.grammar` for from_lark to read, so build the same grammar with lark.
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _statement(rule: str) -> st.SearchStrategy[str]:
    return from_lark(_grammar(), start=rule, explicit=EXPLICIT)


def dag_texts() -> st.SearchStrategy[str]:
    """Whole files from the grammar, and files of one statement of each kind (which get
    further into the semantic checks than files that lack a section)."""
    whole = from_lark(_grammar(), explicit=EXPLICIT)
    sections = st.tuples(
        _statement("model"),
        _statement("workload"),
        _statement("devices"),
        st.lists(_statement("layers"), min_size=1, max_size=3),
    ).map(lambda parts: "\n".join([*parts[:3], *parts[3]]) + "\n")
    return st.one_of(whole, sections)


def assert_only_diagnostics(text: str) -> None:
    """compile_text gives a result or DiagnosticError, whose diagnostics point into `text`."""
    try:
        result = dagc.compile_text(text, path="t.dag")
    except dagc.DiagnosticError as error:
        diagnostics = error.diagnostics
        assert diagnostics, "a DiagnosticError without diagnostics"
        assert any(d.severity.value == "error" for d in diagnostics)
    else:
        diagnostics = result.warnings
    lines = text.split("\n")  # the lexer ends lines at `\n` only
    for diagnostic in diagnostics:
        rendered = diagnostic.render()
        assert diagnostic.span is not None, rendered
        line, column = diagnostic.span.line, diagnostic.span.column
        assert rendered.startswith(f"t.dag:{line}:{column}: "), rendered
        assert 1 <= line <= len(lines), rendered
        assert 1 <= column <= len(lines[line - 1]) + 1, rendered
        assert "^" in rendered.splitlines()[2], rendered


@PROPERTY
@given(dag_texts())
def test_grammar_generated_texts(text: str) -> None:
    assert_only_diagnostics(text)


# -- mutations of the examples ---------------------------------------------------------

SEEDS = tuple(path.read_text(encoding="utf-8") for path in example_files())
TOKENS = (
    "{", "}", "=", "..", ",", ";", "\n", "-", "[", "]", "#", "@", "$", "\t", "\f", "\r", "\x0b",
    "\u2028", "\ufeff", "é", " ", "0", "7", "1.5", "1e999", "layers", "model", "workload",
    "devices", "group", "on", "pp=2", "tp=0", "ep=3", "gpu[0..3]", "embed", "lm_head",
    "99999", "fused_qkv", "x = 1",
)  # fmt: skip
NUMBERS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "12", "16", "31", "33", "64", "100", "4097")


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from([_char_edit, _line_edit, _insert_token, _number_edit]))
        text = edit(draw, text)
    return text


def _char_edit(draw: st.DrawFn, text: str) -> str:
    if not text:
        return text
    i = draw(st.integers(0, len(text) - 1))
    how = draw(st.sampled_from(["delete", "duplicate", "swap"]))
    if how == "delete":
        return text[:i] + text[i + 1 :]
    if how == "duplicate":
        return text[: i + 1] + text[i:]
    j = min(i + 1, len(text) - 1)
    return text[:i] + text[j] + text[i + 1 : j] + text[i] + text[j + 1 :] if j > i else text


def _line_edit(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["delete", "duplicate", "swap"]))
    if how == "delete":
        del lines[i]
    elif how == "duplicate":
        lines.insert(i, lines[i])
    else:
        j = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _insert_token(draw: st.DrawFn, text: str) -> str:
    i = draw(st.integers(0, len(text)))
    return text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]


def _number_edit(draw: st.DrawFn, text: str) -> str:
    """Change one number: gets past the parser into the semantic checks."""
    numbers = list(re.finditer(r"[0-9][0-9_]*", text))
    if not numbers:
        return text
    match = draw(st.sampled_from(numbers))
    new = draw(st.sampled_from(NUMBERS))
    return text[: match.start()] + new + text[match.end() :]


@PROPERTY
@given(mutated_examples())
def test_mutated_examples(text: str) -> None:
    assert_only_diagnostics(text)


def test_examples_compile() -> None:
    for text in SEEDS:
        dagc.compile_text(text, path="t.dag")


# -- the split rule --------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 300))
def test_split_evenly(items: int, parts: int) -> None:
    sizes = split_evenly(items, parts)
    assert len(sizes) == parts
    assert sum(sizes) == items
    assert max(sizes) - min(sizes) <= 1
    assert all(a >= b for a, b in itertools.pairwise(sizes))
    # rank i gets floor(n/p) + (1 if i < n mod p else 0)
    assert sizes == [items // parts + (1 if i < items % parts else 0) for i in range(parts)]


# -- the whole pipeline -------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_examples())
def test_mutated_examples_end_to_end(text: str) -> None:
    """Whatever compiles also expands, analyses and reports without a crash: DiagnosticError
    is the only exception, and every number in the JSON report is finite."""
    import io
    import json
    import math

    from dagc.api import analyze_compiled
    from dagc.backends.report import write_json

    try:
        compiled = dagc.compile_text(text, path="t.dag")
        result = analyze_compiled(compiled, max_ops=20_000)
    except dagc.DiagnosticError:
        return
    out = io.StringIO()
    write_json(result.analysis, out)

    def finite(value: float) -> float:
        assert math.isfinite(value), value
        return value

    json.loads(out.getvalue(), parse_constant=lambda name: finite(float(name)))
