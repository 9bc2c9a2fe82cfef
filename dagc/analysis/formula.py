"""`dagc formula`: the runtime as a symbolic max-plus formula over cost terms.

The longest path is computed symbolically: a path's length is a sum of cost terms (a
multiset), and where paths meet the result is the max of the sums. A sum is dropped only
when monotonicity proves it dominated, so the formula is exact for every cost model whose
functions are monotone (never smaller for larger arguments) and non-negative:

- sum A is dominated by sum B when A's term occurrences can be matched one-to-one to B's
  with each of A's terms at most its partner (same function, every argument <=), found as
  a bipartite matching. E.g. Get_Time(2097152, 4096, 256) <= Get_Time(2097152, 4096, 384).

If the incomparable sums at one operation exceed `max_branches`, the formula keeps the ones
longest under a named reference cost model and says it is no longer exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dagc.analysis.costs import CostModel
from dagc.ir.device import DeviceGraph
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.toposort import csr

DEFAULT_MAX_BRANCHES = 32

_HASH_MASK = (1 << 64) - 1

BoolArray = npt.NDArray[np.bool_]


# -- sums of terms --------------------------------------------------------------------------


class Sum:
    """A multiset of term ids (insertion ordered, like the path it came from).

    Treated as immutable; `key` is an additive hash so equal sums are found in O(1).
    """

    __slots__ = ("counts", "key", "size")

    def __init__(self, counts: dict[int, int], key: int, size: int) -> None:
        self.counts = counts
        self.key = key
        self.size = size

    def plus(self, term: int, salt: int) -> Sum:
        counts = dict(self.counts)
        counts[term] = counts.get(term, 0) + 1
        return Sum(counts, (self.key + salt) & _HASH_MASK, self.size + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sum) and self.key == other.key and self.counts == other.counts

    def __hash__(self) -> int:
        return self.key


EMPTY = Sum({}, 0, 0)


def _term_leq(a: CostTerm, b: CostTerm) -> bool:
    """a <= b for every monotone cost model: same function, no argument larger."""
    return (
        a.kind is b.kind
        and a.nodes <= b.nodes
        and all(x <= y for x, y in zip(a.args, b.args, strict=True))
    )


class _Order:
    """Caches the partial order between terms."""

    def __init__(self, terms: list[CostTerm]) -> None:
        self.terms = terms
        self._leq: dict[tuple[int, int], bool] = {}
        self._dominated: dict[
            tuple[frozenset[tuple[int, int]], frozenset[tuple[int, int]]], bool
        ] = {}

    def leq(self, a: int, b: int) -> bool:
        if a == b:
            return True
        key = (a, b)
        found = self._leq.get(key)
        if found is None:
            found = self._leq[key] = _term_leq(self.terms[a], self.terms[b])
        return found

    def dominated(self, a: Sum, b: Sum) -> bool:
        """Whether sum a <= sum b for every monotone, non-negative cost model.

        Terms the two sums share are matched to each other first: that loses nothing (if
        a matching exists, one exists that pairs equal terms, by exchanging partners and
        transitivity), and it makes the answer depend only on the two differences, which
        stay the same while both sums grow by the same terms, so it is memoised.
        """
        if a.size > b.size:
            return False
        extra_a = {t: c - b.counts.get(t, 0) for t, c in a.counts.items() if c > b.counts.get(t, 0)}
        if not extra_a:
            return True
        extra_b = {t: c - a.counts.get(t, 0) for t, c in b.counts.items() if c > a.counts.get(t, 0)}
        return self.covered(extra_a, extra_b)

    def covered(self, extra_a: dict[int, int], extra_b: dict[int, int]) -> bool:
        """Whether the term occurrences extra_a can each be matched to a distinct larger or
        equal one of extra_b (the two differences of a pair of sums; memoised)."""
        key = (frozenset(extra_a.items()), frozenset(extra_b.items()))
        found = self._dominated.get(key)
        if found is None:
            found = self._dominated[key] = self._matching(extra_a, extra_b)
        return found

    def _matching(self, a: dict[int, int], b: dict[int, int]) -> bool:
        # Each occurrence of a's terms needs its own partner in b: a bipartite matching
        # with capacities, grown by augmenting paths (the differences are small).
        if sum(a.values()) > sum(b.values()):
            return False
        capacity = dict(b)
        assigned: dict[int, dict[int, int]] = {t: {} for t in a}

        def augment(term: int, seen: set[int]) -> bool:
            for target in capacity:
                if target in seen or not self.leq(term, target):
                    continue
                seen.add(target)
                if capacity[target] > 0:
                    capacity[target] -= 1
                    assigned[term][target] = assigned[term].get(target, 0) + 1
                    return True
                for other, targets in assigned.items():
                    if targets.get(target) and augment(other, seen):
                        targets[target] -= 1
                        assigned[term][target] = assigned[term].get(target, 0) + 1
                        return True
            return False

        for term, needed in a.items():
            for _ in range(needed):
                if not augment(term, set()):
                    return False
        return True

    def prune(self, sums: Iterable[Sum]) -> list[Sum]:
        """The sums not dominated by another (one of each equal group kept)."""
        unique = list(dict.fromkeys(sums))
        if len(unique) <= 1:
            return unique
        unique.sort(key=lambda s: -s.size)
        kept: list[Sum] = []
        for candidate in unique:
            if not any(self.dominated(candidate, other) for other in kept):
                kept = [k for k in kept if not self.dominated(k, candidate)]
                kept.append(candidate)
        return kept


# -- the symbolic longest path --------------------------------------------------------------

# Counts and walk steps are at most the operation count (below 2^31): int32 halves the memory.
_NEVER = np.iinfo(np.int32).max  # `first` of a term a sum does not contain
_BLOCK = 1 << 22  # most elements of one pairwise comparison array (rows are compared in blocks)
_PIVOTS = 64  # above this many sums at an operation, sift them before comparing all pairs
_HALL = 10  # most terms whose every subset is checked for Hall's condition at once
_TIE = 1e-9  # reference costs closer than this (relative) are ranked exactly as summed


class _Rows:
    """The sums of the paths that end at one operation, one row each, as arrays.

    A sum is its vector of term counts over the counted terms (a few dozen), so merging,
    comparing and extending the sums at an operation is array work. `first` records when
    the path first met each term (a walk step, increasing along every path): it gives the
    order in which a formula lists the terms. Treated as immutable: extending copies.
    """

    __slots__ = ("_sizes", "by_size", "counts", "first")

    def __init__(self, counts: np.ndarray, first: np.ndarray, by_size: bool) -> None:
        self.counts, self.first = counts, first
        self.by_size = by_size  # rows already in order of decreasing size
        self._sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def sizes(self) -> np.ndarray:
        """The number of terms of each sum."""
        if self._sizes is None:
            self._sizes = self.counts.sum(axis=1, dtype=np.int64)
        return self._sizes

    def take(self, index: np.ndarray, by_size: bool) -> _Rows:
        return _Rows(self.counts[index], self.first[index], by_size)

    def plus(self, column: int, step: int) -> _Rows:
        """Every sum extended by one occurrence of the term in `column`."""
        counts = self.counts.copy()
        new = counts[:, column] == 0
        counts[:, column] += 1
        first = self.first
        if new.any():
            first = first.copy()
            first[new, column] = step
        return _Rows(counts, first, self.by_size)

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        counts = np.concatenate([p.counts for p in parts])
        return _Rows(counts, np.concatenate([p.first for p in parts]), False)

    def sums(self, columns: np.ndarray, salts: list[int]) -> list[Sum]:
        """The rows as `Sum`s, each listing its terms in the order its path met them."""
        result = []
        for row in range(len(self)):
            present = np.flatnonzero(self.counts[row])
            present = present[np.argsort(self.first[row, present], kind="stable")]
            counts = {int(columns[c]): int(self.counts[row, c]) for c in present}
            key = sum(salts[t] * c for t, c in counts.items()) & _HASH_MASK
            result.append(Sum(counts, key, sum(counts.values())))
        return result


class _Walk:
    """What the walk over one graph needs: the counted terms and their order."""

    def __init__(self, terms: list[CostTerm], counted: list[bool]) -> None:
        self.order = _Order(terms)
        self._covered: dict[tuple[bytes, bytes], bool] = {}  # _Order.covered by difference
        self._strict: dict[bytes, np.ndarray] = {}  # self.strict among some columns
        self._sets: dict[tuple[bytes, tuple[int, ...], bytes], tuple[np.ndarray, np.ndarray]] = {}
        self._kept: dict[tuple[tuple[int, ...], int, bytes, bool], np.ndarray | None] = {}
        self.columns = np.flatnonzero(np.asarray(counted, dtype=bool))
        self.strict = _strict_order([terms[t] for t in self.columns.tolist()])
        width = len(self.columns)
        self.start = _Rows(
            np.zeros((1, width), dtype=np.int32), np.full((1, width), _NEVER, dtype=np.int32), True
        )

    def prune(self, rows: _Rows, *, keep_order: bool = False) -> _Rows:
        """The sums not dominated by another, one of each equal group (the first).

        They come in order of decreasing size, first seen first among equal sizes, as
        `_Order.prune` orders them (or in their own order with `keep_order`). Domination is
        a partial order between distinct sums (a sum dominated by another is dominated by a
        maximal one), so the kept sums are exactly the maximal ones, however they are found.
        """
        if len(rows) <= 1:
            return rows
        # The answer depends only on how the sums differ, which repeats from layer to layer
        # and micro-batch to micro-batch: memoised on the counts less their minimum.
        shifted = rows.counts - rows.counts.min(axis=0)
        if shifted.max() < 128:  # a shorter key hashes faster
            shifted = shifted.astype(np.int8)
        key = (shifted.shape, shifted.dtype.itemsize, shifted.tobytes(), keep_order)
        kept = self._kept.get(key)
        if kept is None:
            kept = self._kept[key] = self._maximal(rows, keep_order)
        if kept is None:
            rows.by_size = rows.by_size or not keep_order
            return rows
        return rows.take(kept, not keep_order)

    def _maximal(self, rows: _Rows, keep_order: bool) -> np.ndarray | None:
        """The indices `prune` keeps, in its order (None: every row, as they are)."""
        count = len(rows)
        index = np.arange(count)
        unique = _first_of_each(rows)
        if unique is not None:
            rows, index = rows.take(unique, False), index[unique]
        if not keep_order and not rows.by_size:
            by_size = np.argsort(-rows.sizes, kind="stable")
            rows, index = rows.take(by_size, True), index[by_size]
        if len(rows) > 4 * _PIVOTS:
            alive = self._sift(rows)
            rows, index = rows.take(alive, False), index[alive]
        if len(rows) > 1:
            left = np.flatnonzero(~self._dominated(rows))
            index = index[left]
        if len(index) == count and (index == np.arange(count)).all():
            return None
        return index

    @staticmethod
    def _sift(rows: _Rows) -> np.ndarray:
        """The rows, in order, that no other row dominates term by term: a first pass for
        many rows, a block of candidates at a time (comparing every pair costs n², and
        most are dominated). Such a dominator is larger, so, taken from the largest down, a
        row that no earlier row dominates is maximal."""
        counts = rows.counts
        differ = counts[:, (counts != counts[0]).any(axis=0)]
        by_size = np.argsort(-rows.sizes, kind="stable")
        alive = np.ones(len(rows), dtype=bool)
        done = 0
        while True:
            order = by_size[alive[by_size]]
            pivots, rest = order[done : done + _PIVOTS], order[done + _PIVOTS :]
            if not len(pivots):
                break
            block = max(1, _BLOCK // max(1, len(pivots) * differ.shape[1]))
            for lo in range(0, len(rest), block):
                part = rest[lo : lo + block]
                below = _all_at_most(differ[part], differ[pivots])
                alive[part[below.any(axis=1)]] = False
            inner = _all_at_most(differ[pivots], differ[pivots])
            np.fill_diagonal(inner, False)
            alive[pivots[inner.any(axis=1)]] = False
            done += int(alive[pivots].sum())
        return np.flatnonzero(alive)

    @staticmethod
    def by_size(rows: _Rows) -> _Rows:
        """The rows in order of decreasing size, in their order among equal sizes."""
        if rows.by_size or len(rows) <= 1 or (rows.sizes[:-1] >= rows.sizes[1:]).all():
            rows.by_size = True
            return rows
        return rows.take(np.argsort(-rows.sizes, kind="stable"), True)

    def _dominated(self, rows: _Rows) -> np.ndarray:
        """Which rows (distinct sums) are dominated by another row."""
        counts = rows.counts
        varying = np.flatnonzero((counts != counts[0]).any(axis=0))
        differ = counts[:, varying]
        n, width = differ.shape
        dominated = np.zeros(n, dtype=bool)
        # Componentwise at most: dominated for every model (costs are non-negative).
        block = max(1, _BLOCK // max(1, n * width))
        for lo in range(0, n, block):
            part = differ[lo : lo + block]
            below = _all_at_most(part, differ)
            here = np.arange(len(part))
            below[here, here + lo] = False
            dominated[lo : lo + block] = below.any(axis=1)
        # Otherwise only through a term smaller than another, among the rows left (a row
        # dominated by a dominated row is dominated by a row left).
        where = varying.tobytes()
        strict = self._strict.get(where)
        if strict is None:
            strict = self._strict[where] = self.strict[np.ix_(varying, varying)]
        left = np.flatnonzero(~dominated)
        if strict.any() and len(left) > 1:
            self._matched(differ[left], rows.sizes[left], strict, varying, dominated, left)
        return dominated

    def _matched(
        self,
        differ: np.ndarray,
        sizes: np.ndarray,
        strict: np.ndarray,
        varying: np.ndarray,
        dominated: np.ndarray,
        left: np.ndarray,
    ) -> None:
        """Mark the rows `left` that a matching of their extra terms to larger ones of
        another's proves dominated.

        A matching exists exactly when Hall's condition holds: every set of a's extra terms
        has at least as many occurrences among b's extras larger than one of them. With few
        terms that can be smaller than another, every set is checked at once as array work;
        otherwise pair by pair (`_Order.covered`).
        """
        lower = strict.any(axis=1)  # columns with a larger term among the others
        more = differ[None, :, :] - differ[:, None, :]  # more[a, b] > 0: b has more
        possible = ~((more < 0) & ~lower).any(axis=2) & (sizes[None, :] >= sizes[:, None])
        np.fill_diagonal(possible, False)
        first, second = np.nonzero(possible)
        if not len(first):
            return
        gathered = more[first, second]
        short = np.flatnonzero((gathered < 0).any(axis=0))  # columns where a has extras
        if len(short) <= _HALL:
            sets, neighbours = self._hall(strict, short)
            demand = np.maximum(-gathered[:, short], 0).astype(np.float64) @ sets
            supply = np.maximum(gathered, 0).astype(np.float64) @ neighbours
            dominated[left[first[(demand <= supply).all(axis=1)]]] = True
            return
        terms = self.columns[varying].tolist()
        where = varying.tobytes()
        for a, diff in zip(left[first].tolist(), gathered, strict=True):
            if dominated[a]:
                continue
            key = (where, diff.tobytes())
            found = self._covered.get(key)
            if found is None:
                extra_a = {terms[c]: -int(diff[c]) for c in np.flatnonzero(diff < 0)}
                extra_b = {terms[c]: int(diff[c]) for c in np.flatnonzero(diff > 0)}
                found = self._covered[key] = self.order.covered(extra_a, extra_b)
            if found:
                dominated[a] = True

    def _hall(self, strict: np.ndarray, short: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sets, neighbours): column k of `sets` is the k-th nonempty set of the columns
        `short` (1.0 for a member); the same column of `neighbours` marks the columns
        larger than one of its members."""
        key = (strict.tobytes(), strict.shape, short.tobytes())
        found = self._sets.get(key)
        if found is None:
            members = (np.arange(1, 1 << len(short))[None, :] >> np.arange(len(short))[:, None]) & 1
            sets = members.astype(np.float64)
            neighbours = ((strict[short].T.astype(np.float64) @ sets) > 0).astype(np.float64)
            found = self._sets[key] = (sets, neighbours)
        return found


