"""Diagnostics: errors and warnings that point into a .dag file.

Rendered like a C compiler's, so editors can jump to them::

    model.dag:3:3: error: unknown model key `hiden`
        3 |   hiden = 4096
          |   ^^^^^
          = help: did you mean `hidden`?
"""

from __future__ import annotations

import difflib
import enum
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from dagc.source import SourceFile, Span

# Longest source excerpt shown; a longer line is cut around the caret with `…`.
EXCERPT_WIDTH = 120


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Note:
    """A secondary message, optionally pointing at another place in the file."""

    message: str
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One error or warning about a source file."""

    severity: Severity
    message: str
    source: SourceFile | None
    span: Span | None = None
    help: str | None = None
    notes: tuple[Note, ...] = ()

    def render(self) -> str:
        """The diagnostic as the text dagc prints (without a trailing newline)."""
        where = self._location(self.span)
        out = [f"{where}{self.severity.value}: {self.message}"]
        out += self._excerpt(self.span)
        if self.help:
            out.append(f"{self._gutter()}= help: {self.help}")
        for note in self.notes:
            if note.span is None:
                out.append(f"{self._gutter()}= note: {note.message}")
            else:
                out.append(f"{self._location(note.span)}note: {note.message}")
                out += self._excerpt(note.span)
        return "\n".join(out)

    def _location(self, span: Span | None) -> str:
        if self.source is None:
            return "dagc: "
        if span is None:
            return f"{self.source.path}: "
        return f"{self.source.path}:{span.line}:{span.column}: "

    def _gutter(self) -> str:
        width = len(str(self.span.line)) if self.span and self.source else 0
        return " " * (width + 5)

    def _excerpt(self, span: Span | None) -> list[str]:
        if self.source is None or span is None:
            return []
        text = _visible(self.source.line_text(span.line))
        number = str(span.line)
        pad = " " * len(number)
        end = span.end_column if span.end_line == span.line else len(text) + 1
        start = span.column - 1  # 0-based offset of the first caret
        width = max(1, end - span.column)
        if len(text) > EXCERPT_WIDTH:  # show a window around the caret, not a megabyte
            first = max(0, start - EXCERPT_WIDTH // 3)
            shown = text[first : first + EXCERPT_WIDTH]
            lead = "…" if first > 0 else ""
            trail = "…" if first + EXCERPT_WIDTH < len(text) else ""
            text = lead + shown + trail
            start = start - first + len(lead)
            width = min(width, len(shown) + len(lead) - start)
        caret = " " * start + "^" * max(1, width)
        return [f"    {number} | {text}", f"    {pad} | {caret}"]


class DiagnosticError(Exception):
    """Raised when a file has errors; carries every diagnostic found (warnings too)."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity is Severity.ERROR]
        super().__init__(errors[0].render() if errors else "dagc: error")

    def render(self) -> str:
        """Every diagnostic, separated by blank lines."""
        return "\n\n".join(d.render() for d in self.diagnostics)


@dataclass
class DiagnosticBag:
    """Collects the diagnostics of one file so that all of them are reported at once."""

    source: SourceFile | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(
        self,
        span: Span | None,
        message: str,
        *,
        help: str | None = None,
        notes: Iterable[Note] = (),
    ) -> None:
        """Record an error at `span`."""
        self._add(Severity.ERROR, span, message, help, notes)

    def warning(
        self,
        span: Span | None,
        message: str,
        *,
        help: str | None = None,
        notes: Iterable[Note] = (),
    ) -> None:
        """Record a warning at `span`."""
        self._add(Severity.WARNING, span, message, help, notes)

    def _add(
        self,
        severity: Severity,
        span: Span | None,
        message: str,
        help: str | None,
        notes: Iterable[Note],
    ) -> None:
        diagnostic = Diagnostic(severity, message, self.source, span, help, tuple(notes))
        if diagnostic not in self.diagnostics:  # e.g. the same block checked for each stage
            self.diagnostics.append(diagnostic)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.WARNING]

    def raise_if_errors(self) -> None:
        """Raise DiagnosticError if any error was recorded."""
        if self.errors:
            raise DiagnosticError(self.sorted())

    def sorted(self) -> list[Diagnostic]:
        """The diagnostics in file order (errors before warnings at one place)."""

        def key(d: Diagnostic) -> tuple[int, int, int]:
            line, col = (d.span.line, d.span.column) if d.span else (0, 0)
            return (line, col, 0 if d.severity is Severity.ERROR else 1)

        return sorted(self.diagnostics, key=key)


def option_error(message: str, help: str | None = None) -> DiagnosticError:
    """A file-free diagnostic (`dagc: error: ...`) about options, presets or output paths."""
    bag = DiagnosticBag(None)
    bag.error(None, message, help=help)
    return DiagnosticError(bag.diagnostics)


def _visible(line: str) -> str:
    """`line` with tabs, control and invisible format characters shown as one space each.

    One character stays one column, so the caret line still lines up, and a stray `\\r` or
    form feed cannot move the terminal's cursor.
    """
    return "".join(" " if unicodedata.category(c) in _INVISIBLE else c for c in line)


_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice a misspelt word most likely means, or None if nothing is close.

    Close means a slip of the fingers: at most one edit per four letters of the word
    (`hiden` is `hidden`, `mpl` is `mlp`). A longer word that merely contains a choice
    (`shared_experts`, `experts`) names something else, and suggesting it would mislead.
    """
    allowed = max(1, len(word) // 4)
    for choice in difflib.get_close_matches(word, sorted(choices), n=3, cutoff=0.6):
        if edit_distance(word, choice) <= allowed:
            return choice
    return None


def edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that turn `a` into `b`.

    (The optimal string alignment distance: a swap, the commonest typo, counts as one.)
    """
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ca != cb),
            )
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt word, or None if nothing is close."""
    match = closest(word, choices)
    return f"did you mean `{match}`?" if match else None


def one_of(choices: Iterable[str]) -> str:
    """`a`, `b` or `c`."""
    names = [f"`{c}`" for c in sorted(choices)]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]
