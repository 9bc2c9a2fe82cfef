"""`dagc formula`: the runtime as a formula of cost terms."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

import dagc
from dagc.cli.shared import (
    ContextOpt,
    FileArg,
    MatmulOnlyOpt,
    MaxOpsOpt,
    PhaseOpt,
    Symmetry,
    SymmetryOpt,
    WerrorOpt,
    check_warnings,
    emit,
    progress,
    run_library,
    select_phase,
    symmetric,
)


class FormulaFormat(enum.StrEnum):
    text = "text"
    python = "python"
    latex = "latex"
    json = "json"


def formula(
    file: FileArg,
    output_format: Annotated[
        FormulaFormat,
        typer.Option(
            "--format",
            help="text (the seed's notation), python (one expression), latex, or json (a tree).",
        ),
    ] = FormulaFormat.text,
    matmul_only: MatmulOnlyOpt = False,
    symbolic_dims: Annotated[
        bool,
        typer.Option(
            "--symbolic-dims", help="Write dimensions in model symbols (B*S, H, 3*d) where known."
        ),
    ] = False,
    max_branches: Annotated[
        int,
        typer.Option(min=1, help="Most incomparable branches kept before falling back (see docs)."),
    ] = 32,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the formula to this file.")
    ] = None,
    max_ops: MaxOpsOpt = 50_000_000,
    symmetry: SymmetryOpt = Symmetry.auto,
    werror: WerrorOpt = False,
    phase: PhaseOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print the runtime as a formula of cost terms, exact for every monotone cost model."""
    from dagc.api import formula_compiled
    from dagc.backends import formula as printers

    compiled = select_phase(
        run_library(lambda: dagc.compile_file(file, werror=werror)), phase, context
    )
    with progress(f"deriving the formula of {file}"):
        result = run_library(
            lambda: formula_compiled(
                compiled,
                matmul_only=matmul_only,
                max_branches=max_branches,
                max_ops=max_ops,
                symmetric=symmetric(symmetry) if symmetry is not Symmetry.auto else True,
            )
        )
    check_warnings(result.warnings, werror)
    expr = result.expression
    notes = [f"note: {note}" for note in result.notes]
    for note in notes:
        typer.echo(f"{file}: {note}", err=True)
    if output_format is FormulaFormat.python:
        emit(output, lambda out: out.write(printers.python(expr) + "\n"))
    elif output_format is FormulaFormat.latex:
        text = printers.latex(expr, symbolic=symbolic_dims)
        emit(output, lambda out: out.write("\n".join([text, *notes]) + "\n"))
    elif output_format is FormulaFormat.json:
        emit(
            output,
            lambda out: printers.write_json(
                expr, out, exact=result.exact, notes=list(result.notes)
            ),
        )
    else:
        text = printers.text(expr, symbolic=symbolic_dims)
        emit(output, lambda out: out.write("\n".join([text, *notes]) + "\n"))
