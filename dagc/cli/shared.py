"""What every dagc command shares: option types, running library code, output, warnings.

The commands call the library through `run_library`, write through `emit` and print
warnings through `check_warnings`, so that exit codes, atomic output and the `--werror`
rule are the same everywhere.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import typer

from dagc.diagnostics import Diagnostic, DiagnosticError, Severity

ISSUES_URL = "https://github.com/dagc/dagc/issues"
# The closing line of every command that stops because of --werror.
WERROR_LINE = "dagc: error: warnings are errors (--werror)"
T = TypeVar("T")

FileArg = Annotated[Path, typer.Argument(help="A .dag file.", show_default=False)]
FilesArg = Annotated[list[Path], typer.Argument(help="One or more .dag files.", show_default=False)]
WerrorOpt = Annotated[bool, typer.Option("--werror", help="Treat warnings as errors.")]
MaxOpsOpt = Annotated[
    int, typer.Option(min=1, help="Refuse to expand to more device operations than this.")
]
GpuOpt = Annotated[
    str | None,
    typer.Option("--gpu", help="GPU preset (a100, h100, h200); overrides the file's `gpu`."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a roofline parameter, e.g. --set matmul_efficiency=0.6 (repeatable;"
        " see docs/cost-models.md for the names).",
    ),
]
TableOpt = Annotated[
    Path | None,
    typer.Option("--cost-table", help="CSV of measured m,k,n,seconds for Get_Time."),
]
PluginOpt = Annotated[
    Path | None,
    typer.Option("--cost-plugin", help="Python file whose functions override cost terms."),
]
MatmulOnlyOpt = Annotated[
    bool, typer.Option("--matmul-only", help="Only matrix products cost time (as in the seed).")
]


class Symmetry(enum.StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


SymmetryOpt = Annotated[
    Symmetry,
    typer.Option(
        "--symmetry",
        help="Analyse one GPU of each set doing identical work: same results, faster."
        " auto: above 200,000 operations.",
    ),
]


class PhaseChoice(enum.StrEnum):
    prefill = "prefill"
    decode = "decode"


PhaseOpt = Annotated[
    PhaseChoice | None,
    typer.Option(
        "--phase",
        help="Decode and serve files: the phase to show, prefill (serve files only) or"
        " decode (the default).",
        show_default=False,
    ),
]
ContextOpt = Annotated[
    int | None,
    typer.Option(
        "--context",
        min=1,
        metavar="C",
        help="Decode phase: the context C (keys each new token attends over) of the step"
        " shown; default: a decode file's context, a serve file's last step (I+O-1).",
        show_default=False,
    ),
]


def select_phase(
    compiled: Any, phase: PhaseChoice | None, context: int | None, *, default: bool = True
) -> Any:
    """`compiled` with its program replaced by the phase --phase and --context ask for.

    A prefill file has only its prefill (--phase decode and --context are errors); a decode
    file only its decode step (--phase prefill is an error); a serve file both, decode by
    default at its last step's context. With `default` False and neither option given, the
    program is left as written (`lower --emit ir` prints the file's whole program).
    """
    from dataclasses import replace

    from dagc.analysis.serving import reported_context
    from dagc.ir.logical import Mode, decode_phase, prefill_phase

    program = compiled.program
    if program.mode is Mode.PREFILL:
        if phase is PhaseChoice.decode:
            usage_error(
                "--phase decode needs a decode or serve workload",
                "this file's workload is a prefill; set `mode = decode` or `mode = serve` in"
                " its workload",
            )
        if context is not None:
            usage_error(
                "--context needs a decode or serve workload",
                "this file's workload is a prefill, which has no context",
            )
        return compiled
    if phase is PhaseChoice.prefill:
        if program.mode is Mode.DECODE:
            usage_error(
                "--phase prefill needs a serve workload",
                "a decode workload is one decode step and has no prefill; drop --phase",
            )
        if context is not None:
            usage_error(
                "--context applies to the decode phase, not to --phase prefill",
                "drop --context, or use --phase decode",
            )
        return replace(compiled, program=prefill_phase(program))
    if not default and phase is None and context is None:
        return compiled
    chosen = context if context is not None else reported_context(program)
    return replace(compiled, program=decode_phase(program, chosen))


def symmetric(choice: Symmetry) -> bool | None:
    """The library's `symmetric` argument for a --symmetry choice (None: decide by size)."""
    return {Symmetry.auto: None, Symmetry.on: True, Symmetry.off: False}[choice]


def cost_options(
    gpu: str | None,
    settings: list[str] | None,
    table: Path | None,
    plugin: Path | None,
    matmul_only: bool,
) -> Any:
    """The library's CostOptions for the cost options of the command line."""
    from dagc.api import CostOptions

    return CostOptions(gpu, parse_settings(settings), table, plugin, matmul_only)


def parse_settings(items: list[str] | None) -> dict[str, float]:
    """`--set KEY=NUMBER` options as roofline overrides (a bad one is a usage error)."""
    overrides: dict[str, float] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            overrides[key.strip()] = float(value)
        except ValueError:
            usage_error(
                f"--set expects KEY=NUMBER, got `{item}`", "e.g. --set matmul_efficiency=0.6"
            )
    return overrides


def fail_input(error: DiagnosticError) -> NoReturn:
    """Print a problem with the input and exit 2."""
    typer.echo(error.render(), err=True)
    raise typer.Exit(2)


def run_library(action: Callable[[], T]) -> T:
    """Run library code, turning diagnostics into exit 2 and bugs into exit 1."""
    try:
        return action()
    except DiagnosticError as error:
        fail_input(error)
    except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
        raise  # a closed pipe is the reader's choice, not a bug (see `run`)
    except Exception as error:  # a bug in dagc, not in the user's input
        if os.environ.get("DAGC_DEBUG") == "1":
            traceback.print_exc()
        else:
            detail = " ".join(str(error).split())  # one line, whatever the message holds
            what = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
            typer.echo(
                f"dagc: internal error: {what} (a bug in dagc; rerun with DAGC_DEBUG=1 for a"
                f" traceback and report it at {ISSUES_URL})",
                err=True,
            )
        raise typer.Exit(1) from None


def usage_error(message: str, help: str) -> NoReturn:
    """A problem with the command line: the message and a fix, as diagnostics show them."""
    typer.echo(Diagnostic(Severity.ERROR, message, None, help=help).render(), err=True)
    raise typer.Exit(2)


def emit(output: Path | None, write: Callable[[TextIO], object]) -> None:
    """Write to stdout, or atomically to `output`."""
    if output is None:
        write(sys.stdout)
        return
    from dagc.outputs import write_text_atomically as write_atomically

    try:
        write_atomically(output, write)
    except OSError as error:
        help = (
            f"-o names a file, not a folder, e.g. `-o {output / 'report.txt'}`"
            if output.is_dir()
            else "check that the folder exists and is writable"
        )
        usage_error(f"cannot write {output}: {error.strerror}", help)


@contextmanager
def progress(label: str) -> Iterator[None]:
    """A spinner on stderr for work that lasts more than a second (terminals only)."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    status = Console(stderr=True).status(label)
    timer = threading.Timer(1.0, status.start)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        status.stop()


# -- warnings and --werror ------------------------------------------------------------------
#
# The one rule: a warning the compiler finds while checking a file becomes an error under
# --werror (the library adds ` [--werror]` and the command exits 2 with it). A warning found
# later (expanding, analysing, scheduling) is printed here as a warning; under --werror the
# command then prints WERROR_LINE and exits 2, before it writes anything to stdout or -o.


def print_warnings(
    diagnostics: Iterable[Diagnostic] = (),
    *,
    file: Path | None = None,
    messages: Iterable[str] = (),
) -> bool:
    """Print warnings on stderr, one after another; whether there was any.

    `diagnostics` are the compiler's and the expansion's, shown with their excerpt;
    `messages` are the analysis' warnings about `file` (memory, cost table), one line each.
    """
    warned = False
    for diagnostic in diagnostics:
        typer.echo(diagnostic.render(), err=True)
        warned = True
    for message in messages:
        typer.echo(f"{file}: warning: {message}", err=True)
        warned = True
    return warned


def stop_if_werror(warned: bool, werror: bool) -> None:
    """Under --werror, end the command (exit 2) when a warning has been printed."""
    if werror and warned:
        typer.echo(WERROR_LINE, err=True)
        raise typer.Exit(2)


def check_warnings(
    diagnostics: Iterable[Diagnostic],
    werror: bool,
    *,
    file: Path | None = None,
    messages: Iterable[str] = (),
) -> None:
    """Print the warnings, then apply --werror to them (see `stop_if_werror`)."""
    stop_if_werror(print_warnings(diagnostics, file=file, messages=messages), werror)
