"""Expansion: run the passes from a checked program to its device DAG.

Problems that only show once the program is expanded are reported as diagnostics in the
front end's format: a placement whose program order deadlocks, an expansion too large to
hold, an expert capacity larger than the tokens there are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dagc.blocks import module as block_module
from dagc.blocks.shapes import expert_tokens, experts_run, tokens
from dagc.compiler import CompileResult
from dagc.diagnostics import Diagnostic, DiagnosticBag, Note
from dagc.ir.device import ORDER_EDGE, DeviceGraph
from dagc.ir.logical import BlockKind, Mode, Program, prefill_phase
from dagc.ir.steps import Phase, StepProgram
from dagc.ir.toposort import find_cycle
from dagc.passes.manager import PIPELINE, PassOptions, run_passes

DEFAULT_MAX_OPS = 50_000_000


@dataclass(frozen=True)
class Expansion:
    """The device DAG of a compiled program and the warnings found while expanding."""

    graph: DeviceGraph
    warnings: tuple[Diagnostic, ...]


SYMMETRY_THRESHOLD = 200_000


def expand(
    compiled: CompileResult,
    *,
    max_ops: int = DEFAULT_MAX_OPS,
    options: PassOptions | None = None,
    symmetric: bool | None = False,
) -> Expansion:
    """Expand `compiled` into its device DAG; expansion errors raise DiagnosticError.

    A serve program expands to its prefill phase (dagc.ir.logical.prefill_phase); expand
    `decode_phase(program, context)` for one of its decode steps.
    `symmetric=True` keeps one GPU per set of GPUs doing identical work (exact for the
    critical path, the formula and the totals; see passes/symmetry.py); None decides by
    size: collapse above SYMMETRY_THRESHOLD operations.
    """
    if compiled.program.mode is Mode.SERVE:
        # a serve file as written starts with its prefill (with its KV handoff when
        # disaggregated); its decode steps are decode_phase(program, context)
        compiled = replace(compiled, program=prefill_phase(compiled.program))
    bag = DiagnosticBag(compiled.source)
    options = options or PassOptions()
    _refuse_early(compiled, bag, max_ops, may_collapse=symmetric is not False)
    collapse = bool(symmetric) or "collapse-symmetric" in options.enable
    if symmetric is None and not collapse:
        # Above the bound there is no need to build the step IR to know: at this size
        # that is the slow part.
        collapse = least_operations(compiled.program, collapsed=False) > SYMMETRY_THRESHOLD
    decided = symmetric is not None or collapse

    def after_front_half(steps: StepProgram) -> None:
        nonlocal collapse
        if not decided:
            collapse = _operations(steps) > SYMMETRY_THRESHOLD
        if not collapse:  # the size limit applies to what is built: after any collapse
            _check_steps(steps, bag, max_ops)

    # The front half (up to the complete step IR, streams assigned) runs once; the decision
    # to collapse is taken on its result, then the back half runs on it.
    steps = run_passes(
        compiled.program,
        _hooked(options, {"assign-streams": after_front_half}),
        "assign-streams",
    )
    back = _hooked(
        options,
        {
            "collapse-symmetric": lambda s: _check_steps(s, bag, max_ops),
            # A deadlock is checked as soon as program order exists, so that it is
            # reported as the user's error before --verify would call the cycle a bug.
            "order": lambda graph: _check_deadlock(graph, bag),
        },
    )
    if collapse:
        back = replace(back, enable=back.enable | {"collapse-symmetric"})
    graph = run_passes(steps, back, resume_after="assign-streams")
    assert isinstance(graph, DeviceGraph)
    bag.raise_if_errors()
    return Expansion(graph, tuple(bag.sorted()))


def _hooked(options: PassOptions, hooks: dict[str, Callable[[Any], None]]) -> PassOptions:
    """`options` with each hook run after its pass (the caller's own hooks are replaced)."""
    return PassOptions(
        print_after=options.print_after,
        verify_each=options.verify_each,
        timings=options.timings,
        stream=options.stream,
        after=hooks,
        enable=options.enable,
    )


def _operations(steps: StepProgram) -> int:
    """Device operations of the expansion of `steps`: every step's width per micro-batch,
    once for a step that runs once per iteration."""
    m = steps.program.workload.microbatches
    return sum(step.width * (1 if step.phase is Phase.ITERATION else m) for step in steps.steps())


def least_operations(program: Program, *, collapsed: bool) -> int:
    """A lower bound on the device operations an expansion builds, from the logical IR alone.

    It counts only the operations each block kind's module says a rank and an expert make at
    least (dagc/blocks/), so it never exceeds the true count; with `collapsed`, one rank per
    block, as the symmetric collapse keeps at least one. Cheap whatever the size: no loop
    over GPUs or experts. A training program's backward makes at least one operation on
    the same GPUs for each of the forward's compute operations (a gradient, or a weight's),
    so it counts twice.
    """
    total = 0
    experts = program.model.experts or 0
    for layer_range in program.ranges:
        layers = layer_range.last - layer_range.first + 1
        for block in layer_range.blocks:
            least = block_module(block.kind)
            ranks = 1 if collapsed else program.group(block.group).size
            held = experts // max(block.degree, 1) if collapsed else experts
            if block.kind is BlockKind.MOE and experts:
                # decode with few tokens: only the active experts run, on some ranks
                run = experts_run(program, block.degree)
                held = max(run) if collapsed else sum(run)
                ranks = 1 if collapsed else sum(1 for n in run if n)
            total += layers * (least.least_ops_per_rank * ranks + least.least_ops_per_expert * held)
    passes = 2 if program.training is not None else 1
    return total * program.workload.microbatches * passes


def _refuse_early(
    compiled: CompileResult, bag: DiagnosticBag, max_ops: int, *, may_collapse: bool
) -> None:
    """Refuse, before any expansion work, a program that must exceed `max_ops`."""
    program = compiled.program
    least = least_operations(program, collapsed=may_collapse)
    if least <= max_ops or not program.ranges:
        return
    bag.error(
        program.ranges[0].span,
        f"this configuration expands to at least {least:,} device operations"
        f"{' (after collapsing identical GPUs)' if may_collapse else ''}, more than the limit"
        f" of {max_ops:,}",
        help="raise the limit with --max-ops, or use fewer micro-batches, layers, GPUs or experts",
    )
    bag.raise_if_errors()


def _check_steps(steps: StepProgram, bag: DiagnosticBag, max_ops: int) -> None:
    program = steps.program
    width = sum(step.width for step in steps.steps())
    total = width * program.workload.microbatches
    if total > max_ops:
        first = steps.blocks[0]
        bag.error(
            first.span,
            f"this configuration expands to {total:,} device operations ({width:,} per"
            f" micro-batch x {program.workload.microbatches}), more than the limit of"
            f" {max_ops:,}",
            help="raise the limit with --max-ops, or use fewer micro-batches or layers",
        )
        bag.raise_if_errors()
    for block in steps.blocks:
        if block.kind is BlockKind.MOE and expert_tokens(program) > tokens(program):
            bag.warning(
                block.span,
                f"capacity_factor gives each expert {expert_tokens(program):,} token slots,"
                f" more than the {tokens(program):,} tokens of a micro-batch",
                help="the extra slots are padding that costs time; lower capacity_factor",
            )
            break


def _check_deadlock(graph: DeviceGraph, bag: DiagnosticBag) -> None:
    """Report a cycle of program order and data edges as an error, and raise it."""
    if graph.levels is not None:
        return
    cycle = find_cycle(graph.num_ops, graph.src, graph.dst)
    order_edges = {
        (int(s), int(d))
        for s, d, k in zip(graph.src, graph.dst, graph.edge_kind, strict=True)
        if k == ORDER_EDGE
    }
    hops = [
        (a, b) for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True) if (a, b) in order_edges
    ]
    notes = [
        Note(
            f"gpu {min(set(graph.gpus_of(a)) & set(graph.gpus_of(b)))} runs"
            f" `{graph.name(a)}` before `{graph.name(b)}`"
        )
        for a, b in hops[:4]
    ]
    anchor = hops[0][0] if hops else cycle[0]
    bag.error(
        graph.step_of(anchor).span,
        f"the placement deadlocks with {graph.microbatches} micro-batches: program order and"
        " data dependencies form a circle",
        help="a pipeline stage's GPUs run micro-batch by micro-batch, and groups that share"
        " layers with another group run layer by layer; give each group one contiguous run"
        " of layers, or use a single micro-batch",
        notes=notes,
    )
    bag.raise_if_errors()


__all__ = ["DEFAULT_MAX_OPS", "PIPELINE", "Expansion", "expand"]
