"""`dagc analyze` and `dagc compare`: the timing report of one file, the table of several."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

import dagc
from dagc.cli.pictures import draw, picture_format
from dagc.cli.shared import (
    FileArg,
    FilesArg,
    GpuOpt,
    MatmulOnlyOpt,
    MaxOpsOpt,
    PluginOpt,
    SetOpt,
    Symmetry,
    SymmetryOpt,
    TableOpt,
    WerrorOpt,
    check_warnings,
    cost_options,
    emit,
    print_warnings,
    progress,
    run_library,
    stop_if_werror,
    symmetric,
    usage_error,
)


class ReportFormat(enum.StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def analyze(
    file: FileArg,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", help="Report format.")
    ] = ReportFormat.text,
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    path_limit: Annotated[
        int, typer.Option(min=0, help="Critical-path nodes listed in text reports (0: all).")
    ] = 60,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
    ] = None,
    formula: Annotated[
        bool, typer.Option("--formula", help="Add the runtime formula (see `dagc formula`).")
    ] = False,
    max_ops: MaxOpsOpt = 50_000_000,
    symmetry: SymmetryOpt = Symmetry.auto,
    werror: WerrorOpt = False,
    render: Annotated[
        Path | None,
        typer.Option(
            "--render",
            metavar="PICTURE",
            help="Also draw the block view to this .svg, .png, .pdf or .dot (see `dagc render`).",
        ),
    ] = None,
    batch_sweep: Annotated[
        str | None,
        typer.Option(
            "--batch-sweep",
            metavar="B1,B2,...|auto",
            help="Decode and serve files: analyse at each of these batches and print a table"
            " (batch, TTFT, TPOT, tokens/s, tokens/s per GPU, fits in memory) instead of the"
            " report; auto: the smallest valid batch and its doublings up to the largest"
            " that fits (or 4096).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE.svg",
            help="With --batch-sweep: also draw tokens/s per GPU against TPOT to this .svg.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Analyze a configuration: critical path, per-GPU time, MFU and memory."""
    from dagc.api import analyze_compiled

    options = cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    if render is not None:
        picture_format(render)  # a bad picture name fails before the analysis, not after
    requested = _sweep_request(batch_sweep, plot, render, formula)
    compiled = run_library(lambda: dagc.compile_file(file, werror=werror))
    chosen = symmetric(symmetry)
    if requested is not None:
        table = _sweep(compiled, file, requested, plot, options, max_ops, chosen, werror)
        _write_sweep(table, output_format, output, plot)
        return
    with progress(f"analysing {file}"):
        result = run_library(
            lambda: analyze_compiled(compiled, options, max_ops=max_ops, symmetric=chosen)
        )
    check_warnings(result.warnings, werror, file=file, messages=result.analysis.warnings)
    shown = _reported_phase(compiled)
    section = _formula_section(shown, file, matmul_only, max_ops, chosen) if formula else None
    _write_report(result.analysis, output_format, output, path_limit, section)
    if render is not None:
        draw(shown, options, render, view="block", max_ops=max_ops, warn=False)


def _reported_phase(compiled: dagc.CompileResult) -> dagc.CompileResult:
    """The phase a report describes, for --render and --formula: a decode or serve file's
    reported decode step (a serve with one output token: its prefill)."""
    from dataclasses import replace

    from dagc.analysis.serving import reported_context
    from dagc.ir.logical import Mode, decode_phase, prefill_phase

    program = compiled.program
    if program.mode is Mode.PREFILL:
        return compiled
    if program.mode is Mode.SERVE and program.workload.output == 1:
        return replace(compiled, program=prefill_phase(program))
    return replace(compiled, program=decode_phase(program, reported_context(program)))


def _sweep_request(
    text: str | None, plot: Path | None, render: Path | None, formula: bool
) -> list[int] | str | None:
    """The batches of --batch-sweep (a list, or "auto"); None without it. Checks the
    options that go with it before any work."""
    if text is None:
        if plot is not None:
            usage_error("--plot needs --batch-sweep", "e.g. --batch-sweep 1,8,64 --plot curve.svg")
        return None
    if render is not None or formula:
        usage_error(
            f"{'--render' if render is not None else '--formula'} does nothing with --batch-sweep",
            "the sweep prints a table of batches, not one report; drop one of the two",
        )
    if plot is not None:
        from dagc.outputs import check_output

        run_library(lambda: check_output(plot, ("svg",)))
    if text.strip() == "auto":
        return "auto"
    batches: list[int] = []
    for item in text.split(","):
        try:
            batch = int(item.strip())
        except ValueError:
            batch = 0
        if batch < 1:
            usage_error(
                f"--batch-sweep expects positive batches separated by commas, or auto; got"
                f" `{item.strip()}`",
                "e.g. --batch-sweep 1,2,4,8 or --batch-sweep auto",
            )
        if batch not in batches:
            batches.append(batch)
    return sorted(batches)


