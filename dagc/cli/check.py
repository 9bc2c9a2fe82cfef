"""`dagc check`: every error and warning of each file, nothing on stdout."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer

import dagc
from dagc.cli.shared import FilesArg, WerrorOpt, run_library
from dagc.diagnostics import Diagnostic, DiagnosticError, Severity


def check(files: FilesArg, werror: WerrorOpt = False) -> None:
    """Check .dag files and report every error and warning (nothing goes to stdout)."""
    failed = 0
    warnings = 0
    printed = False
    for file in files:
        diagnostics, ok = run_library(partial(_diagnostics_of, file, werror))
        if not ok:
            failed += 1
        warnings += sum(d.severity is Severity.WARNING for d in diagnostics)
        for diagnostic in diagnostics:  # one blank line between diagnostics, across files too
            typer.echo(("\n" if printed else "") + diagnostic.render(), err=True)
            printed = True
    summary = f"dagc: checked {len(files)} file{'s' if len(files) != 1 else ''}"
    summary += f", {failed} with errors, {warnings} warning{'s' if warnings != 1 else ''}"
    typer.echo(summary, err=True)
    if failed:
        raise typer.Exit(2)


def _diagnostics_of(path: Path, werror: bool) -> tuple[tuple[Diagnostic, ...], bool]:
    """A file's errors and warnings, and whether it compiled.

    check reports compiler warnings itself, as `check` shows every diagnostic: under
    --werror the compiler has already made them errors, so no closing line is needed.
    """
    try:
        return dagc.compile_file(path, werror=werror).warnings, True
    except DiagnosticError as error:
        return error.diagnostics, False