def _all_at_most(a: np.ndarray, b: np.ndarray) -> BoolArray:
    """[i, j]: every entry of row a[i] is at most the same entry of row b[j]."""
    result: BoolArray = np.all(a[:, None, :] <= b[None, :, :], axis=2)
    return result


def _first_of_each(rows: _Rows) -> np.ndarray | None:
    """Indices of the first row of each group of equal sums, in order (None: all differ)."""
    counts = np.ascontiguousarray(rows.counts)
    whole = counts.view(np.dtype((np.void, counts.itemsize * counts.shape[1])))[:, 0]
    _, first = np.unique(whole, return_index=True)
    if len(first) == len(rows):
        return None
    return np.sort(first)


def _strict_order(terms: list[CostTerm]) -> np.ndarray:
    """strict[a, b]: term a < term b for every monotone model (same function, no argument
    larger, not the same term)."""
    n = len(terms)
    strict = np.zeros((n, n), dtype=bool)
    groups: dict[TermKind, list[int]] = {}
    for index, term in enumerate(terms):
        groups.setdefault(term.kind, []).append(index)
    for members in groups.values():
        rows = [(*terms[i].args, terms[i].nodes) for i in members]
        try:
            values = np.asarray(rows, dtype=np.int64)
        except OverflowError:  # arguments past 2^63: compare them as Python integers
            values = np.asarray(rows, dtype=object)
        leq = _all_at_most(values, values)
        np.fill_diagonal(leq, False)  # distinct interned terms are never equal
        strict[np.ix_(members, members)] = leq
    return strict


