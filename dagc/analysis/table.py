"""The table cost model: Get_Time from measured matrix-product times.

A cost table is a CSV file with the columns `m,k,n,seconds` (other columns are ignored, lines
starting with `#` are comments) whose rows form a full grid over their distinct m, k and n
values. `dagc profile` writes one. `TableModel` interpolates it in log space and leaves every
term outside the measured range, and every term that is not a product, to a fallback model.
"""

from __future__ import annotations

import math
import os
import re
from bisect import bisect_left
from dataclasses import dataclass
from itertools import product
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from dagc.analysis.costs import MAX_TERM_SECONDS, CostModel, Extrapolated
from dagc.diagnostics import DiagnosticBag, DiagnosticError, Note
from dagc.inputs import COST_TABLE, read_input
from dagc.ir.terms import CostTerm, TermKind
from dagc.source import SourceFile, Span

COLUMNS = ("m", "k", "n", "seconds")
_HEADER_HELP = "a cost table starts with the line `m,k,n,seconds` (other columns are ignored)"
_INTEGER = re.compile(r"[0-9]+")
# A decimal number in ASCII digits (float() would also take `١٫٥`, `1_000`, `inf`, `nan`).
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# Matrix sizes beyond 10^15 elements are typos, and int() refuses more than 4,300 digits.
_MAX_SIZE_DIGITS = 15

Point = tuple[int, int, int]


@dataclass(frozen=True, eq=False)
class MeasuredTable:
    """A full grid of measured Get_Time values, made monotone.

    `seconds[i, j, l]` is the time of `ms[i]` x `ks[j]` x `ns[l]` after the monotone repair;
    `measured` holds the values as read.
    """

    path: str
    ms: tuple[int, ...]
    ks: tuple[int, ...]
    ns: tuple[int, ...]
    seconds: npt.NDArray[np.float64]
    measured: npt.NDArray[np.float64]

    @property
    def raised(self) -> int:
        """How many entries the monotone repair raised."""
        return int(np.count_nonzero(self.seconds > self.measured))

    @property
    def size(self) -> int:
        """The number of grid points."""
        return int(self.seconds.size)

    def contains(self, m: int, k: int, n: int) -> bool:
        """Whether (m, k, n) lies inside the measured range on every axis."""
        return all(
            axis[0] <= x <= axis[-1] for axis, x in zip(self._axes(), (m, k, n), strict=True)
        )

    def clamp(self, m: int, k: int, n: int) -> Point:
        """The point of the measured range nearest to (m, k, n) on each axis."""
        return (
            min(max(m, self.ms[0]), self.ms[-1]),
            min(max(k, self.ks[0]), self.ks[-1]),
            min(max(n, self.ns[0]), self.ns[-1]),
        )

    def at_least_lowest(self, m: int, k: int, n: int) -> bool:
        """Whether (m, k, n) is at or above the smallest measured value on every axis."""
        return m >= self.ms[0] and k >= self.ks[0] and n >= self.ns[0]

    def at_most_highest(self, m: int, k: int, n: int) -> bool:
        """Whether (m, k, n) is at or below the largest measured value on every axis."""
        return m <= self.ms[-1] and k <= self.ks[-1] and n <= self.ns[-1]

    def interpolate(self, m: int, k: int, n: int) -> float:
        """Seconds at a point inside the range: trilinear in log seconds over log sizes.

        Exact at grid points. Raises ValueError outside the measured range.
        """
        if not self.contains(m, k, n):
            raise ValueError(f"({m}, {k}, {n}) is outside the measured table")
        brackets = [_bracket(axis, x) for axis, x in zip(self._axes(), (m, k, n), strict=True)]
        if all(len(bracket) == 1 for bracket in brackets):
            [(a, _)], [(b, _)], [(c, _)] = brackets
            return float(self.seconds[a, b, c])  # a grid point: the value itself, no rounding
        log_seconds = 0.0
        for (a, wa), (b, wb), (c, wc) in product(*brackets):
            log_seconds += wa * wb * wc * math.log(self.seconds[a, b, c])
        return math.exp(log_seconds)

    def _axes(self) -> tuple[tuple[int, ...], ...]:
        return (self.ms, self.ks, self.ns)


