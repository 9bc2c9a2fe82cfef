"""The `dagc` command line: parses options and calls the library, nothing more.

stdout carries only what was asked for; diagnostics, summaries and progress go to stderr.
Exit codes: 0 success, 2 a problem with the input or the options, 1 an internal error.

One module per command or family of commands (check, lower, analyze and compare, formula,
profile, render and timeline, new); `shared` holds what they have in common, among it the one
rule for warnings and --werror; `errors` prints click's usage errors in dagc's style;
`program` assembles the app and holds the console-script entry point `run`.
"""

from typing import Any

from dagc.cli.program import run
from dagc.cli.shared import ISSUES_URL


def __getattr__(name: str) -> Any:
    """`app`, built on first use: `run` builds only the command it runs."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from dagc.cli import program

    return program.app


__all__ = ["ISSUES_URL", "app", "run"]
