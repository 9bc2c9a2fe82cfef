"""The library's high-level entry points: compile, expand, cost and analyze in one call.

This is the layer that may import everything: the pipeline (compiler, expand, passes), the
analyses and the back ends. Back ends take what it builds (a device DAG, a Schedule) and
never run the pipeline themselves (docs/internals.md, "Layers and imports").

import dagc.api
analysis = dagc.api.analyze_file("examples/seed/ma_separation.dag")
print(analysis.total_s)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagc.analysis.analyze import Analysis, analyze
from dagc.analysis.selection import CostOptions, cost_model, gpu_preset, roofline_params
from dagc.compiler import CompileResult, compile_file
from dagc.diagnostics import Diagnostic
from dagc.expand import DEFAULT_MAX_OPS, expand

if TYPE_CHECKING:
    from dagc.backends.schedule import Schedule


@dataclass(frozen=True)
class AnalyzeResult:
    """An analysis and the diagnostics (warnings) found on the way."""

    analysis: Analysis
    warnings: tuple[Diagnostic, ...]
    compiled: CompileResult


def analyze_compiled(
    compiled: CompileResult,
    costs: CostOptions | None = None,
    *,
    max_ops: int = DEFAULT_MAX_OPS,
    symmetric: bool | None = None,
) -> AnalyzeResult:
    """Expand and analyze an already compiled program.

    `symmetric`: collapse GPUs doing identical work (True), never (False), or above a size
    (None); the results are the same, see dagc.passes.symmetry.
    """
    model, params = cost_model(compiled.program, costs)
    expansion = expand(compiled, max_ops=max_ops, symmetric=symmetric)
    analysis = analyze(expansion.graph, model, params.peak_flops, params.memory_bytes)
    return AnalyzeResult(analysis, compiled.warnings + expansion.warnings, compiled)


def analyze_file(
    path: str | os.PathLike[str],
    costs: CostOptions | None = None,
    *,
    werror: bool = False,
    max_ops: int = DEFAULT_MAX_OPS,
) -> Analysis:
    """Compile, expand and analyze a .dag file (warnings are dropped; see analyze_compiled)."""
    return analyze_compiled(compile_file(path, werror=werror), costs, max_ops=max_ops).analysis


@dataclass(frozen=True)
class FormulaResult:
    """A formula, whether it is exact, and what was noted while deriving it."""

    expression: Any
    exact: bool
    notes: tuple[str, ...]
    warnings: tuple[Diagnostic, ...]


def formula_compiled(
    compiled: CompileResult,
    *,
    matmul_only: bool = False,
    max_branches: int | None = None,
    max_ops: int = DEFAULT_MAX_OPS,
    symmetric: bool | None = True,
) -> FormulaResult:
    """The runtime of a compiled program as a max-plus formula over cost terms.

    The reference model that breaks ties past `max_branches` is the file's roofline. The
    symbolic walk costs far more per operation than the numeric one, so GPUs doing
    identical work are collapsed by default (the formula is the same; tests check it).
    """
    from dagc.analysis.formula import DEFAULT_MAX_BRANCHES, symbolic_longest_path, to_expression
    from dagc.ir.terms import TermKind

    expansion = expand(compiled, max_ops=max_ops, symmetric=symmetric)
    reference, _ = cost_model(compiled.program, CostOptions(matmul_only=matmul_only))

    def include(term: Any) -> bool:
        if matmul_only:
            return bool(term.kind.does_products)
        return bool(term.kind is not TermKind.SYNC)

    path = symbolic_longest_path(
        expansion.graph,
        include=include,
        max_branches=DEFAULT_MAX_BRANCHES if max_branches is None else max_branches,
        reference=reference,
    )
    notes = list(path.notes)
    if not path.exact:
        notes.append(f"reference cost model: {reference.name}")
    return FormulaResult(
        to_expression(path),
        path.exact,
        tuple(notes),
        compiled.warnings + expansion.warnings,
    )


def build_schedule(
    compiled: CompileResult,
    costs: CostOptions | None = None,
    *,
    max_ops: int = DEFAULT_MAX_OPS,
) -> tuple[Schedule, tuple[Diagnostic, ...]]:
    """Expand, cost and time a compiled program for the pictures (`dagc render`,
    `dagc timeline`); also returns the compiler's and the expansion's warnings."""
    from dagc.backends.schedule import make_schedule

    model, _ = cost_model(compiled.program, costs)
    expansion = expand(compiled, max_ops=max_ops, symmetric=False)  # pictures show every GPU
    schedule = make_schedule(expansion.graph, model, gpu_preset(compiled.program, costs))
    return schedule, compiled.warnings + expansion.warnings


__all__ = [
    "AnalyzeResult",
    "CostOptions",
    "FormulaResult",
    "analyze_compiled",
    "analyze_file",
    "build_schedule",
    "cost_model",
    "formula_compiled",
    "roofline_params",
]
