"""Loading a user's cost plugin (`--cost-plugin FILE.py`) with compiler-style errors."""

from __future__ import annotations

import math
import os
import runpy
from pathlib import Path

from dagc.analysis.costs import PLUGIN_NAMES, CostFunction, CostModel, PluginModel
from dagc.diagnostics import DiagnosticBag, DiagnosticError
from dagc.ir.terms import CostTerm, TermKind
from dagc.source import SourceFile, Span


def _fail(source: SourceFile, span: Span | None, message: str, help: str) -> DiagnosticError:
    bag = DiagnosticBag(source)
    bag.error(span, message, help=help)
    return DiagnosticError(bag.diagnostics)


def load_plugin(path: str | os.PathLike[str], base: CostModel) -> PluginModel:
    """Run the plugin file and wrap `base` with the cost functions it defines."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _fail(
            SourceFile(name, ""),
            None,
            f"cannot read the cost plugin: {error}",
            "check the path given to --cost-plugin",
        ) from None
    source = SourceFile(name, text)
    try:
        namespace = runpy.run_path(name, run_name="dagc_cost_plugin")
    except SyntaxError as error:
        span = Span.point(error.lineno or 1, max(error.offset or 1, 1))
        message = f"the cost plugin has a syntax error: {error.msg}"
        raise _fail(source, span, message, "fix the Python syntax") from None
    except Exception as error:  # the user's code failed while loading
        message = f"the cost plugin failed while loading: {type(error).__name__}: {error}"
        raise _fail(source, None, message, "run it with python to see why") from None
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
            result = self.call(function, term)
        except Exception as error:  # the user's function failed
            message = f"{call} raised {type(error).__name__}: {error}"
            hint = "a cost function must return seconds for every term"
            raise _fail(self.source, None, message, hint) from None
        try:
            if isinstance(result, bool | str | bytes):  # float() would accept "1.5" or True
                raise TypeError
            value = float(result)
        except (TypeError, ValueError):
            hint = "a cost function must return a number of seconds (int or float)"
            message = f"{call} returned {result!r}, not a number"
            raise _fail(self.source, None, message, hint) from None
        if not math.isfinite(value) or value < 0:
            hint = "a cost function must return a finite, non-negative number of seconds"
            raise _fail(self.source, None, f"{call} returned {value}", hint)
        return value