def _sweep(
    compiled: dagc.CompileResult,
    file: Path,
    requested: list[int] | str,
    plot: Path | None,
    options: Any,
    max_ops: int,
    chosen: bool | None,
    werror: bool,
) -> Any:
    """Run the batch sweep; skipped batches and warnings on stderr."""
    from dagc.api import batch_sweep
    from dagc.ir.logical import Mode

    program = compiled.program
    if program.mode is Mode.PREFILL:
        usage_error(
            "--batch-sweep needs a decode or serve workload",
            "set `mode = decode` (with a context) or `mode = serve` (with input and output)"
            " in the file's workload",
        )
    batches = requested if isinstance(requested, list) else None  # None: auto

    def each(batch: int) -> Any:
        return progress(f"analysing {file} at batch {batch}")

    sweep, warnings = run_library(
        lambda: batch_sweep(
            compiled, batches, options, max_ops=max_ops, symmetric=chosen, each=each
        )
    )
    for batch, reason in sweep.skipped:
        typer.echo(f"dagc: note: batch {batch} skipped: {reason}", err=True)
    check_warnings((*compiled.warnings, *warnings), werror)
    if not sweep.rows:
        usage_error(
            "--batch-sweep: no batch could be analysed",
            f"the batches must divide by the {program.workload.microbatches} micro-batches and"
            " give every data-parallel replica a sequence",
        )
    return sweep


def _write_sweep(
    sweep: Any, output_format: ReportFormat, output: Path | None, plot: Path | None
) -> None:
    """The sweep's table to stdout or -o, and its plot."""
    from dagc.backends.plot import write_plot
    from dagc.backends.report import write_sweep

    emit(output, lambda out: write_sweep(sweep, out, fmt=output_format.value))
    if plot is not None:
        try:
            write_plot(plot, sweep)
        except OSError as error:
            usage_error(
                f"cannot write {plot}: {error.strerror}", "check that the folder is writable"
            )
        typer.echo(f"dagc: wrote {plot}", err=True)


def _formula_section(
    compiled: dagc.CompileResult,
    file: Path,
    matmul_only: bool,
    max_ops: int,
    chosen: bool | None,
) -> Any:
    """The runtime formula of analyze --formula (symmetry on unless --symmetry off)."""
    from dagc.api import formula_compiled
    from dagc.backends import formula as printers
    from dagc.backends.report import FormulaSection

    with progress(f"deriving the formula of {file}"):
        found = run_library(
            lambda: formula_compiled(
                compiled,
                matmul_only=matmul_only,
                max_ops=max_ops,
                symmetric=True if chosen is None else chosen,
            )
        )
    return FormulaSection(
        printers.text(found.expression, width=80),
        printers.python(found.expression),
        found.exact,
        found.notes,
    )


def _write_report(
    analysis: Any,
    output_format: ReportFormat,
    output: Path | None,
    path_limit: int,
    section: Any,
) -> None:
    """The report, in the format asked for, to stdout or `output`."""
    from dagc.backends.report import write_json, write_markdown, write_text

    if output_format is ReportFormat.json:
        emit(output, lambda out: write_json(analysis, out, formula=section))
    elif output_format is ReportFormat.markdown:
        emit(
            output,
            lambda out: write_markdown(analysis, out, path_limit=path_limit, formula=section),
        )
    else:
        emit(output, lambda out: write_text(analysis, out, path_limit=path_limit, formula=section))


def compare(
    files: FilesArg,
    output_format: Annotated[
        ReportFormat | None,
        typer.Option("--format", help="Table format: text, markdown or json.", show_default=False),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Same as --format markdown.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the table to this file.")
    ] = None,
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    max_ops: MaxOpsOpt = 50_000_000,
    symmetry: SymmetryOpt = Symmetry.auto,
    werror: WerrorOpt = False,
) -> None:
    """Compare configurations side by side: time, tokens/s, speedup, bottleneck, MFU."""
    from dagc.backends.report import write_comparison

    if markdown and output_format not in (None, ReportFormat.markdown):
        usage_error(
            f"--markdown contradicts --format {output_format}", "give one of the two options"
        )
    fmt = ReportFormat.markdown if markdown else output_format or ReportFormat.text
    options = cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    analyses = []
    warned = False
    for file in files:
        with progress(f"analysing {file}"):
            analysis, warnings = _analyze_one(file, options, max_ops, symmetric(symmetry), werror)
        analyses.append(analysis)
        warned = warned or warnings
    # Every file's warnings are printed before --werror stops the run.
    stop_if_werror(warned, werror)
    emit(output, lambda out: write_comparison(analyses, out, fmt=fmt.value))


def _analyze_one(
    file: Path, options: Any, max_ops: int, chosen: bool | None, werror: bool
) -> tuple[Any, bool]:
    """One file's analysis, its warnings printed on stderr, and whether it had any."""
    from dagc.api import analyze_compiled

    compiled = run_library(lambda: dagc.compile_file(file, werror=werror))
    result = run_library(
        lambda: analyze_compiled(compiled, options, max_ops=max_ops, symmetric=chosen)
    )
    warned = print_warnings(result.warnings, file=file, messages=result.analysis.warnings)
    return result.analysis, warned
