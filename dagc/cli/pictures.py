"""`dagc render` and `dagc timeline`: pictures of a timed configuration (and analyze --render)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

import dagc
from dagc.cli.shared import (
    ContextOpt,
    FileArg,
    GpuOpt,
    MatmulOnlyOpt,
    MaxOpsOpt,
    PhaseOpt,
    PluginOpt,
    SetOpt,
    TableOpt,
    WerrorOpt,
    check_warnings,
    cost_options,
    progress,
    run_library,
    select_phase,
)


class RenderView(enum.StrEnum):
    device = "device"
    block = "block"
    logical = "logical"


def _span_option(name: str, what: str) -> Any:
    return typer.Option(
        f"--{name}",
        metavar="N|A..B",
        help=f"Draw only these {what} (inclusive).",
        show_default=False,
    )


def picture_format(output: Path) -> str:
    """The format of a picture named `output`, and a `dot` to draw it with if it needs one.

    Called before any work, so that a bad name fails at once (exit 2)."""
    from dagc.backends import render as pictures
    from dagc.outputs import check_output

    fmt = run_library(lambda: check_output(output, pictures.FORMATS))
    if fmt != "dot":
        run_library(lambda: pictures.find_dot(fmt))
    return fmt


def draw(
    compiled: dagc.CompileResult,
    options: Any,
    output: Path,
    *,
    view: str,
    filters: Any = None,
    max_nodes: int | None = None,
    whole: bool = False,
    max_ops: int = 50_000_000,
    werror: bool = False,
    warn: bool = True,
) -> None:
    """Time the program, draw it to `output` (checked by `picture_format`), and say on stderr
    what was drawn.

    `warn`: print the compiler's warnings (analyze --render has printed them already)."""
    from dagc.api import build_schedule
    from dagc.backends import render as pictures

    with progress(f"drawing {output}"):
        schedule, warnings = run_library(lambda: build_schedule(compiled, options, max_ops=max_ops))
        check_warnings(warnings if warn else (), werror)
        notes = run_library(
            lambda: pictures.render(
                schedule,
                output,
                view=view,
                filters=filters,
                max_nodes=max_nodes or pictures.DEFAULT_MAX_NODES,
                whole=whole,
            )
        )
    _written(output, notes)


def _written(output: Path, notes: list[str]) -> None:
    """The notes of a picture, then `dagc: wrote OUTPUT`, on stderr."""
    for note in notes:
        typer.echo(f"dagc: note: {note}", err=True)
    typer.echo(f"dagc: wrote {output}", err=True)


def render(
    file: FileArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The picture: .svg, .png, .pdf or .dot.", show_default=False
        ),
    ],
    view: Annotated[
        RenderView,
        typer.Option(
            help="device: every operation; block: one node per block (or part of one,"
            " between collectives), GPU and micro-batch; logical: the layer ranges and"
            " blocks of the file."
        ),
    ] = RenderView.device,
    layers: Annotated[str | None, _span_option("layers", "layers")] = None,
    gpus: Annotated[str | None, _span_option("gpus", "GPUs")] = None,
    microbatch: Annotated[str | None, _span_option("microbatch", "micro-batches")] = None,
    max_nodes: Annotated[
        int,
        typer.Option(min=1, help="Above this many nodes, draw the block view of a slice instead."),
    ] = 2000,
    whole: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Draw every node the view and filters select: no automatic slice, however"
            " large the picture.",
        ),
    ] = False,
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    max_ops: MaxOpsOpt = 50_000_000,
    werror: WerrorOpt = False,
    phase: PhaseOpt = None,
    context: ContextOpt = None,
) -> None:
    """Draw a configuration with graphviz: GPUs, operations, collectives, critical path."""
    from dagc.backends.schedule import Filters, parse_span

    options = cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    filters = run_library(
        lambda: Filters(
            parse_span(layers, "--layers"),
            parse_span(gpus, "--gpus"),
            parse_span(microbatch, "--microbatch"),
        )
    )
    picture_format(output)
    compiled = select_phase(
        run_library(lambda: dagc.compile_file(file, werror=werror)), phase, context
    )
    draw(
        compiled,
        options,
        output,
        view=view.value,
        filters=filters,
        max_nodes=max_nodes,
        whole=whole,
        max_ops=max_ops,
        werror=werror,
    )


def timeline(
    file: FileArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="trace.json (Chrome/Perfetto trace) or a Gantt chart: .png, .svg or .pdf.",
            show_default=False,
        ),
    ],
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    max_ops: MaxOpsOpt = 50_000_000,
    werror: WerrorOpt = False,
    phase: PhaseOpt = None,
    context: ContextOpt = None,
) -> None:
    """When every operation runs on every GPU: a Perfetto trace or a Gantt chart."""
    from dagc.api import build_schedule
    from dagc.backends.timeline import FORMATS, write_timeline
    from dagc.outputs import check_output

    options = cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    run_library(lambda: check_output(output, FORMATS))
    compiled = select_phase(
        run_library(lambda: dagc.compile_file(file, werror=werror)), phase, context
    )
    with progress(f"writing {output}"):
        schedule, warnings = run_library(lambda: build_schedule(compiled, options, max_ops=max_ops))
        check_warnings(warnings, werror)
        notes = run_library(lambda: write_timeline(schedule, output))
    _written(output, notes)