@dataclass
class SymbolicPath:
    """The non-dominated path sums at the end of the DAG, and whether they are exact."""

    sums: list[Sum]
    terms: list[CostTerm]
    exact: bool = True
    notes: list[str] = field(default_factory=list)


def symbolic_longest_path(
    graph: DeviceGraph,
    *,
    include: Callable[[CostTerm], bool] = lambda term: term.kind is not TermKind.SYNC,
    max_branches: int = DEFAULT_MAX_BRANCHES,
    reference: CostModel | None = None,
) -> SymbolicPath:
    """Max-plus longest path of `graph`; terms for which `include` is false count as 0."""
    if max_branches < 1:
        # ranked[:limit] with limit <= 0 would drop every path and print `T = 0`.
        raise ValueError(f"max_branches must be at least 1, got {max_branches}")
    levels = graph.levels
    if levels is None:
        raise ValueError("the device graph has a cycle")
    terms = list(graph.terms.terms)
    counted = [include(t) for t in terms]
    walk = _Walk(terms, counted)
    rng = random.Random(0)
    salts = [rng.getrandbits(64) for _ in terms]
    column_of = np.full(len(terms), -1, dtype=np.int64)
    column_of[walk.columns] = np.arange(len(walk.columns))
    op_column = column_of[graph.op_term].tolist()
    n = graph.num_ops
    offsets, preds = csr(n, graph.dst, graph.src)
    bounds = offsets.tolist()
    preds_list = preds.tolist()
    remaining = np.bincount(graph.src, minlength=n).tolist()
    reference_costs = reference.term_costs(terms) if reference is not None else None
    result = SymbolicPath([], terms)
    state: dict[int, _Rows] = {}
    sinks: list[_Rows] = []
    sink_rows = 0
    step = 0
    for level in levels:
        for op in level.tolist():
            incoming = preds_list[bounds[op] : bounds[op + 1]]
            if not incoming:
                rows = walk.start
            elif len(incoming) == 1:  # already pruned: only the order may change
                rows = walk.by_size(state[incoming[0]])
            else:  # the same sums may arrive twice (an operation that adds no term)
                arriving = list({id(state[p]): state[p] for p in incoming}.values())
                if len(arriving) == 1:
                    rows = walk.by_size(arriving[0])
                else:
                    rows = walk.prune(_Rows.concat(arriving))
            for p in incoming:
                remaining[p] -= 1
                if remaining[p] == 0:
                    del state[p]
            if len(rows) > max_branches:
                rows = _limit(rows, max_branches, reference_costs, walk, result, graph, op)
            column = op_column[op]
            if column >= 0:
                step += 1
                rows = rows.plus(column, step)
            if remaining[op] == 0:
                sinks.append(rows)
                sink_rows += len(rows)
                if sink_rows > 4096:  # keep the candidates few; their order is kept
                    sinks = [walk.prune(_Rows.concat(sinks), keep_order=True)]
                    sink_rows = len(sinks[0])
            else:
                state[op] = rows
    if sinks:
        result.sums = walk.prune(_Rows.concat(sinks)).sums(walk.columns, salts)
    return result


