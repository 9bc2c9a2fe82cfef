"""Loading a user's cost plugin (`--cost-plugin FILE.py`) with compiler-style errors.

A plugin is the user's Python and runs with the user's rights; dagc keeps its own promises
around it: whatever the plugin prints goes to stderr (stdout carries only dagc's output), and
anything it raises, `SystemExit` included, becomes exit 2 naming the plugin and the call.
Every value it returns must be a finite, non-negative number of seconds no larger than
MAX_TERM_SECONDS.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

from dagc.analysis.costs import (
    MAX_TERM_SECONDS,
    PLUGIN_NAMES,
    CostFunction,
    CostModel,
    PluginModel,
)
from dagc.diagnostics import DiagnosticBag, DiagnosticError
from dagc.inputs import COST_PLUGIN, read_input
from dagc.ir.terms import CostTerm, TermKind
from dagc.source import SourceFile, Span


def _fail(source: SourceFile, span: Span | None, message: str, help: str) -> DiagnosticError:
    bag = DiagnosticBag(source)
    bag.error(span, message, help=help)
    return DiagnosticError(bag.diagnostics)


def load_plugin(path: str | os.PathLike[str], base: CostModel) -> PluginModel:
    """Run the plugin file and wrap `base` with the cost functions it defines."""
    name = str(path)
    source = read_input(path, COST_PLUGIN)  # regular files only: a FIFO must not hang dagc
    try:
        code = compile(source.text, name, "exec")
    except SyntaxError as error:
        span = Span.point(error.lineno or 1, max(error.offset or 1, 1))
        message = f"the cost plugin has a syntax error: {error.msg}"
        raise _fail(source, span, message, "fix the Python syntax") from None
    namespace: dict[str, Any] = {"__name__": "dagc_cost_plugin", "__file__": name}
    try:
        with _stdout_to_stderr():
            exec(code, namespace)  # the user's own plugin, run with the user's rights
    except (Exception, SystemExit) as error:  # the user's code failed while loading
        message = f"the cost plugin failed while loading: {_describe(error)}"
        where = _line_in_plugin(error, name)
        raise _fail(source, where, message, "run it with python to see why") from None
    functions: dict[TermKind, CostFunction] = {}
    for kind, function_name in PLUGIN_NAMES.items():
        candidate = namespace.get(function_name)
        if callable(candidate):
            functions[kind] = candidate
    if not functions:
        names = ", ".join(PLUGIN_NAMES.values())
        message = "the cost plugin defines no cost function"
        raise _fail(source, Span.point(1, 1), message, f"define at least one of {names}")
    return CheckedPlugin(base, functions, name, source)


class CheckedPlugin(PluginModel):
    """A plugin whose results are checked: a failure or a bad number is the user's error."""

    def __init__(
        self,
        base: CostModel,
        functions: dict[TermKind, CostFunction],
        path: str,
        source: SourceFile,
    ) -> None:
        super().__init__(base, functions, path)
        self.source = source

    def term_seconds(self, term: CostTerm) -> float:
        function: CostFunction | None = self.functions.get(term.kind)
        if function is None:
            return self.base.term_seconds(term)
        call = f"{PLUGIN_NAMES[term.kind]}({', '.join(str(a) for a in term.args)})"
        try:
            with _stdout_to_stderr():
                result = self.call(function, term)
        except (Exception, SystemExit) as error:  # the user's function failed
            message = f"{call} raised {_describe(error)}"
            hint = "a cost function must return seconds for every term"
            where = _line_in_plugin(error, self.source.path)
            raise _fail(self.source, where, message, hint) from None
        value = self._seconds(call, result)
        if not math.isfinite(value) or value < 0:
            hint = "a cost function must return a finite, non-negative number of seconds"
            raise _fail(self.source, None, f"{call} returned {value}", hint)
        if value > MAX_TERM_SECONDS:
            hint = (
                f"one operation taking more than {MAX_TERM_SECONDS:.0e} s (about 30 years) is"
                " taken for a unit mistake: return seconds"
            )
            raise _fail(self.source, None, f"{call} returned {value:g} seconds", hint)
        return value

    def _seconds(self, call: str, result: Any) -> float:
        """`result` as a float, or the user's error saying why it is not a number."""
        try:
            if isinstance(result, bool | str | bytes):  # float() would accept "1.5" or True
                raise TypeError
            with _stdout_to_stderr():
                return float(result)
        except (Exception, SystemExit) as error:  # an int too large, a failing __float__, ...
            hint = "a cost function must return a number of seconds (int or float)"
            shown = _short_repr(result)
            why = "" if isinstance(error, TypeError | ValueError) else f" ({_describe(error)})"
            message = f"{call} returned {shown}, not a number{why}"
            raise _fail(self.source, None, message, hint) from None


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """The plugin's prints go to stderr: stdout carries only dagc's output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _line_in_plugin(error: BaseException, path: str) -> Span | None:
    """The plugin's line where `error` was raised (its deepest frame in the plugin file)."""
    line = None
    trace = error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == path:
            line = trace.tb_lineno
        trace = trace.tb_next
    return Span.point(line, 1) if line else None


def _describe(error: BaseException) -> str:
    """`SystemExit: 3`, `ValueError: bad`: the exception in one line."""
    detail = " ".join(str(error).split())
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a __repr__ that fails too
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else f"{text[:57]}..."
