"""Parse .dag text into the AST, turning lark's errors into dagc diagnostics.

The grammar lives in grammar/dag.lark (shipped inside the wheel as dagc/grammar/dag.lark).
Syntax errors are recovered from line by line, so one run reports several of them.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr

from dagc.diagnostics import DiagnosticBag, Note
from dagc.frontend import ast
from dagc.source import SourceFile, Span

MAX_SYNTAX_ERRORS = 20

# How users call the terminals that are not plain strings.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "_NL": "a new line",
    "LAYERS": "`layers`",
    "$END": "the end of the file",
}


def grammar_text() -> str:
    """The text of dag.lark: from the installed package, else from the source tree."""
    packaged = resources.files("dagc").joinpath("grammar/dag.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "dag.lark").read_text(
        encoding="utf-8"
    )


@functools.cache
def _lark() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


def parse(source: SourceFile, bag: DiagnosticBag) -> ast.File | None:
    """Parse `source`; syntax errors go to `bag` and give None."""
    text = source.text
    failed_lines: set[int] = set()
    tree = None
    while len(failed_lines) < MAX_SYNTAX_ERRORS:
        try:
            tree = _lark().parse(text)
            break
        except UnexpectedInput as error:
            line = _report_syntax_error(source, bag, error)
            if not _can_skip_line(text, line, failed_lines):
                return None
            failed_lines.add(line)
            text = _blank_line(text, line)
    if tree is None or failed_lines:
        return None
    try:
        return _ToAst().transform(tree)  # type: ignore[no-any-return]
    except VisitError as error:  # never let lark's wrapper escape: show the real cause
        raise error.orig_exc from None


def _can_skip_line(text: str, line: int, failed: set[int]) -> bool:
    """A line can be blanked to look for more errors unless it opens or closes a body."""
    lines = text.splitlines()
    if line in failed or not 1 <= line <= len(lines):
        return False
    content = lines[line - 1].split("#", 1)[0]
    return "{" not in content and "}" not in content


def _blank_line(text: str, line: int) -> str:
    lines = text.splitlines(keepends=True)
    ending = "\n" if lines[line - 1].endswith("\n") else ""
    lines[line - 1] = ending
    return "".join(lines)


def _report_syntax_error(source: SourceFile, bag: DiagnosticBag, error: UnexpectedInput) -> int:
    """Record one syntax error; return the line it is on."""
    if isinstance(error, UnexpectedCharacters):
        span = Span.point(error.line, error.column)
        char = source.line_text(error.line)[error.column - 1 : error.column] or error.char
        bag.error(
            span,
            f"unexpected character `{char}`",
            help="names use letters, digits and `_`; numbers use digits and `_`;"
            " comments start with `#`",
        )
        return error.line
    assert isinstance(error, UnexpectedToken)
    token = error.token
    expected = sorted(_describe_terminal(name) for name in error.expected)
    if token.type == "$END":
        span = source.end_span()
        notes = _unclosed_brace_notes(source)
        if notes:
            message = "unexpected end of file: a `}` is missing"
            help = f"close the body opened on line {notes[-1].span.line} with `}}`"  # type: ignore[union-attr]
        else:
            message = f"unexpected end of file; expected {_alternatives(expected)}"
            help = "finish the statement or remove it"
        bag.error(span, message, help=help, notes=notes)
        return span.line
    width = max(1, len(str(token.value))) if token.type != "_NL" else 1
    span = Span.point(token.line or 1, token.column or 1, width)
    bag.error(
        span,
        f"unexpected {_describe_token(token)}; expected {_alternatives(expected)}",
        help=_token_help(error.expected),
    )
    return span.line


def _describe_token(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    return f"`{token.value}`"


def _token_help(expected: set[str]) -> str | None:
    if expected == {"EQUAL"}:
        return "settings are written `key = value`"
    if "LBRACE" in expected:
        return "a statement's body goes in `{ ... }`"
    if "RBRACE" in expected:
        return "put one item per line, or separate items with `;`"
    return None


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name
    if isinstance(pattern, PatternStr):
        return f"`{pattern.value}`"
    return name.lower()


def _alternatives(names: list[str]) -> str:
    unique = sorted(set(names))
    if len(unique) == 1:
        return unique[0]
    return ", ".join(unique[:-1]) + " or " + unique[-1]


def _unclosed_brace_notes(source: SourceFile) -> list[Note]:
    """Notes pointing at every `{` that is never closed."""
    open_braces: list[Span] = []
    for number, line in enumerate(source.text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        for match in re.finditer(r"[{}]", code):
            if match.group() == "{":
                open_braces.append(Span.point(number, match.start() + 1))
            elif open_braces:
                open_braces.pop()
    return [Note("this `{` is never closed", span) for span in open_braces]


def _span(meta: Any) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(token: Token) -> Span:
    assert token.line is not None and token.column is not None
    assert token.end_line is not None and token.end_column is not None
    return Span(token.line, token.column, token.end_line, token.end_column)


def _int(token: Token) -> int:
    return int(str(token).replace("_", ""))


def _ident(token: Token) -> ast.Ident:
    return ast.Ident(str(token), _token_span(token))


@v_args(inline=True, meta=True)
class _ToAst(Transformer[Token, Any]):
    """Builds ast nodes from lark's tree (rules and aliases of dag.lark)."""

    def start(self, meta: Any, *statements: Any) -> ast.File:
        return ast.File(
            models=tuple(
                s for s in statements if isinstance(s, ast.Section) and s.keyword == "model"
            ),
            workloads=tuple(
                s for s in statements if isinstance(s, ast.Section) and s.keyword == "workload"
            ),
            devices=tuple(s for s in statements if isinstance(s, ast.DevicesDecl)),
            layers=tuple(s for s in statements if isinstance(s, ast.LayersDecl)),
        )

    def model(self, meta: Any, name: Token, *settings: ast.Setting) -> ast.Section:
        return ast.Section("model", _ident(name), settings, _span(meta))

    def workload(self, meta: Any, *settings: ast.Setting) -> ast.Section:
        return ast.Section("workload", None, settings, _span(meta))

    def devices(self, meta: Any, *items: Any) -> ast.DevicesDecl:
        groups = tuple(i for i in items if isinstance(i, ast.GroupDecl))
        settings = tuple(i for i in items if isinstance(i, ast.Setting))
        return ast.DevicesDecl(groups, settings, _span(meta))

    def group(self, meta: Any, name: Token, kind: Token, *members: Any) -> ast.GroupDecl:
        kept = tuple(m for m in members if m is not None)
        return ast.GroupDecl(_ident(name), _ident(kind), kept, _span(meta))

    def span_member(self, meta: Any, first: Token, last: Token) -> ast.Member:
        return ast.Member(_int(first), _int(last), _span(meta))

    def single_member(self, meta: Any, only: Token) -> ast.Member:
        return ast.Member(_int(only), _int(only), _span(meta))

    def layers(self, meta: Any, _keyword: Token, *parts: Any) -> ast.LayersDecl:
        (first, last, range_span), groups, *rest = parts
        options = tuple(p for p in rest if isinstance(p, ast.Setting))
        blocks = tuple(p for p in rest if isinstance(p, ast.BlockDecl))
        return ast.LayersDecl(
            first, last, range_span, tuple(groups or ()), options, blocks, _span(meta)
        )

    def layer_range(self, meta: Any, first: Token, last: Token | None) -> tuple[int, int, Span]:
        end = last if last is not None else first
        return (_int(first), _int(end), _span(meta))

    def group_list(self, meta: Any, *names: Token) -> tuple[ast.Ident, ...]:
        return tuple(_ident(n) for n in names)

    def block(self, meta: Any, kind: Token, group: Token | None, *options: Any) -> ast.BlockDecl:
        on = _ident(group) if group is not None else None
        return ast.BlockDecl(_ident(kind), on, options, _span(meta))

    def keyed_option(self, meta: Any, key: Token, value: ast.Value) -> ast.Setting:
        return ast.Setting(_ident(key), value)

    def flag_option(self, meta: Any, key: Token) -> ast.Setting:
        return ast.Setting(_ident(key), None)

    def setting(self, meta: Any, key: Token, value: ast.Value) -> ast.Setting:
        return ast.Setting(_ident(key), value)

    def int_value(self, meta: Any, token: Token) -> ast.Value:
        return ast.Value(_int(token), _token_span(token))

    def negative_value(self, meta: Any, token: Token) -> ast.Value:
        return ast.Value(-_int(token), _span(meta))

    def float_value(self, meta: Any, token: Token) -> ast.Value:
        return ast.Value(float(str(token).replace("_", "")), _token_span(token))

    def name_value(self, meta: Any, token: Token) -> ast.Value:
        return ast.Value(str(token), _token_span(token))