def _limit(
    rows: _Rows,
    limit: int,
    reference_costs: np.ndarray | None,
    walk: _Walk,
    result: SymbolicPath,
    graph: DeviceGraph,
    op: int,
) -> _Rows:
    """Keep the `limit` sums longest under the reference model: a sound lower bound."""
    if reference_costs is None:
        raise FormulaTooLarge(graph.name(op), len(rows), limit)
    ranked = _ranked(rows, reference_costs[walk.columns])
    if result.exact:
        result.notes.append(
            f"{len(rows)} incomparable branches meet at {graph.name(op)}, more than the limit"
            f" of {limit}: the formula keeps the {limit} longest under the reference cost"
            " model. It is exact for that model and a lower bound for others."
        )
    result.exact = False
    return rows.take(ranked[:limit], False)


def _ranked(rows: _Rows, costs: np.ndarray) -> np.ndarray:
    """Rows from longest to shortest under `costs`, ties in row order.

    A path's length is summed in the order the path met its terms (a sum of floats depends
    on the order, and near-ties decide which branches stay); one array product is enough
    when no two lengths are within rounding of each other.
    """
    lengths = rows.counts @ costs
    order = np.argsort(-lengths, kind="stable")
    ranked = lengths[order]
    if len(ranked) < 2 or (ranked[:-1] - ranked[1:] > _TIE * ranked[0]).all():
        return order
    met = np.argsort(rows.first, axis=1, kind="stable")  # terms not met come last, adding 0
    parts = np.take_along_axis(rows.counts, met, axis=1) * costs[met]
    exact = np.zeros(len(rows))
    for column in range(parts.shape[1]):
        exact = exact + parts[:, column]
    return np.argsort(-exact, kind="stable")


