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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dagc.analysis.analyze import Analysis, analyze
from dagc.analysis.selection import CostOptions, cost_model, gpu_preset, roofline_params
from dagc.compiler import CompileResult, compile_file
from dagc.diagnostics import Diagnostic, DiagnosticError, Severity
from dagc.expand import DEFAULT_MAX_OPS, expand
from dagc.ir.logical import Mode, decode_phase, prefill_phase

if TYPE_CHECKING:
    from dagc.analysis.serving import Sweep
    from dagc.backends.schedule import Schedule
    from dagc.expand import Expansion
    from dagc.ir.logical import Program


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
    (None); the results are the same, see dagc.passes.symmetry. A decode or serve program
    goes through `serve_compiled`.
    """
    if compiled.program.mode is not Mode.PREFILL:
        return serve_compiled(compiled, costs, max_ops=max_ops, symmetric=symmetric)
    model, params = cost_model(compiled.program, costs)
    expansion = expand(compiled, max_ops=max_ops, symmetric=symmetric)
    analysis = analyze(expansion.graph, model, params.peak_flops, params.memory_bytes)
    return AnalyzeResult(analysis, compiled.warnings + expansion.warnings, compiled)


def serve_compiled(
    compiled: CompileResult,
    costs: CostOptions | None = None,
    *,
    max_ops: int = DEFAULT_MAX_OPS,
    symmetric: bool | None = None,
) -> AnalyzeResult:
    """Analyze a decode or serve program: its serving figures (`Analysis.serving`, see
    dagc.analysis.serving) and, for the rest of the analysis, one decode step at the
    reported context (decode: its C; serve: the last step, I + O − 1; a serve with one
    output token has no decode step and reports its prefill).

    The decode phase is expanded once and re-priced at every context the figures need.
    """
    from dagc.analysis.capacity import largest_context, max_batch
    from dagc.analysis.memory import estimate_memory
    from dagc.analysis.serving import (
        DecodePricer,
        decode_figures,
        prefill_times,
        reported_context,
        serve_figures,
    )

    program = compiled.program
    if program.mode is Mode.PREFILL:
        raise ValueError("serve_compiled needs a decode or serve program")
    model, params = cost_model(program, costs)

    def expand_phase(phase: Program) -> Expansion:
        return expand(replace(compiled, program=phase), max_ops=max_ops, symmetric=symmetric)

    warnings = list(compiled.warnings)
    context = reported_context(program)
    workload = program.workload
    has_steps = program.mode is Mode.DECODE or (workload.output or 0) > 1
    decode = expand_phase(decode_phase(program, context)) if has_steps else None
    # the KV cache the memory figures count: at C, or at a serve's last slot, I + O
    # (dagc.analysis.capacity.largest_context)
    cached = largest_context(program)
    assert cached is not None
    if program.mode is Mode.DECODE:
        assert decode is not None
        shown = decode.graph
        analysis = analyze(shown, model, params.peak_flops, params.memory_bytes, kv_context=cached)
        figures = decode_figures(program, analysis.total_s)
    else:
        prefill = expand_phase(prefill_phase(program))
        warnings += prefill.warnings
        pricer = DecodePricer(decode.graph, model) if decode is not None else None
        figures = serve_figures(
            program, prefill_times(prefill.graph, model), pricer.step_s if pricer else None
        )
        shown = decode.graph if decode is not None else prefill.graph
        analysis = analyze(shown, model, params.peak_flops, params.memory_bytes, kv_context=cached)
    if decode is not None:
        warnings += decode.warnings
    memory = estimate_memory(shown, kv_context=cached)
    capacity = max_batch(program, cached, memory, params.memory_bytes)
    figures = replace(figures, max_batch=capacity.max_batch, max_batch_context=cached)
    unique = tuple(dict.fromkeys(warnings))  # both phases may find the same problem
    return AnalyzeResult(replace(analysis, serving=figures), unique, compiled)


def at_batch(compiled: CompileResult, batch: int) -> CompileResult:
    """`compiled` with its workload's batch replaced (checked: see batch_problem)."""
    program = compiled.program
    workload = replace(program.workload, batch=batch)
    return replace(compiled, program=replace(program, workload=workload))


def batch_sweep(
    compiled: CompileResult,
    batches: Sequence[int] | None,
    costs: CostOptions | None = None,
    *,
    max_ops: int = DEFAULT_MAX_OPS,
    symmetric: bool | None = None,
    each: Callable[[int], AbstractContextManager[object]] | None = None,
) -> tuple[Sweep, tuple[Diagnostic, ...]]:
    """A decode or serve program analysed at each of `batches` (`dagc analyze
    --batch-sweep`), and the expansions' warnings (each once).

    `batches` None: the smallest valid batch and its doublings up to the file's max batch
    (or AUTO_SWEEP_LIMIT when that is unknown), see auto_batches. A batch the program
    cannot run at, or whose expansion fails, is skipped with its reason. `each(batch)`,
    when given, wraps each batch's analysis (a progress display).
    """
    from dagc.analysis.serving import Sweep, SweepRow, auto_batches, batch_problem

    program = compiled.program
    if program.mode is Mode.PREFILL:
        raise ValueError("a batch sweep needs a decode or serve program")
    rows: list[SweepRow] = []
    skipped: list[tuple[int, str]] = []
    warnings: dict[Diagnostic, None] = {}
    cost_name = ""
    done: dict[int, AnalyzeResult] = {}

    def at(batch: int) -> AnalyzeResult:
        if batch not in done:
            with each(batch) if each is not None else nullcontext():
                done[batch] = serve_compiled(
                    at_batch(compiled, batch), costs, max_ops=max_ops, symmetric=symmetric
                )
        return done[batch]

    if batches is None:  # the file's own batch says how far the sweep goes
        serving = at(program.workload.batch).analysis.serving
        batches = auto_batches(program, serving.max_batch if serving else None)
    for batch in batches:
        problem = batch_problem(program, batch)
        if problem is not None:
            skipped.append((batch, problem))
            continue
        try:
            result = at(batch)
        except DiagnosticError as error:
            first = [d for d in error.diagnostics if d.severity is Severity.ERROR]
            skipped.append((batch, (first or list(error.diagnostics))[0].message))
            continue
        analysis = result.analysis
        assert analysis.serving is not None
        warnings.update(dict.fromkeys(result.warnings[len(compiled.warnings) :]))
        cost_name = analysis.cost_model
        fits = all(g.memory_bytes <= analysis.memory_limit for g in analysis.gpus)
        if analysis.serving.max_batch is not None:
            fits = fits and batch <= analysis.serving.max_batch
        rows.append(SweepRow.of(analysis.serving, fits))
    sweep = Sweep(
        source=program.source_path,
        mode=program.mode,
        cost_model=cost_name,
        rows=tuple(rows),
        skipped=tuple(skipped),
    )
    return sweep, tuple(warnings)


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
    "at_batch",
    "batch_sweep",
    "build_schedule",
    "cost_model",
    "formula_compiled",
    "roofline_params",
    "serve_compiled",
]
