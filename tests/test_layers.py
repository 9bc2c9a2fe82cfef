"""The layers and what each may import (docs/internals.md, "Layers and imports").

Back ends take a compiled artefact (a device DAG, a Schedule) and never run the pipeline;
analyses never run a pass. The rule is read from the source (every import statement of every
module, at any depth), and checked once more at run time in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dagc
from dagc.ir.terms import OpKind

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dagc"
EXAMPLES = ROOT / "examples"
PIPELINE = ("dagc.api", "dagc.compiler", "dagc.expand", "dagc.passes")
# (file, module, function) of imports excepted from the rules below: none today. An entry
# should be a lazy import inside one function, and come with a test that it is still needed.
ALLOWED: set[tuple[str, str, str]] = set()


def imports(source: str, path: str = "<test>") -> list[tuple[str, str]]:
    """(module imported, enclosing function or "") of every import in `source`.

    `from dagc import api` counts as importing dagc.api; `importlib.import_module("x")` and
    `__import__("x")` with a constant name count as importing x, so the rule cannot be
    dodged by spelling an import as a call.
    """
    found: list[tuple[str, str]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Import):
            found.extend((alias.name, function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}: relative imports are not used in dagc"
            found.append((node.module, function))
            found.extend((f"{node.module}.{alias.name}", function) for alias in node.names)
        elif isinstance(node, ast.Call) and _imported_by_call(node):
            found.append((_imported_by_call(node), function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source, path), "")
    return found


def _imported_by_call(call: ast.Call) -> str:
    """The module `importlib.import_module("m")` or `__import__("m")` names, else ""."""
    if _called_name(call) not in ("import_module", "__import__") or not call.args:
        return ""
    first = call.args[0]
    return str(first.value) if isinstance(first, ast.Constant) else ""


def _called_name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else ""


def _is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    """`file: module (in function)` for every forbidden import of the modules of `layer`."""
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for module, function in imports(path.read_text(encoding="utf-8"), relative):
            allowed = any(
                (file, place) == (relative, function) and _is_under(module, (name,))
                for file, name, place in ALLOWED
            )
            if _is_under(module, forbidden) and not allowed:
                found.append(f"{relative}: {module}" + (f" (in {function})" if function else ""))
    return found


def test_the_import_checker_sees_every_form_of_import() -> None:
    source = """
import dagc.passes.manager
from dagc import expand
def f():
    from dagc.api import cost_model
    import importlib
    importlib.import_module("dagc.compiler")
"""
    modules = {module for module, _ in imports(source)}
    assert {"dagc.passes.manager", "dagc.expand", "dagc.api", "dagc.compiler"} <= modules
    assert ("dagc.api", "f") in imports(source)


def test_back_ends_never_import_the_pipeline() -> None:
    assert violations("backends", PIPELINE) == []


def test_analyses_never_import_a_pass_nor_the_rest_of_the_pipeline() -> None:
    assert violations("analysis", ("dagc.passes",)) == []
    assert violations("analysis", PIPELINE) == []


def test_timeline_does_not_import_render() -> None:
    source = (PACKAGE / "backends/timeline.py").read_text(encoding="utf-8")
    assert not [m for m, _ in imports(source) if _is_under(m, ("dagc.backends.render",))]


def test_importing_back_ends_and_analyses_loads_no_pipeline_module() -> None:
    modules = [
        "dagc." + p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        for layer in ("backends", "analysis")
        for p in sorted((PACKAGE / layer).glob("*.py"))
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    assert "dagc.backends.render" in loaded
    assert [m for m in loaded if _is_under(m, PIPELINE)] == []


def test_the_old_homes_of_build_schedule_and_atomic_writing_are_gone() -> None:
    """build_schedule lives in dagc.api, atomic writing in dagc.outputs; no aliases."""
    import dagc.backends.schedule

    assert not hasattr(dagc.backends.schedule, "build_schedule")
    assert not (PACKAGE / "backends" / "atomic.py").exists()


def test_cost_model_selection_lives_in_analysis_and_the_api_re_exports_it() -> None:
    import dagc.analysis.selection as selection
    import dagc.api

    for name in ("CostOptions", "cost_model", "roofline_params"):
        assert getattr(dagc.api, name) is getattr(selection, name)


# -- op kinds -------------------------------------------------------------------------------

KIND_WORDS = {kind.value for kind in OpKind}
# Where the words may stand as strings: the enums that define them.
KIND_HOMES = {"ir/terms.py", "ir/steps.py"}


def test_op_kinds_are_spelled_only_by_their_enum() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in KIND_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in KIND_WORDS:
                found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert found == []


def test_op_kinds_print_and_serialise_as_the_strings_they_replace() -> None:
    kinds = {OpKind.MATMUL: OpKind.COLLECTIVE}
    assert json.dumps(kinds, sort_keys=True) == '{"matmul": "collective"}'
    assert f"{OpKind.TRANSFER:<11}|{OpKind.ELEMENTWISE}" == "transfer   |elementwise"
    assert [str(kind) for kind in OpKind] == ["matmul", "elementwise", "collective", "transfer"]


# -- the device DAG carries its blocks -------------------------------------------------------


def test_the_device_dag_keeps_each_step_s_block() -> None:
    from dagc.expand import expand
    from dagc.ir.logical import BlockKind
    from dagc.ir.steps import TransferKind
    from dagc.passes.manager import lower_to_steps

    compiled = dagc.compile_file(EXAMPLES / "seed/baseline_tp8_pp2.dag")
    graph = expand(compiled).graph
    steps = lower_to_steps(compiled.program)
    assert graph.blocks == steps.blocks
    assert graph.steps == tuple(steps.steps())
    kinds = {block.kind for block in graph.blocks}
    assert TransferKind.TRANSFER in kinds and BlockKind.ATTENTION in kinds
    for op in range(0, graph.num_ops, 7):
        block = graph.blocks[graph.block_index(op)]
        assert graph.step_of(op) in block.steps
        assert graph.block_of(op) is block.kind
        assert int(graph.template_layer[op % graph.template_size]) == graph.step_of(op).layer


def test_pictures_are_drawn_from_the_graph_without_running_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagc.api
    import dagc.passes.manager as manager
    from dagc.analysis.selection import cost_model
    from dagc.backends.render import render
    from dagc.backends.schedule import make_schedule
    from dagc.backends.timeline import write_timeline
    from dagc.expand import expand

    compiled = dagc.compile_file(EXAMPLES / "seed/ma_separation.dag")
    graph = expand(compiled).graph
    expected = dagc.api.build_schedule(compiled)[0]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a back end ran a pass")

    monkeypatch.setattr(manager, "run_passes", refuse)
    schedule = make_schedule(graph, cost_model(compiled.program)[0], "h100")
    assert np.array_equal(schedule.costs, expected.costs)
    assert schedule.path.ops == expected.path.ops
    for view in ("device", "block", "logical"):
        render(schedule, tmp_path / f"{view}.dot", view=view)
    write_timeline(schedule, tmp_path / "trace.json")
    assert (tmp_path / "block.dot").read_text() and (tmp_path / "trace.json").read_text()
