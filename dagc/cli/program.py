"""The `dagc` program: the typer app, its commands in the order `dagc -h` lists them, and
the console-script entry point."""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated, Any

import typer

import dagc
from dagc.cli import analyze, check, formula, lower, new, pictures, profile, search
from dagc.cli.errors import DagcGroup

app = typer.Typer(
    name="dagc",
    cls=DagcGroup,  # usage errors in dagc's plain style, not typer's boxes
    help="Compile and analyse plans of how a large language model runs on many GPUs.\n\n"
    + "\n\n".join(dagc.SCOPE),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dagc {dagc.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Compile and analyse plans of how a large language model runs on many GPUs."""


app.command()(check.check)
app.command()(lower.lower)
app.command()(analyze.analyze)
# British spelling, as in dagc's own help text; hidden so `dagc -h` lists each command once.
app.command("analyse", hidden=True, help="Another name for `analyze`.")(analyze.analyze)
app.command()(formula.formula)
app.command()(analyze.compare)
app.command()(profile.profile)
app.command("render")(pictures.render)
app.command("timeline")(pictures.timeline)
app.command("new")(new.new)
app.command("search")(search.search)


def run() -> None:
    """Console-script entry point.

    Output failures end as a Unix tool's would: a reader that stops early (`| head`) ends
    dagc quietly with status 0; a failed write (a full disk) is one line and status 2.
    """
    code: Any = 0
    try:
        app()
    except SystemExit as done:
        code = done.code
    except OSError as error:
        code = _output_failure(error)
    try:
        sys.stdout.flush()  # buffered output fails here, not at interpreter shutdown
    except OSError as error:
        code = _output_failure(error)
    sys.exit(code)


# A write to stdout can fail with these; any other OSError is a bug and is raised.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _output_failure(error: OSError) -> int:
    """The exit status for a failed write to stdout, after saying what happened."""
    if not isinstance(error, BrokenPipeError) and error.errno not in _OUTPUT_ERRNOS:
        raise error
    # Nothing more can reach the reader: send the rest of stdout nowhere, so that Python's
    # own flush at exit does not fail a second time.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(error, BrokenPipeError):
        return 0
    typer.echo(f"dagc: error: cannot write the output: {error.strerror}", err=True)
    return 2
