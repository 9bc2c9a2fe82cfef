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
) -> None:
    """Analyze a configuration: critical path, per-GPU time, MFU and memory."""
    from dagc.api import analyze_compiled

    options = cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    if render is not None:
        picture_format(render)  # a bad picture name fails before the analysis, not after
    compiled = run_library(lambda: dagc.compile_file(file, werror=werror))
    chosen = symmetric(symmetry)
    with progress(f"analysing {file}"):
        result = run_library(
            lambda: analyze_compiled(compiled, options, max_ops=max_ops, symmetric=chosen)
        )
    check_warnings(result.warnings, werror, file=file, messages=result.analysis.warnings)
    section = _formula_section(compiled, file, matmul_only, max_ops, chosen) if formula else None
    _write_report(result.analysis, output_format, output, path_limit, section)
    if render is not None:
        draw(compiled, options, render, view="block", max_ops=max_ops, warn=False)


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
