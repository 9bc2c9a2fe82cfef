"""Parse .dag text into the AST, turning lark's errors into dagc diagnostics.

The grammar lives in grammar/dag.lark (shipped inside the wheel as dagc/grammar/dag.lark).
The parser runs from dagc/frontend/dag_lalr.py, which lark's standalone tool generates from
the grammar (tools/generate_parser.py; a test checks that it is up to date): no lark import,
no table building and no cache at run time. Syntax errors are recovered from line by line,
so one run reports several of them.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from dagc.diagnostics import DiagnosticBag, Note
from dagc.frontend import ast
from dagc.frontend.dag_lalr import (
    Lark,
    Lark_StandAlone,
    PatternStr,
    Token,
    Transformer,
    UnexpectedCharacters,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
    v_args,
)
from dagc.source import SourceFile, Span

MAX_SYNTAX_ERRORS = 20

# How users call the terminals that are not plain strings.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "DIGIT_NAME": "a name",  # `1f1b`
    "INT": "an integer",
    "FLOAT": "a number",
    "_NL": "a new line",
    "LAYERS": "`layers`",
    "$END": "the end of the file",
}


def grammar_text() -> str:
    """The text of dag.lark: from the installed package, else from the source tree."""
    package = Path(__file__).resolve().parents[1]
    # A wheel ships it inside the package; a source checkout keeps it at the top level.
    # (Plain paths rather than importlib.resources: its import costs ~7 ms at every start.)
    for candidate in (package / "grammar" / "dag.lark", package.parent / "grammar" / "dag.lark"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise FileNotFoundError("dag.lark is missing from the dagc installation")


@functools.cache
def _lark() -> Lark:
    """The parser, from the generated tables (its options are baked into them: LALR(1),
    contextual lexer, positions propagated, placeholders for missing optionals)."""
    parser: Lark = Lark_StandAlone()  # type: ignore[no-untyped-call]
    return parser


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
    errors = len(bag.errors)
    try:
        file: ast.File = _ToAst(bag).transform(tree)
    except VisitError as error:  # never let lark's wrapper escape: show the real cause
        raise error.orig_exc from None
    return file if len(bag.errors) == errors else None


def _can_skip_line(text: str, line: int, failed: set[int]) -> bool:
    """A line can be blanked to look for more errors unless it opens or closes a body."""
    lines = text.split("\n")  # lines as lark counts them (never str.splitlines)
    if line in failed or not 1 <= line <= len(lines):
        return False
    content = lines[line - 1].split("#", 1)[0]
    return "{" not in content and "}" not in content


def _blank_line(text: str, line: int) -> str:
    lines = text.split("\n")
    lines[line - 1] = ""
    return "\n".join(lines)


def _report_syntax_error(source: SourceFile, bag: DiagnosticBag, error: UnexpectedInput) -> int:
    """Record one syntax error; return the line it is on."""
    if isinstance(error, UnexpectedCharacters):
        span = Span.point(error.line, error.column)
        char = source.line_text(error.line)[error.column - 1 : error.column] or error.char
        bag.error(
            span,
            f"unexpected character {_describe_char(char)}",
            help="names use letters, digits and `_`; numbers use digits and `_`;"
            " comments start with `#`",
        )
        return error.line
    assert isinstance(error, UnexpectedToken)
    token = error.token
    accepted = _accepted_terminals(error)
    expected = sorted(_describe_terminal(name) for name in accepted)
    if token.type != "$END" and token.line is not None:
        line: int = token.line
        if _report_unclosed_body(source, bag, line):
            return line
        if token.type == "MINUS" and "`..`" in expected:
            return _report_dash_range(source, bag, token)
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
        help=_token_help(accepted),
    )
    return span.line


# Words that start a statement at the top level of a file.
_STATEMENT_KEYWORDS = ("model", "workload", "training", "devices", "layers")


def _report_unclosed_body(source: SourceFile, bag: DiagnosticBag, line: int) -> bool:
    """Report a body left open before a new statement on `line`; False if that is not it.

    Without its `}`, the next statement is read as part of the body, and lark's error
    (`unexpected devices`, or `expected =` for `layers 0..3`) blames the wrong line.
    """
    code = source.line_text(line).split("#", 1)[0]
    start = re.match(r"\s*(model|workload|training|devices|layers)\b(?!\s*=)", code)
    if start and start.group(1) == "layers" and not re.search(r"\{|\.\.|\bon\b", code):
        start = None  # `layers 4` in a model: a setting without its `=`, not a statement
    open_braces = _open_braces(source, before_line=line)
    if start is None or not open_braces:
        return False
    brace = open_braces[-1]
    what = _body_owner(source, brace)
    bag.error(
        brace,
        f"{what} is not closed",
        help=f"add `}}` at the end of {what}, before line {line}",
        notes=[Note(f"`{start.group(1)}` starts a new statement here", _word_span(line, start))],
    )
    return True


def _word_span(line: int, match: re.Match[str]) -> Span:
    return Span.point(line, match.start(1) + 1, len(match.group(1)))


def _body_owner(source: SourceFile, brace: Span) -> str:
    """`the `workload` section`: what the body opened by `brace` belongs to."""
    header = source.line_text(brace.line)[: brace.column - 1].split("#", 1)[0]
    line = brace.line
    while not header.strip() and line > 1:  # `{` on a line of its own: the header is above
        line -= 1
        header = source.line_text(line).split("#", 1)[0]
    word = header.split()[0] if header.split() else ""
    if word == "layers":
        return "the `layers` statement"
    if word in _STATEMENT_KEYWORDS:
        return f"the `{word}` section"
    return "the body opened here"


def _report_dash_range(source: SourceFile, bag: DiagnosticBag, token: Token) -> int:
    """`0-3` where a range is expected: say that ranges are written `0..3`."""
    assert token.line is not None and token.column is not None
    text = source.line_text(token.line)
    before = re.search(r"([0-9][0-9_]*)[ \t]*$", text[: token.column - 1])
    after = re.match(r"[ \t]*([0-9][0-9_]*)", text[token.column :])
    if before and after:
        first, last = before.group(1), after.group(1)
        message = f"ranges are written `{first}..{last}`, not `{first}-{last}`"
    else:
        message = "ranges are written with `..`, e.g. `0..3`, not with `-`"
    bag.error(Span.point(token.line, token.column), message, help="replace `-` with `..`")
    return token.line


def _accepted_terminals(error: UnexpectedToken) -> set[str]:
    """The terminals that could really come next.

    LALR(1) merges look-ahead sets, so `error.expected` can list tokens the parser would
    reject (e.g. `{` after `hidden = 4096`); the interactive parser tries each one.
    """
    if error.interactive_parser is None:
        return set(error.expected)
    accepts: set[str] = error.interactive_parser.accepts()  # type: ignore[no-untyped-call]
    return accepts or set(error.expected)


def _describe_char(char: str) -> str:
    """`$`, or U+FEFF for a character that does not show."""
    return f"`{char}`" if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"


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
    return [Note("this `{` is never closed", span) for span in _open_braces(source)]


def _open_braces(source: SourceFile, before_line: int | None = None) -> list[Span]:
    """The `{` still open at the start of `before_line` (default: at the end of the file)."""
    open_braces: list[Span] = []
    for number, line in enumerate(source.lines(), start=1):
        if before_line is not None and number >= before_line:
            break
        code = line.split("#", 1)[0]
        for match in re.finditer(r"[{}]", code):
            if match.group() == "{":
                open_braces.append(Span.point(number, match.start() + 1))
            elif open_braces:
                open_braces.pop()
    return open_braces


def _span(meta: Any) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _token_span(token: Token) -> Span:
    assert token.line is not None and token.column is not None
    assert token.end_line is not None and token.end_column is not None
    return Span(token.line, token.column, token.end_line, token.end_column)


def _ident(token: Token) -> ast.Ident:
    return ast.Ident(str(token), _token_span(token))


@v_args(inline=True, meta=True)
class _ToAst(Transformer[Token, Any]):
    """Builds ast nodes from lark's tree (rules and aliases of dag.lark)."""

    def __init__(self, bag: DiagnosticBag) -> None:
        super().__init__()
        self.bag = bag

    def _int(self, token: Token) -> int:
        digits = str(token).replace("_", "")
        try:
            return int(digits)
        except ValueError:  # longer than Python converts (sys.get_int_max_str_digits)
            self.bag.error(
                _token_span(token),
                f"this integer has {len(digits)} digits, too many to read",
                help="counts and sizes in a .dag file are ordinary integers: fix the value",
            )
            return 0

    def start(self, meta: Any, *statements: Any) -> ast.File:
        return ast.File(
            models=tuple(
                s for s in statements if isinstance(s, ast.Section) and s.keyword == "model"
            ),
            workloads=tuple(
                s for s in statements if isinstance(s, ast.Section) and s.keyword == "workload"
            ),
            devices=tuple(s for s in statements if isinstance(s, ast.DevicesDecl)),
            trainings=tuple(
                s for s in statements if isinstance(s, ast.Section) and s.keyword == "training"
            ),
            layers=tuple(s for s in statements if isinstance(s, ast.LayersDecl)),
        )

    def model(self, meta: Any, name: Token, *settings: ast.Setting) -> ast.Section:
        return ast.Section("model", _ident(name), settings, _span(meta))

    def workload(self, meta: Any, *settings: ast.Setting) -> ast.Section:
        return ast.Section("workload", None, settings, _span(meta))

    def training(self, meta: Any, *settings: ast.Setting) -> ast.Section:
        return ast.Section("training", None, settings, _span(meta))

    def devices(self, meta: Any, *items: Any) -> ast.DevicesDecl:
        groups = tuple(i for i in items if isinstance(i, ast.GroupDecl))
        settings = tuple(i for i in items if isinstance(i, ast.Setting))
        return ast.DevicesDecl(groups, settings, _span(meta))

    def group(self, meta: Any, name: Token, kind: Token, *members: Any) -> ast.GroupDecl:
        kept = tuple(m for m in members if m is not None)
        return ast.GroupDecl(_ident(name), _ident(kind), kept, _span(meta))

    def span_member(self, meta: Any, first: Token, last: Token) -> ast.Member:
        return ast.Member(self._int(first), self._int(last), _span(meta))

    def single_member(self, meta: Any, only: Token) -> ast.Member:
        return ast.Member(self._int(only), self._int(only), _span(meta))

    def layers(self, meta: Any, _keyword: Token, *parts: Any) -> ast.LayersDecl:
        (first, last, range_span), groups, *rest = parts
        options = tuple(p for p in rest if isinstance(p, ast.Setting))
        blocks = tuple(p for p in rest if isinstance(p, ast.BlockDecl))
        return ast.LayersDecl(
            first, last, range_span, tuple(groups or ()), options, blocks, _span(meta)
        )

    def layer_range(self, meta: Any, first: Token, last: Token | None) -> tuple[int, int, Span]:
        end = last if last is not None else first
        return (self._int(first), self._int(end), _span(meta))

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
        return ast.Value(self._int(token), _token_span(token))

    def negative_value(self, meta: Any, token: Token) -> ast.Value:
        return ast.Value(-self._int(token), _span(meta))

    def float_value(self, meta: Any, token: Token) -> ast.Value:
        return ast.Value(float(str(token).replace("_", "")), _token_span(token))

    def name_value(self, meta: Any, token: Token) -> ast.Value:
        return ast.Value(str(token), _token_span(token))