class FormulaTooLarge(Exception):
    """Too many incomparable branches and no reference model to choose among them."""

    def __init__(self, where: str, count: int, limit: int) -> None:
        super().__init__(f"{count} incomparable branches meet at {where} (limit {limit})")
        self.where, self.count, self.limit = where, count, limit


# -- expressions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One cost term."""

    term: CostTerm


@dataclass(frozen=True)
class Scale:
    """factor × expr."""

    factor: int
    expr: Expr


@dataclass(frozen=True)
class Add:
    """expr + expr + ..."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Max:
    """max(expr, expr, ...)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Zero:
    """No cost at all (a DAG with only free operations)."""


Expr = Call | Scale | Add | Max | Zero


def to_expression(path: SymbolicPath) -> Expr:
    """A readable expression: common terms outside max(...), repeated blocks factored."""
    sums = _drop_between([s.counts for s in path.sums])
    if not sums:
        return Zero()
    if len(sums) == 1:
        return _sum_expr(sums[0], path.terms)
    common = {t: min(s.get(t, 0) for s in sums) for t in sums[0]}
    common = {t: c for t, c in common.items() if c > 0}
    rests = [
        {t: c - common.get(t, 0) for t, c in s.items() if c - common.get(t, 0) > 0} for s in sums
    ]
    shared = math.gcd(*(c for r in rests for c in r.values()))
    if shared > 1:  # max(7 × [A], 7 × B) = 7 × max(A, B)
        rests = [{t: c // shared for t, c in r.items()} for r in rests]
    branches = tuple(_sum_expr(r, path.terms) for r in rests)
    maximum: Expr = Max(branches) if shared <= 1 else Scale(shared, Max(branches))
    if not common:
        return maximum
    base = _sum_expr(common, path.terms)
    items = base.items if isinstance(base, Add) else (base,)
    return Add((*items, maximum))


def _drop_between(sums: list[dict[int, int]]) -> list[dict[int, int]]:
    """Drop sums that lie on the segment between two others.

    If b = c + λ·(a − c) with 0 < λ < 1, then under any cost model b's value is the same
    weighted mean of a's and c's, so b is never the strict maximum: dropping it changes no
    value. (Pipelines make such families: k·X + (n − k)·Y for k = 0..n.)

    The sums are tried in order, each against those still kept (earlier ones dropped, later
    ones not yet): a sum kept stays kept when others go, since fewer pairs remain.
    """
    if len(sums) <= 2:
        return list(sums)
    columns = list(dict.fromkeys(t for s in sums for t in s))
    vectors = np.asarray([[s.get(t, 0) for t in columns] for s in sums], dtype=np.int64)
    kept = np.ones(len(sums), dtype=bool)
    for b in range(len(sums)):
        if kept.sum() <= 2:
            break
        others = np.flatnonzero(kept)
        others = others[others != b]
        if _on_a_segment(vectors[others] - vectors[b]):
            kept[b] = False
    return [s for s, keep in zip(sums, kept.tolist(), strict=True) if keep]


def _on_a_segment(offsets: np.ndarray) -> bool:
    """Whether two of the (nonzero) offsets from a point point in opposite directions, i.e.
    the point lies strictly between two others."""
    offsets = offsets[offsets.any(axis=1)]  # an equal sum is not between anything
    steps = np.gcd.reduce(np.abs(offsets), axis=1)
    directions = offsets // steps[:, None]
    leading = directions[np.arange(len(directions)), (directions != 0).argmax(axis=1)]
    canonical = np.ascontiguousarray(directions * np.sign(leading)[:, None])
    keys = canonical.view(np.dtype((np.void, canonical.itemsize * canonical.shape[1])))[:, 0]
    forward = set(keys[leading > 0].tolist())
    return any(key in forward for key in keys[leading < 0].tolist())


def _sum_expr(counts: dict[int, int], terms: list[CostTerm]) -> Expr:
    if not counts:
        return Zero()
    factor = _best_factor(list(counts.values()))
    if factor > 1:
        inner = {t: c // factor for t, c in counts.items() if c >= factor}
        outer = {t: c % factor for t, c in counts.items() if c % factor}
        scaled = Scale(factor, _plain_sum(inner, terms))
        if not outer:
            return scaled
        rest = _plain_sum(outer, terms)
        return Add((scaled, *(rest.items if isinstance(rest, Add) else (rest,))))
    return _plain_sum(counts, terms)


def _plain_sum(counts: dict[int, int], terms: list[CostTerm]) -> Expr:
    items = tuple(Call(terms[t]) if c == 1 else Scale(c, Call(terms[t])) for t, c in counts.items())
    return items[0] if len(items) == 1 else Add(items)


def _best_factor(counts: list[int]) -> int:
    """The repeat count (layers x micro-batches) to pull out of a sum as `k × [...]`, or 1.

    Each term contributes floor(count/k) copies inside the bracket and the remainder after
    it. A candidate scores (share of the terms that go inside)² x log(k): the per-layer
    bracket of the seed (`4 × [...]`) beats pulling out a term that repeats more
    (`16 × [expert ...]`), and `220 × [... + 4 × X] + X` beats `4 × [55 × ... + 220 × X]`
    for 220 layer-micro-batches. At least two terms must go inside.
    """
    best, best_score = 1, 0.0
    for factor in sorted({d for c in counts for d in _divisors(c)}):
        inside = sum(1 for c in counts if c >= factor)
        if inside < 2:
            continue
        score = (inside / len(counts)) ** 2 * math.log(factor)
        if score > best_score + 1e-12:
            best, best_score = factor, score
    return best


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, min(n, 4096) + 1) if n % d == 0]


def evaluate(expr: Expr, seconds: Callable[[CostTerm], float]) -> float:
    """The value of `expr` when each term costs `seconds(term)`."""
    if isinstance(expr, Call):
        return seconds(expr.term)
    if isinstance(expr, Scale):
        return expr.factor * evaluate(expr.expr, seconds)
    if isinstance(expr, Add):
        return sum(evaluate(e, seconds) for e in expr.items)
    if isinstance(expr, Max):
        return max(evaluate(e, seconds) for e in expr.items)
    return 0.0
