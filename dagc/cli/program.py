"""The `dagc` program: the typer app, its commands in the order `dagc -h` lists them, and
the console-script entry point."""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import MutableMapping
from typing import Annotated, Any

import typer

import dagc
from dagc.cli.errors import DagcGroup

# The commands in the order `dagc -h` lists them: (name, module of dagc.cli, function,
# options of `app.command`).
_COMMANDS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("check", "check", "check", {}),
    ("lower", "lower", "lower", {}),
    ("analyze", "analyze", "analyze", {}),
    # British spelling, as in dagc's own help text; hidden so `dagc -h` lists each command once.
    ("analyse", "analyze", "analyze", {"hidden": True, "help": "Another name for `analyze`."}),
    ("formula", "formula", "formula", {}),
    ("compare", "analyze", "compare", {}),
    ("profile", "profile", "profile", {}),
    ("render", "pictures", "render", {}),
    ("timeline", "pictures", "timeline", {}),
    ("new", "new", "new", {}),
    ("search", "search", "search", {}),
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dagc {dagc.__version__}")
        raise typer.Exit()


def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Compile and analyse plans of how a large language model runs on many GPUs."""


def make_app(only: str | None = None) -> typer.Typer:
    """The typer app: every command, or only the command named `only`.

    Typer turns each command's signature into click's options when the app runs, about 3 ms
    a command; `run` builds only the command it is asked for (see docs/performance.md).
    """
    program = typer.Typer(
        name="dagc",
        cls=DagcGroup,  # usage errors in dagc's plain style, not typer's boxes
        help="Compile and analyse plans of how a large language model runs on many GPUs.\n\n"
        + "\n\n".join(dagc.SCOPE),
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    # The callback keeps dagc a group even with one command (typer makes a lone command
    # without a callback the program itself).
    program.callback()(main)
    for name, module, function, options in _COMMANDS:
        if only is None or name == only:
            command = getattr(importlib.import_module(f"dagc.cli.{module}"), function)
            program.command(name, **options)(command)
    return program


def __getattr__(name: str) -> Any:
    """`app`, every command, built on first use (`run` rarely needs it)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    everything = make_app()
    globals()["app"] = everything
    return everything


def run() -> None:
    """Console-script entry point.

    Output failures end as a Unix tool's would: a reader that stops early (`| head`) ends
    dagc quietly with status 0; a failed write (a full disk) is one line and status 2.
    """
    code: Any = 0
    arguments = sys.argv[1:]
    _quiet_blas(arguments, os.environ)
    # `dagc NAME ...`: options before NAME would be the group's (-h, --version), so a first
    # argument that names a command means that command alone is run.
    named = arguments[0] if arguments and arguments[0] in _NAMES else None
    try:
        make_app(named)()
    except SystemExit as done:
        code = done.code
    except OSError as error:
        code = _output_failure(error)
    try:
        sys.stdout.flush()  # buffered output fails here, not at interpreter shutdown
    except OSError as error:
        code = _output_failure(error)
    sys.exit(code)


_NAMES = frozenset(name for name, *_ in _COMMANDS)


def _quiet_blas(arguments: list[str], environment: MutableMapping[str, str]) -> None:
    """One OpenBLAS thread, unless the user chose or the command is `profile`.

    numpy starts OpenBLAS's thread pool when it loads, a thread a core, and they spin
    a while: about 40 ms of CPU on a 2-core machine, and that much more of the wall time
    when the cores are busy. No dagc command but `profile` (which times matrix products)
    calls BLAS, so they would spin for nothing.
    """
    if arguments[:1] != ["profile"]:
        environment.setdefault("OPENBLAS_NUM_THREADS", "1")


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
