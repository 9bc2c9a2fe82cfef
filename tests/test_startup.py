"""What keeps `dagc` quick to start (docs/performance.md, "Start-up").

The parser runs from dagc/frontend/dag_lalr.py, generated from grammar/dag.lark by
tools/generate_parser.py: these tests check that it is up to date with the grammar. A small
analysis imports neither lark, nor the pictures' and plots' libraries, nor the commands it
does not run. Timings themselves are measured by benchmarks/startup.py, never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dagc.frontend import dag_lalr, parser
from helpers import EXAMPLES, REPO

SEEDS = sorted((EXAMPLES / "seed").glob("*.dag"))


@cache
def generator() -> ModuleType:
    path = REPO / "tools" / "generate_parser.py"
    spec = importlib.util.spec_from_file_location("generate_parser", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the generated parser is the grammar's --------------------------------------------------


def _rule(rule: Any) -> tuple[Any, ...]:
    options = rule.options
    return (
        rule.origin.name,
        tuple(symbol.name for symbol in rule.expansion),
        rule.alias,
        options.keep_all_tokens,
        options.expand1,
        options.priority,
        tuple(options.empty_indices),
    )


def canonical(lark: Any) -> dict[str, Any]:
    """A parser's grammar and LALR tables, independent of how its states are numbered.

    lark numbers states in an order that varies from run to run (it iterates over sets of
    objects), so two builds of one grammar differ as text; walking the tables from the start
    state, tokens in sorted order, numbers the states the same way every time.
    """
    table = lark.parser.parser._parse_table
    (start,) = table.start_states.values()
    number = {start: 0}
    queue = [start]
    rows = []
    while queue:
        state = queue.pop(0)
        row = []
        for token, (_, argument) in sorted(table.states[state].items()):
            if isinstance(argument, int):  # shift to a state
                if argument not in number:
                    number[argument] = len(number)
                    queue.append(argument)
                row.append((token, "shift", number[argument]))
            else:
                row.append((token, "reduce", _rule(argument)))
        rows.append(row)
    assert len(number) == len(table.states)
    terminals = sorted(
        (t.name, t.pattern.type, t.pattern.value, tuple(t.pattern.flags), t.priority)
        for t in lark.terminals
    )
    options = lark.options
    return {
        "states": rows,
        "end": {name: number[state] for name, state in table.end_states.items()},
        "rules": sorted(_rule(rule) for rule in lark.rules),
        "terminals": terminals,
        "ignore": sorted(lark.lexer_conf.ignore),
        "options": (
            options.parser,
            options.lexer,
            options.propagate_positions,
            options.maybe_placeholders,
            options.keep_all_tokens,
            tuple(options.start),
        ),
    }


def test_the_shipped_parser_is_up_to_date_with_the_grammar() -> None:
    """If this fails after a change to grammar/dag.lark: `make parser`, and commit."""
    text = parser.grammar_text()
    built = generator().build(text)
    assert canonical(dag_lalr.Lark_StandAlone()) == canonical(built), (
        "dagc/frontend/dag_lalr.py is out of date with grammar/dag.lark: run `make parser`"
    )
    header = (REPO / "dagc" / "frontend" / "dag_lalr.py").read_text(encoding="utf-8")[:1000]
    assert f"# grammar sha256: {generator().grammar_digest(text)}\n" in header


def test_the_canonical_tables_see_a_changed_grammar() -> None:
    text = parser.grammar_text()
    changed = text.replace('"-" INT             -> negative_value', '"+" INT -> negative_value')
    assert changed != text
    assert canonical(generator().build(changed)) != canonical(generator().build(text))


def _tree(node: Any) -> Any:
    """A parse tree as plain data: rule names, token types, values and positions."""
    if isinstance(node, str) or node is None:  # a token (a str), or a missing optional
        if node is None:
            return None
        return (node.type, str(node), node.line, node.column, node.end_line, node.end_column)
    meta = node.meta
    span = (meta.line, meta.column, meta.end_line, meta.end_column) if not meta.empty else ()
    return (str(node.data), span, [_tree(child) for child in node.children])


def test_the_shipped_parser_parses_every_example_as_lark_does() -> None:
    built = generator().build(parser.grammar_text())
    shipped = dag_lalr.Lark_StandAlone()
    files = sorted(EXAMPLES.rglob("*.dag"))
    assert len(files) > 10
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert _tree(shipped.parse(text)) == _tree(built.parse(text)), path


# -- what a small analysis imports ------------------------------------------------------------

_IMPORTED = """
import json, sys
from dagc.cli import run
sys.argv = ["dagc", *sys.argv[1:]]
try:
    run()
except SystemExit:
    pass
sys.__stderr__.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def _modules_of(*arguments: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *arguments],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    line = result.stderr.rsplit("\nMODULES ", 1)[1]
    return set(json.loads(line))


def _loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.stem)
def test_analyze_of_a_seed_file_imports_only_what_it_uses(seed: Path) -> None:
    modules = _modules_of("analyze", str(seed))
    assert "dagc.analysis.analyze" in modules  # it did analyse
    for package in (
        "lark",  # the parser is the generated dagc.frontend.dag_lalr
        "networkx",
        "graphviz",
        "matplotlib",
        "rich",
        "numpy.ma",  # np.unique's first call imports it: dagc.ir.toposort sorts instead
        "dagc.ir.verify",  # only under --verify
        "dagc.backends.render",
        "dagc.backends.plot",
        "dagc.cli.lower",  # the commands not run
        "dagc.cli.formula",
        "dagc.cli.profile",
        "dagc.cli.new",
        "dagc.cli.check",
    ):
        assert not _loaded(modules, package), package


def test_help_still_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dagc", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "100"},
    )
    from dagc.cli.program import _COMMANDS

    for name, _, _, options in _COMMANDS:
        if not options.get("hidden"):
            assert f" {name} " in result.stdout, name


def test_the_parser_writes_no_cache_anywhere(tmp_path: Path) -> None:
    """No cache means no pickle to load: nothing another local user could plant."""
    shared, cache_home = tmp_path / "tmp", tmp_path / "cache"
    shared.mkdir()
    environment = {**os.environ, "TMPDIR": str(shared), "XDG_CACHE_HOME": str(cache_home)}
    result = subprocess.run(
        [sys.executable, "-m", "dagc", "check", str(SEEDS[0])],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert list(shared.iterdir()) == []
    assert not cache_home.exists()


def test_the_blas_threads_are_left_alone_for_profile_only() -> None:
    from dagc.cli.program import _quiet_blas

    environment: dict[str, str] = {}
    _quiet_blas(["analyze", "x.dag"], environment)
    assert environment == {"OPENBLAS_NUM_THREADS": "1"}
    mine = {"OPENBLAS_NUM_THREADS": "8"}
    _quiet_blas(["analyze", "x.dag"], mine)
    assert mine == {"OPENBLAS_NUM_THREADS": "8"}  # the user's choice stands
    profiled: dict[str, str] = {}
    _quiet_blas(["profile", "--backend", "numpy"], profiled)
    assert profiled == {}  # profile times matrix products: all of BLAS's threads