def _bracket(axis: tuple[int, ...], x: int) -> list[tuple[int, float]]:
    """The grid indices around `x` on one axis with their weights (linear in log x)."""
    upper = bisect_left(axis, x)
    if axis[upper] == x:
        return [(upper, 1.0)]
    lower = upper - 1
    t = math.log(x / axis[lower]) / math.log(axis[upper] / axis[lower])
    return [(lower, 1.0 - t), (upper, t)]


def make_monotone(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Running maxima along m, then k, then n, repeated until nothing changes.

    dagc's symbolic formulas assume Get_Time never decreases when M, K or N grows; measured
    times break that by noise, so each entry is raised to the largest value below it.
    """
    result = values.copy()
    while True:
        before = result.copy()
        for axis in range(result.ndim):
            result = np.maximum.accumulate(result, axis=axis)
        if np.array_equal(result, before):
            return result


class TableModel(CostModel):
    """Get_Time from a measured table; everything else, and points outside it, from `fallback`.

    Outside the table the fallback's value is kept between the table's values at the nearest
    edge (no smaller than a measured point below it, no larger than one above it), so that
    Get_Time stays monotone across the table's border.
    """

    def __init__(self, table: MeasuredTable, fallback: CostModel) -> None:
        self.table = table
        self.fallback = fallback
        self.name = f"table {table.path}"
        self._inside: set[CostTerm] = set()
        self._outside: set[CostTerm] = set()
        self._raised: set[CostTerm] = set()
        self._lowered: set[CostTerm] = set()

    def term_seconds(self, term: CostTerm) -> float:
        if term.kind is not TermKind.MATMUL:
            return self.fallback.term_seconds(term)
        m, k, n = term.args
        if self.table.contains(m, k, n):
            self._inside.add(term)
            return self.table.interpolate(m, k, n)
        self._outside.add(term)
        return self._outside_seconds(term)

    def _outside_seconds(self, term: CostTerm) -> float:
        seconds = self.fallback.term_seconds(term)
        m, k, n = term.args
        edge = self.table.interpolate(*self.table.clamp(m, k, n))
        # A point above the table's smallest corner costs at least the edge point below it;
        # a point below its largest corner costs at most the edge point above it.
        if self.table.at_least_lowest(m, k, n) and seconds < edge:
            self._raised.add(term)
            return edge
        if self.table.at_most_highest(m, k, n) and seconds > edge:
            self._lowered.add(term)
            return edge
        return seconds

    def extrapolated(self) -> Extrapolated | None:
        """The products priced outside the table so far, or None when every one was inside."""
        if not self._outside:
            return None
        t = self.table
        return Extrapolated(
            table=t.path,
            ranges=((t.ms[0], t.ms[-1]), (t.ks[0], t.ks[-1]), (t.ns[0], t.ns[-1])),
            fallback=self.fallback.name,
            terms=frozenset(self._outside),
            raised=frozenset(self._raised),
            lowered=frozenset(self._lowered),
            priced=len(self._inside | self._outside),
        )

    def notes(self) -> list[str]:
        """Points outside the table, values bounded by its edge, and entries the repair raised."""
        notes = list(self.fallback.notes())
        total = len(self._inside | self._outside)
        outside = len(self._outside)
        if outside:
            verb = "falls" if outside == 1 else "fall"
            use = "uses" if outside == 1 else "use"
            notes.append(
                f"{outside} of {total} Get_Time terms {verb} outside the measured table and"
                f" {use} the {self.fallback.name}"
            )
        bounded = len(self._raised) + len(self._lowered)
        if bounded:
            were = "was" if bounded == 1 else "were"
            notes.append(
                f"{bounded} of these {were} moved to the value at the table's edge so"
                " that Get_Time stays monotone"
            )
        if self.table.raised:
            were = "was" if self.table.raised == 1 else "were"
            notes.append(
                f"{self.table.raised} of {self.table.size} table entries {were} raised to keep"
                " Get_Time monotone (measurement noise)"
            )
        return notes


# ---------------------------------------------------------------------------------------------
# Reading the CSV file


@dataclass(frozen=True)
class _Field:
    """One CSV field: its text without blanks or quotes, and where that text starts."""

    text: str
    line: int
    column: int

    def span(self) -> Span:
        return Span.point(self.line, self.column, max(1, len(self.text)))


@dataclass(frozen=True)
class _Row:
    point: Point
    seconds: float
    fields: tuple[_Field, ...]  # m, k, n, seconds


def load_cost_table(path: str | os.PathLike[str]) -> MeasuredTable:
    """Read and check a cost table; every problem raises DiagnosticError pointing into it."""
    source = _read(path)
    bag = DiagnosticBag(source)
    lines = _data_lines(source)
    if not lines:
        bag.error(source.end_span(), "the table has no header line", help=_HEADER_HELP)
        bag.raise_if_errors()
    header = _split(lines[0][1], lines[0][0])
    columns = _columns(header, bag)
    bag.raise_if_errors()
    rows = _rows(lines[1:], len(header), columns, bag)
    if not rows and not bag.errors:
        bag.error(
            source.end_span(),
            "the table has no measurements",
            help="add rows `m,k,n,seconds` below the header, or measure some with `dagc profile`",
        )
    bag.raise_if_errors()
    return _grid(os.fspath(path), rows, bag)


def _read(path: str | os.PathLike[str]) -> SourceFile:
    """The file's text; a missing, unreadable or non-UTF-8 file raises DiagnosticError."""
    return read_input(path, COST_TABLE)


def _data_lines(source: SourceFile) -> list[tuple[int, str]]:
    """(line number, text) of every line that is neither blank nor a `#` comment."""
    return [
        (number, text)
        for number, text in enumerate(source.lines(), start=1)
        if text.strip() and not text.lstrip().startswith("#")
    ]


def _split(text: str, line: int) -> list[_Field]:
    """The comma-separated fields of a line; a double-quoted field may hold commas."""
    fields: list[_Field] = []
    start = 0
    quoted = False
    for index, char in enumerate(text + ","):
        if char == '"':
            quoted = not quoted
        elif char == "," and (not quoted or index == len(text)):
            fields.append(_field(text[start:index], line, start + 1))
            start = index + 1
    return fields


def _field(raw: str, line: int, column: int) -> _Field:
    """A field with surrounding blanks and quotes removed; the column follows its text."""
    stripped = raw.strip()
    column += len(raw) - len(raw.lstrip())
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        return _Field(stripped[1:-1].strip(), line, column + 1)
    return _Field(stripped, line, column)


def _columns(header: list[_Field], bag: DiagnosticBag) -> dict[str, int]:
    """The index of each needed column in the header; problems go to `bag`."""
    found: dict[str, int] = {}
    for index, field in enumerate(header):
        name = field.text.lower()
        if name in COLUMNS and name in found:
            bag.error(
                field.span(), f"column `{name}` appears twice in the header", help=_HEADER_HELP
            )
        found.setdefault(name, index)
    missing = [c for c in COLUMNS if c not in found]
    if missing:
        names = " and ".join(f"`{c}`" for c in missing)
        plural = "s" if len(missing) > 1 else ""
        first = header[0]
        width = header[-1].column + len(header[-1].text) - first.column
        bag.error(
            Span.point(first.line, first.column, max(1, width)),
            f"the header lacks the column{plural} {names}",
            help=_HEADER_HELP,
        )
    return {c: found[c] for c in COLUMNS if c in found}


def _rows(
    lines: list[tuple[int, str]], width: int, columns: dict[str, int], bag: DiagnosticBag
) -> list[_Row]:
    """The valid rows; every row's problems go to `bag`, and duplicates must agree."""
    rows: list[_Row] = []
    seen: dict[Point, _Row] = {}
    for number, text in lines:
        fields = _split(text, number)
        if len(fields) != width:
            _wrong_width(fields, width, number, text, bag)
            continue
        row = _row([fields[columns[c]] for c in COLUMNS], bag)
        if row is None:
            continue
        earlier = seen.get(row.point)
        if earlier is None:
            seen[row.point] = row
            rows.append(row)
        elif earlier.seconds != row.seconds:
            m, k, n = row.point
            bag.error(
                row.fields[3].span(),
                f"m={m}, k={k}, n={n} is measured twice with different times"
                f" ({earlier.fields[3].text} and {row.fields[3].text})",
                help="keep one row per (m, k, n), e.g. the median of the measurements",
                notes=[Note("first measured here", earlier.fields[3].span())],
            )
    return rows


def _wrong_width(
    fields: list[_Field], width: int, number: int, text: str, bag: DiagnosticBag
) -> None:
    """Report a row with more or fewer fields than the header."""
    if len(fields) > width:
        span = fields[width].span()
    else:
        span = Span.point(number, len(text.rstrip()) + 1)
    bag.error(
        span,
        f"this row has {len(fields)} fields but the header has {width}",
        help="every row gives one value for each column of the header",
    )


def _row(fields: list[_Field], bag: DiagnosticBag) -> _Row | None:
    """One row's point and seconds, or None after reporting what is wrong with it."""
    sizes = [_size(name, field, bag) for name, field in zip("mkn", fields[:3], strict=True)]
    seconds = _seconds(fields[3], bag)
    if seconds is None or any(s is None for s in sizes):
        return None
    m, k, n = (int(s) for s in sizes if s is not None)
    return _Row((m, k, n), seconds, tuple(fields))


def _size(name: str, field: _Field, bag: DiagnosticBag) -> int | None:
    """A positive whole matrix size, or None after reporting the field."""
    if not _INTEGER.fullmatch(field.text):
        got = f"got `{field.text}`" if field.text else "the field is empty"
        bag.error(
            field.span(),
            f"`{name}` must be a positive whole number, {got}",
            help="m, k and n are matrix sizes in elements, e.g. `4096`",
        )
        return None
    if len(field.text.lstrip("0")) > _MAX_SIZE_DIGITS:
        bag.error(
            field.span(),
            f"`{name}` is too large: {len(field.text):,} digits",
            help=f"m, k and n are matrix sizes in elements, at most {_MAX_SIZE_DIGITS} digits",
        )
        return None
    value = int(field.text)
    if value == 0:
        bag.error(field.span(), f"`{name}` must be positive, got `0`", help="a matrix size is > 0")
        return None
    return value


def _seconds(field: _Field, bag: DiagnosticBag) -> float | None:
    """A positive, finite time, or None after reporting the field."""
    help = "seconds is the time of one [m,k] x [k,n] product, e.g. `0.00125` or `1.25e-3`"
    shown = field.text if len(field.text) <= 40 else f"{field.text[:37]}..."
    if field.text.lower().lstrip("+-") in ("inf", "infinity", "nan"):
        bag.error(field.span(), f"`seconds` must be finite, got `{shown}`", help=help)
        return None
    if not _DECIMAL.fullmatch(field.text):
        got = f"got `{shown}`" if field.text else "the field is empty"
        bag.error(field.span(), f"`seconds` must be a number, {got}", help=help)
        return None
    value = float(field.text)
    if not math.isfinite(value) or value > MAX_TERM_SECONDS:
        bag.error(
            field.span(),
            f"`seconds` must be at most {MAX_TERM_SECONDS:.0e}, got `{shown}`",
            help="one product taking more than about 30 years is a unit mistake: " + help,
        )
        return None
    if value <= 0:
        bag.error(field.span(), f"`seconds` must be positive, got `{shown}`", help=help)
        return None
    return value


def _grid(path: str, rows: list[_Row], bag: DiagnosticBag) -> MeasuredTable:
    """The rows as a full (m, k, n) grid, made monotone; a missing point raises."""
    by_point = {row.point: row for row in rows}
    axes = [sorted({row.point[a] for row in rows}) for a in range(3)]
    values = np.empty([len(axis) for axis in axes], dtype=np.float64)
    for index in product(*(range(len(axis)) for axis in axes)):
        point = (axes[0][index[0]], axes[1][index[1]], axes[2][index[2]])
        row = by_point.get(point)
        if row is None:
            _missing(point, rows, bag)
        values[index] = row.seconds
    ms, ks, ns = (tuple(axis) for axis in axes)
    monotone = make_monotone(values)
    values.flags.writeable = monotone.flags.writeable = False
    return MeasuredTable(path, ms, ks, ns, monotone, values)


def _missing(point: Point, rows: list[_Row], bag: DiagnosticBag) -> NoReturn:
    """Report a missing grid point at the first use of whichever of its values came last."""
    firsts: list[_Field] = []
    for axis, value in enumerate(point):
        row = next(r for r in rows if r.point[axis] == value)
        firsts.append(row.fields[axis])
    last = max(range(3), key=lambda a: (firsts[a].line, firsts[a].column))
    m, k, n = point
    notes = [
        Note(f"{'mkn'[a]} = {point[a]} first appears here", firsts[a].span())
        for a in range(3)
        if a != last
    ]
    bag.error(
        firsts[last].span(),
        f"the table is not a full grid: it has no row for m={m}, k={k}, n={n}",
        help=f"add a row `{m},{k},{n},SECONDS`: a table needs a time for every combination of"
        " its m, k and n values",
        notes=notes,
    )
    raise DiagnosticError(bag.sorted())
