"""`dagc lower`: a file at any level, from the syntax tree to the device DAG."""

from __future__ import annotations

import enum
import io
import sys
from pathlib import Path
from typing import Annotated, TextIO

import typer

import dagc
from dagc.cli.shared import (
    ContextOpt,
    FileArg,
    MaxOpsOpt,
    PhaseChoice,
    PhaseOpt,
    WerrorOpt,
    check_warnings,
    emit,
    progress,
    run_library,
    select_phase,
    usage_error,
)


class Emit(enum.StrEnum):
    ast = "ast"
    ir = "ir"
    steps = "steps"
    device = "device"
    json = "json"
    dag = "dag"


def lower(
    file: FileArg,
    emit_: Annotated[
        Emit,
        typer.Option(
            "--emit",
            help="What to print: the syntax tree (ast), the logical IR (ir), the step IR"
            " (steps), the device IR (device), the device DAG as node-link JSON (json) or"
            " the checked program as a .dag file (dag).",
        ),
    ] = Emit.ir,
    print_after: Annotated[
        list[str] | None,
        typer.Option(
            "--print-after",
            metavar="PASS",
            help="Also print the IR after this pass (repeatable, or `all`). Passes: place,"
            " shard-attention, shard-mlp, shard-moe, shard-embed-head, insert-collectives,"
            " insert-transfers, backward, data-parallel, assign-streams, microbatch, order.",
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Verify the IR after every pass.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    max_ops: MaxOpsOpt = 50_000_000,
    werror: WerrorOpt = False,
    phase: PhaseOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print a .dag file at any level: syntax tree, logical IR, step IR or device DAG.

    Decode and serve files: the step IR and device DAG are those of one phase (--phase,
    --context); the logical IR is the file's whole program unless one of them is given.
    """
    if emit_ is Emit.ast:
        _lower_ast(file, output, print_after or [], werror, phase, context)
        return
    if emit_ is Emit.dag:
        _lower_dag(file, output, print_after or [], werror, phase, context)
        return
    result = run_library(lambda: dagc.compile_file(file, werror=werror))
    result = select_phase(result, phase, context, default=emit_ is not Emit.ir or bool(print_after))
    check_warnings(result.warnings, werror)
    if emit_ is Emit.ir and not print_after:
        emit(output, lambda out: out.write(str(result.program) + "\n"))
        return
    _lower_device(result, emit_, print_after or [], verify, output, max_ops, werror)


def _lower_ast(
    file: Path,
    output: Path | None,
    print_after: list[str],
    werror: bool,
    phase: PhaseChoice | None,
    context: int | None,
) -> None:
    """The syntax tree; options that need the checks or the passes are refused, not ignored."""
    from dagc.frontend.ast import dump

    if phase is not None or context is not None:
        usage_error(
            f"{'--phase' if phase is not None else '--context'} does nothing with --emit ast",
            "the syntax tree is the file as written, both phases in one; use --emit ir,"
            " steps, device or json",
        )
    if print_after:
        usage_error(
            "--print-after does nothing with --emit ast",
            "no pass runs before the syntax tree is printed; use --emit ir, steps, device or json",
        )
    if werror:
        usage_error(
            "--werror does nothing with --emit ast",
            "the syntax tree is printed before the checks that warn; `dagc check --werror`"
            " runs them",
        )
    tree = run_library(lambda: dagc.parse_source(dagc.read_source(file)))
    emit(output, lambda out: out.write(dump(tree) + "\n"))


def _lower_dag(
    file: Path,
    output: Path | None,
    print_after: list[str],
    werror: bool,
    phase: PhaseChoice | None,
    context: int | None,
) -> None:
    """The checked program written back as a .dag file (dagc.backends.dagfile): the whole
    program, so the options that pick a phase or run passes are refused, not ignored."""
    from dagc.backends.dagfile import program_to_dag

    if phase is not None or context is not None:
        usage_error(
            f"{'--phase' if phase is not None else '--context'} does nothing with --emit dag",
            "the .dag file is the whole program, both phases in one; use --emit ir, steps,"
            " device or json for one phase",
        )
    if print_after:
        usage_error(
            "--print-after does nothing with --emit dag",
            "no pass runs before the program is written; use --emit ir, steps, device or json",
        )
    result = run_library(lambda: dagc.compile_file(file, werror=werror))
    check_warnings(result.warnings, werror)
    emit(output, lambda out: out.write(program_to_dag(result.program)))


def _pass_names() -> str:
    from dagc.passes.manager import PIPELINE

    return ", ".join(p.name for p in PIPELINE)


def _lower_device(
    result: dagc.CompileResult,
    emit_: Emit,
    print_after: list[str],
    verify: bool,
    output: Path | None,
    max_ops: int,
    werror: bool,
) -> None:
    """Run the passes, printing after those asked for, then print the level asked for."""
    from dagc.expand import expand
    from dagc.passes.manager import REGISTRY, PassOptions

    wanted = set(REGISTRY) if "all" in print_after else set(print_after)
    unknown = sorted(wanted - set(REGISTRY))
    if unknown:
        usage_error(
            f"unknown pass `{unknown[0]}` for --print-after", f"the passes are {_pass_names()}"
        )
    # Under --werror nothing may reach stdout before the expansion's warnings are known, so
    # the printouts wait in memory until then; otherwise they stream as the passes run.
    printouts: TextIO = io.StringIO() if werror else sys.stdout
    if emit_ is Emit.ir and not werror:
        emit(output, lambda out: out.write(str(result.program) + "\n"))
    options = PassOptions(print_after=frozenset(wanted), verify_each=verify, stream=printouts)
    if emit_ is Emit.steps:
        from dagc.passes.manager import lower_to_steps

        steps = run_library(lambda: lower_to_steps(result.program, options))
        _release(printouts)
        emit(output, lambda out: out.write(str(steps) + "\n"))
        return
    with progress(f"expanding {result.source.path}"):
        expansion = run_library(lambda: expand(result, max_ops=max_ops, options=options))
    check_warnings(expansion.warnings, werror)
    if emit_ is Emit.ir and werror:
        emit(output, lambda out: out.write(str(result.program) + "\n"))
    _release(printouts)
    if emit_ is Emit.device:
        from dagc.ir.device import write_device

        emit(output, lambda out: write_device(expansion.graph, out))
    elif emit_ is Emit.json:
        from dagc.backends.device_json import write_device_json

        emit(output, lambda out: write_device_json(expansion.graph, out))


def _release(printouts: TextIO) -> None:
    """Write the --print-after printouts held back under --werror (streamed ones are out)."""
    if isinstance(printouts, io.StringIO):
        sys.stdout.write(printouts.getvalue())
