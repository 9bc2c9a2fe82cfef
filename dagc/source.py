"""Source files and positions in them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A range in a source file: 1-based line and column, end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    def __post_init__(self) -> None:
        if self.line < 1 or self.column < 1:
            raise ValueError(f"span starts before 1:1: {self}")

    @classmethod
    def point(cls, line: int, column: int, width: int = 1) -> Span:
        """A span of `width` characters on one line."""
        return cls(line, column, line, column + width)


@dataclass(frozen=True, slots=True)
class SourceFile:
    """The text of one .dag file and the name it is reported under."""

    path: str
    text: str

    def lines(self) -> list[str]:
        """The lines as the lexer counts them, without their line endings.

        Only a line feed ends a line. str.splitlines() would also split at form feeds, NEL
        and the Unicode line separators, which the grammar treats as ordinary characters, so
        every line number after one of them would be off.
        """
        lines = self.text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the text ends with a newline (or is empty)
        return [line.removesuffix("\r") for line in lines]

    def line_text(self, line: int) -> str:
        """The text of 1-based `line`, without its newline ('' past the end)."""
        lines = self.lines()
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    def end_span(self) -> Span:
        """A one-character span just after the last character of the file."""
        lines = self.lines() or [""]
        return Span.point(len(lines), len(lines[-1]) + 1)


def undecodable(data: bytes, error: UnicodeDecodeError) -> tuple[Span, str]:
    """Where the first byte that is not UTF-8 sits, and the text before it (for the excerpt)."""
    good = data[: error.start].decode("utf-8-sig", errors="replace")
    line = good.count("\n") + 1
    column = len(good) - (good.rfind("\n") + 1) + 1
    return Span.point(line, column), good
