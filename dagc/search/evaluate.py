"""Evaluating one layout in-process: its figures, as `dagc analyze` gives them.

A layout's Program is analysed by `dagc.api.analyze_compiled` (the same call `dagc
analyze` makes, GPUs doing identical work collapsed: the figures are the same), so the
best layout written with `-o` reproduces its row to the digit. Only the figures the
ranking needs leave the worker (an `Evaluation`, a few numbers), never the device DAG.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagc.analysis.selection import CostOptions, cost_model
from dagc.api import analyze_compiled
from dagc.compiler import CompileResult
from dagc.diagnostics import DiagnosticError, Severity
from dagc.ir.logical import Mode, Program
from dagc.search.prune import Bound, lower_bound
from dagc.search.space import Invalid, Layout, Objective, Space, layout_program
from dagc.source import SourceFile


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A layout's figures. `time_s` is what latency means for its mode (prefill: the
    critical path; decode and serve: TPOT; training: the iteration)."""

    layout: Layout
    gpus: int
    time_s: float
    tokens_per_s_per_gpu: float | None
    memory_bytes: int
    memory_limit: float
    mfu: float
    fits: bool
    ttft_s: float | None = None
    tpot_s: float | None = None
    iteration_s: float | None = None
    e2e_s: float | None = None
    max_batch: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """A layout whose expansion the pipeline refuses (its first error's message)."""

    layout: Layout
    message: str


def compiled(program: Program, text: str = "") -> CompileResult:
    """A CompileResult for a Program built in memory (no warnings; `text` its .dag form)."""
    return CompileResult(program, (), SourceFile("<dagc search>", text))


def evaluate(space: Space, layout: Layout, costs: CostOptions | None) -> Evaluation | Failed:
    """Analyse `layout` of `space` (its Program must be valid)."""
    program = layout_program(space, layout)
    try:
        result = analyze_compiled(compiled(program), costs, symmetric=True)
    except DiagnosticError as error:
        errors = [d for d in error.diagnostics if d.severity is Severity.ERROR]
        return Failed(layout, (errors or list(error.diagnostics))[0].message)
    analysis = result.analysis
    memory = max((g.memory_bytes for g in analysis.gpus), default=0)
    fits = memory <= analysis.memory_limit
    serving = analysis.serving
    if serving is not None:
        if serving.max_batch is not None:
            fits = fits and program.workload.batch <= serving.max_batch
        assert serving.tpot_s is not None or program.mode is Mode.SERVE
        return Evaluation(
            layout=layout,
            gpus=serving.gpus,
            time_s=serving.tpot_s if serving.tpot_s is not None else serving.ttft_s or 0.0,
            tokens_per_s_per_gpu=serving.tokens_per_s_per_gpu,
            memory_bytes=memory,
            memory_limit=analysis.memory_limit,
            mfu=analysis.mfu,
            fits=fits,
            ttft_s=serving.ttft_s,
            tpot_s=serving.tpot_s,
            e2e_s=serving.e2e_s,
            max_batch=serving.max_batch,
        )
    training = analysis.training
    return Evaluation(
        layout=layout,
        gpus=training.gpus if training is not None else len(analysis.gpus),
        time_s=analysis.total_s,
        tokens_per_s_per_gpu=analysis.tokens_per_s_per_gpu,
        memory_bytes=memory,
        memory_limit=analysis.memory_limit,
        mfu=analysis.mfu,
        fits=fits,
        iteration_s=training.iteration_s if training is not None else None,
    )


def score(objective: Objective, evaluation: Evaluation) -> float:
    """What the search minimises: the time, or minus the tokens/s per GPU."""
    if objective is Objective.THROUGHPUT:
        return -(evaluation.tokens_per_s_per_gpu or 0.0)
    return evaluation.time_s


@dataclass(frozen=True, slots=True)
class Bounded:
    """A valid layout's lower bounds (see dagc.search.prune), or why it has none."""

    layout: Layout
    bound: Bound | None
    message: str = ""


def bound(space: Space, layout: Layout, costs: CostOptions | None) -> Bounded:
    """The lower bounds of a valid layout."""
    program = layout_program(space, layout)
    model, _ = cost_model(program, costs)
    try:
        return Bounded(layout, lower_bound(program, model))
    except (DiagnosticError, Invalid) as error:
        return Bounded(layout, None, str(error))


def score_bound(space: Space, objective: Objective, bound: Bound) -> float:
    """A lower bound of `score` from a layout's time bounds."""
    program = space.base
    workload = program.workload
    if objective is Objective.THROUGHPUT:
        if program.mode is Mode.SERVE:
            assert workload.output is not None
            tokens = workload.batch * workload.output
            seconds = bound.time_s  # e2e ≥ TTFT bound + (O − 1) · step bound
        else:
            tokens, seconds = workload.batch, bound.tpot_s or bound.time_s
        return -tokens / seconds / space.gpus if seconds > 0 else float("-inf")
    if program.mode is not Mode.PREFILL and bound.tpot_s is not None:
        return bound.tpot_s
    return bound.time_s
