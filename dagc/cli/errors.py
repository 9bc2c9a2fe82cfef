"""Command-line usage errors printed like every other dagc error.

Click and typer report an unknown command, an unknown option, a missing argument or a bad
option value in a rich box ("Did you mean" twice, for an unknown command). dagc's own
errors are plain text: `dagc: error: ...` and a `help:` line. The group class below catches
click's exceptions before typer draws them and prints them in that one style, exit 2.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import click
from typer.core import TyperGroup

from dagc.diagnostics import Diagnostic, Severity, closest, one_of

USAGE_EXIT = 2
# `dagc` alone: click 8.2+ raises this to show the help (older versions show it and exit).
_NO_ARGUMENTS: tuple[type[click.ClickException], ...] = tuple(
    kind for kind in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if kind is not None
)


class UsageProblem(click.UsageError):
    """A usage error whose message and help dagc has written itself."""

    def __init__(self, message: str, help: str, ctx: click.Context | None = None) -> None:
        super().__init__(message, ctx)
        self.help = help


class ReaderGone(Exception):
    """stdout's reader closed the pipe; not an OSError, so that click does not catch it."""


class DagcGroup(TyperGroup):
    """dagc's top-level command group: usage errors in plain text, like dagc's other errors."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run dagc; report click's exceptions in dagc's style rather than typer's boxes."""
        try:
            # Not standalone, so click's exceptions reach this frame instead of typer's
            # printer; a command's `typer.Exit(n)` comes back as the return value n.
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGUMENTS as error:
            # The help, on stdout, and the exit status of misuse. Typer's rich help has
            # printed itself while the error was built; a plain help is the error's message.
            if error.format_message().strip():
                click.echo(error.format_message())
            return _exit(USAGE_EXIT, standalone_mode)
        except click.ClickException as error:
            click.echo(render_usage_error(error), err=True)
            return _exit(USAGE_EXIT, standalone_mode)
        except click.Abort:
            click.echo("dagc: aborted", err=True)
            return _exit(1, standalone_mode)
        except ReaderGone:
            # The reader stopped early (`dagc lower ... | head`): not dagc's failure. The rest
            # of stdout goes nowhere, so Python's flush at exit cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return _exit(0, standalone_mode)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a closed stdout becomes ReaderGone, which click leaves alone
        (click itself would turn it into exit 1)."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError as error:
            raise ReaderGone from error

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command `args` names; an unknown name is one error with one suggestion."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise UsageProblem(f"unknown command `{name}`", self._command_help(ctx, name), ctx)
        return super().resolve_command(ctx, args)

    def _command_help(self, ctx: click.Context, name: str) -> str:
        visible = [n for n in self.list_commands(ctx) if not self._is_hidden(ctx, n)]
        meant = closest(name.lower(), visible)
        if meant:
            return f"did you mean `{meant}`?"
        return f"the commands are {one_of(visible)}; `dagc -h` describes them"

    def _is_hidden(self, ctx: click.Context, name: str) -> bool:
        command = self.get_command(ctx, name)
        return command is None or command.hidden


def _exit(code: int, standalone_mode: bool) -> int:
    if standalone_mode:
        sys.exit(code)
    return code


def render_usage_error(error: click.ClickException) -> str:
    """`dagc: error: MESSAGE` and its help, as dagc's other errors without a file show."""
    message, help = _describe(error)
    return Diagnostic(Severity.ERROR, message, None, help=help).render()


def _describe(error: click.ClickException) -> tuple[str, str | None]:
    """The message and help for one of click's exceptions."""
    ctx = getattr(error, "ctx", None)
    command = ctx.command_path if ctx is not None else "dagc"
    describe_options = f"`{command} -h` describes its options"
    if isinstance(error, UsageProblem):
        return error.message, error.help
    if isinstance(error, click.NoSuchOption):
        meant = closest(error.option_name, error.possibilities or _options_of(ctx))
        hint = f"did you mean `{meant}`?" if meant else describe_options
        return f"unknown option `{error.option_name}` for `{command}`", hint
    if isinstance(error, click.MissingParameter) and error.param is not None:
        what = "option" if isinstance(error.param, click.Option) else "argument"
        name = _param_name(error.param, ctx)
        return f"`{command}` needs the {what} {name}", _usage_help(ctx)
    if isinstance(error, click.BadParameter):
        where = f" for {_param_name(error.param, ctx)}" if error.param is not None else ""
        return f"invalid value{where}: {_plain(error.message)}", describe_options
    if isinstance(error, click.BadOptionUsage) and "requires an argument" in error.message:
        return _plain(error.message), f"write its value after it: `{error.option_name} VALUE`"
    extra = re.fullmatch(r"Got unexpected extra (arguments?) \((.*)\)", error.message)
    if extra:  # click's wording, "(b c)", reads as if the parentheses were typed
        words = ", ".join(f"`{word}`" for word in extra.group(2).split())
        return f"unexpected extra {extra.group(1)} {words}", _usage_help(ctx)
    if isinstance(error, click.UsageError):
        return _plain(error.format_message()), _usage_help(ctx)
    return _plain(error.format_message()), None


def _param_name(param: click.Parameter, ctx: click.Context | None) -> str:
    """`--emit` for an option, `FILE` for an argument."""
    if isinstance(param, click.Option):
        return f"`{max(param.opts, key=len)}`"
    assert ctx is not None  # click raises parameter errors with their context
    return f"`{param.make_metavar(ctx)}`"


def _options_of(ctx: click.Context | None) -> list[str]:
    if ctx is None:
        return []
    return [opt for param in ctx.command.params for opt in getattr(param, "opts", [])]


def _usage_help(ctx: click.Context | None) -> str:
    if ctx is None:
        return "`dagc COMMAND -h` describes the options of a command"
    usage = " ".join([ctx.command_path, *ctx.command.collect_usage_pieces(ctx)])
    return f"usage: {usage} (`{ctx.command_path} -h` for more)"


def _plain(text: str) -> str:
    """Click's sentence in dagc's style: `x` for 'x', lower case, no final full stop."""
    text = re.sub(r"'([^']*)'", r"`\1`", text.strip()).removesuffix(".")
    return text[:1].lower() + text[1:]
