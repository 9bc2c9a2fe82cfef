"""Printing formulas: text (the seed's notation), Python, LaTeX and a JSON tree."""

from __future__ import annotations

import json
from typing import Any, TextIO

from dagc.analysis.formula import Add, Call, Expr, Max, Scale, Zero

LINE_WIDTH = 88


def _precedence(expr: Expr) -> int:
    return {Add: 1, Scale: 2}.get(type(expr), 3)


# -- text ---------------------------------------------------------------------------------


def text(expr: Expr, *, symbolic: bool = False, name: str = "T", width: int = LINE_WIDTH) -> str:
    """`T = 4 × [3 × Get_Time(1024×2048, 4096, 512) + ...]`, one term a line when long."""
    lines = _text_lines(expr, symbolic, len(name) + 3, width)
    return f"{name} = " + "\n".join(lines)


def _text_lines(expr: Expr, symbolic: bool, used: int, width: int = LINE_WIDTH) -> list[str]:
    """The expression as lines; continuation lines are indented by 4 per level."""
    flat = _text_flat(expr, symbolic)
    if used + len(flat) <= width or isinstance(expr, Call):
        return [flat]
    if isinstance(expr, Scale) and isinstance(expr.expr, Add):
        return [f"{expr.factor} × [", *_items(expr.expr.items, " +", symbolic, width), "]"]
    if isinstance(expr, Scale):
        head, *rest = _text_lines(expr.expr, symbolic, used + len(str(expr.factor)) + 3, width)
        return [f"{expr.factor} × {head}", *rest]
    if isinstance(expr, Max):
        return ["max(", *_items(expr.items, ",", symbolic, width), ")"]
    if isinstance(expr, Add):
        lines: list[str] = []
        for index, item in enumerate(expr.items):
            part = _text_lines(item, symbolic, used if index == 0 else 0, width)
            if index < len(expr.items) - 1:
                part[-1] += " +"
            lines += part
        return lines
    return [flat]


def _items(items: tuple[Expr, ...], separator: str, symbolic: bool, width: int) -> list[str]:
    lines: list[str] = []
    for index, item in enumerate(items):
        part = ["    " + line for line in _text_lines(item, symbolic, 4, width)]
        if index < len(items) - 1:
            part[-1] += separator
        lines += part
    return lines


def _text_flat(expr: Expr, symbolic: bool) -> str:
    if isinstance(expr, Call):
        return expr.term.pretty(symbolic=symbolic, times="*" if symbolic else "×")
    if isinstance(expr, Scale):
        inner = _text_flat(expr.expr, symbolic)
        return (
            f"{expr.factor} × [{inner}]"
            if isinstance(expr.expr, Add)
            else f"{expr.factor} × {inner}"
        )
    if isinstance(expr, Add):
        return " + ".join(_text_flat(e, symbolic) for e in expr.items)
    if isinstance(expr, Max):
        return "max(" + ", ".join(_text_flat(e, symbolic) for e in expr.items) + ")"
    return "0"


# -- Python -------------------------------------------------------------------------------


def python(expr: Expr) -> str:
    """One Python expression: numbers, +, *, max(...) and the cost functions by name."""
    if isinstance(expr, Call):
        return str(expr.term)
    if isinstance(expr, Scale):
        inner = python(expr.expr)
        return (
            f"{expr.factor} * ({inner})"
            if isinstance(expr.expr, Add)
            else f"{expr.factor} * {inner}"
        )
    if isinstance(expr, Add):
        return " + ".join(python(e) for e in expr.items)
    if isinstance(expr, Max):
        return "max(" + ", ".join(python(e) for e in expr.items) + ")"
    return "0"


# -- LaTeX --------------------------------------------------------------------------------


def latex(expr: Expr, *, symbolic: bool = False, name: str = "T") -> str:
    """The formula for a LaTeX math environment."""
    return f"{name} = {_latex(expr, symbolic)}"


def _latex(expr: Expr, symbolic: bool) -> str:
    if isinstance(expr, Call):
        pretty = expr.term.pretty(symbolic=symbolic, times=r" \times ")
        name, _, rest = pretty.partition("(")
        return r"\mathrm{" + name.replace("_", r"\_") + "}(" + rest.replace("_", r"\_")
    if isinstance(expr, Scale):
        inner = _latex(expr.expr, symbolic)
        if isinstance(expr.expr, Add):
            inner = r"\left[" + inner + r"\right]"
        return f"{expr.factor} \\times {inner}"
    if isinstance(expr, Add):
        return " + ".join(_latex(e, symbolic) for e in expr.items)
    if isinstance(expr, Max):
        return r"\max\left(" + ", ".join(_latex(e, symbolic) for e in expr.items) + r"\right)"
    return "0"


# -- JSON ---------------------------------------------------------------------------------


def tree(expr: Expr) -> dict[str, Any]:
    """The expression as a JSON-ready tree."""
    if isinstance(expr, Call):
        node: dict[str, Any] = {
            "op": "call",
            "function": expr.term.kind.value,
            "args": list(expr.term.args),
        }
        if expr.term.nodes > 1:
            node["nodes"] = expr.term.nodes
        node["text"] = expr.term.pretty()
        return node
    if isinstance(expr, Scale):
        return {"op": "scale", "factor": expr.factor, "arg": tree(expr.expr)}
    if isinstance(expr, Add):
        return {"op": "add", "args": [tree(e) for e in expr.items]}
    if isinstance(expr, Max):
        return {"op": "max", "args": [tree(e) for e in expr.items]}
    assert isinstance(expr, Zero)
    return {"op": "zero"}


def write_json(expr: Expr, stream: TextIO, *, exact: bool, notes: list[str]) -> None:
    """The formula as JSON: the tree plus its text and Python forms."""
    document = {
        "format": "dagc-formula",
        "version": 1,
        "exact": exact,
        "notes": notes,
        "text": text(expr),
        "python": python(expr),
        "expression": tree(expr),
    }
    json.dump(document, stream, indent=2, sort_keys=True, ensure_ascii=False)
    stream.write("\n")
