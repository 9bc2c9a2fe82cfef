"""The library's high-level entry points: compile, expand, cost and analyze in one call.

import dagc.api
analysis = dagc.api.analyze_file("examples/seed/ma_separation.dag")
print(analysis.total_s)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dagc.analysis.analyze import Analysis, analyze
from dagc.analysis.costs import CostModel, MatmulOnly, Roofline, RooflineParams
from dagc.compiler import CompileResult, compile_file
from dagc.diagnostics import Diagnostic, DiagnosticBag, DiagnosticError, did_you_mean
from dagc.expand import DEFAULT_MAX_OPS, expand
from dagc.hardware import PRESETS
from dagc.ir.logical import Program


@dataclass(frozen=True)
class CostOptions:
    """How operations are costed (the CLI's --gpu, --set, --cost-table, --cost-plugin...)."""

    gpu: str | None = None
    overrides: dict[str, float] = field(default_factory=dict)
    table: str | os.PathLike[str] | None = None
    plugin: str | os.PathLike[str] | None = None
    matmul_only: bool = False


def _option_error(message: str, help: str | None) -> DiagnosticError:
    bag = DiagnosticBag(None)
    bag.error(None, message, help=help)
    return DiagnosticError(bag.diagnostics)


def _unknown_gpu_help(gpu: str) -> str:
    """How to fix --gpu: another case of a preset's name, or how to describe another GPU.

    No did-you-mean beyond case: GPU names a letter apart are other chips (b100, h100).
    """
    if gpu.lower() in PRESETS:
        return f"did you mean `{gpu.lower()}`?"
    return (
        f"presets: {', '.join(sorted(PRESETS))}; for another GPU, start from one and give its"
        " figures, e.g. --set peak_flops=... --set hbm_bandwidth=... --set memory_bytes=..."
        " (docs/cost-models.md lists them)"
    )


def roofline_params(program: Program, options: CostOptions) -> RooflineParams:
    """The roofline parameters: the preset (file or --gpu) with overrides applied."""
    gpu = options.gpu or program.hardware.gpu
    if gpu not in PRESETS:
        raise _option_error(f"unknown GPU preset `{gpu}`", _unknown_gpu_help(gpu))
    params = RooflineParams.for_gpu(PRESETS[gpu], program.workload.dtype)
    overrides = {**program.hardware.overrides, **options.overrides}
    try:
        return params.with_overrides(overrides)
    except KeyError as error:
        key = str(error.args[0])
        names = RooflineParams.__dataclass_fields__
        raise _option_error(
            f"unknown roofline parameter `{key}`",
            did_you_mean(key, names) or f"parameters: {', '.join(names)}",
        ) from None
    except ValueError as error:
        raise _option_error(f"bad roofline parameter: {error}", None) from None


def cost_model(
    program: Program, options: CostOptions | None = None
) -> tuple[CostModel, RooflineParams]:
    """The cost model the options describe, and the roofline parameters under it."""
    options = options or CostOptions()
    params = roofline_params(program, options)
    gpu = options.gpu or program.hardware.gpu
    model: CostModel = Roofline(params, program.workload.dtype.bytes)
    model.name = f"roofline ({gpu}, {program.workload.dtype.value})"
    if options.table is not None:
        from dagc.analysis.table import TableModel, load_cost_table

        model = TableModel(load_cost_table(options.table), model)
    if options.plugin is not None:
        from dagc.analysis.plugin import load_plugin

        model = load_plugin(options.plugin, model)
    if options.matmul_only:
        model = MatmulOnly(model)
    return model, params


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
            return bool(term.kind is TermKind.MATMUL)
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
