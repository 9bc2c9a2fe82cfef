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
from fractions import Fraction

import numpy as np

from dagc.analysis.costs import CostModel
from dagc.ir.device import DeviceGraph
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.toposort import csr

DEFAULT_MAX_BRANCHES = 32

_HASH_MASK = (1 << 64) - 1


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
    order = _Order(terms)
    rng = random.Random(0)
    salts = [rng.getrandbits(64) for _ in terms]
    counted = [include(t) for t in terms]
    op_term = graph.op_term
    n = graph.num_ops
    offsets, preds = csr(n, graph.dst, graph.src)
    remaining = np.bincount(graph.src, minlength=n)
    reference_costs = reference.term_costs(terms) if reference is not None else None
    result = SymbolicPath([], terms)
    state: dict[int, list[Sum]] = {}
    sinks: list[Sum] = []
    for level in levels:
        for op in level.tolist():
            incoming = [s for p in preds[offsets[op] : offsets[op + 1]].tolist() for s in state[p]]
            for p in preds[offsets[op] : offsets[op + 1]].tolist():
                remaining[p] -= 1
                if remaining[p] == 0:
                    del state[p]
            sums = order.prune(incoming) if incoming else [EMPTY]
            if len(sums) > max_branches:
                sums = _limit(sums, max_branches, reference_costs, result, graph.name(op))
            term = int(op_term[op])
            if counted[term]:
                sums = [s.plus(term, salts[term]) for s in sums]
            if remaining[op] == 0:
                sinks.extend(sums)
            else:
                state[op] = sums
    result.sums = order.prune(sinks)
    return result


def _limit(
    sums: list[Sum],
    limit: int,
    reference_costs: np.ndarray | None,
    result: SymbolicPath,
    where: str,
) -> list[Sum]:
    """Keep the `limit` sums longest under the reference model: a sound lower bound."""
    if reference_costs is None:
        raise FormulaTooLarge(where, len(sums), limit)
    ranked = sorted(sums, key=lambda s: -sum(reference_costs[t] * c for t, c in s.counts.items()))
    if result.exact:
        result.notes.append(
            f"{len(sums)} incomparable branches meet at {where}, more than the limit of"
            f" {limit}: the formula keeps the {limit} longest under the reference cost model."
            " It is exact for that model and a lower bound for others."
        )
    result.exact = False
    return ranked[:limit]


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
    """
    kept = list(sums)
    changed = True
    while changed and len(kept) > 2:
        changed = False
        for b in kept:
            others = [x for x in kept if x is not b]
            if any(_between(a, b, c) for a in others for c in others if a is not c):
                kept.remove(b)
                changed = True
                break
    return kept


def _between(a: dict[int, int], b: dict[int, int], c: dict[int, int]) -> bool:
    ratio: Fraction | None = None
    for term in a.keys() | b.keys() | c.keys():
        span = a.get(term, 0) - c.get(term, 0)
        offset = b.get(term, 0) - c.get(term, 0)
        if span == 0:
            if offset != 0:
                return False
            continue
        here = Fraction(offset, span)
        if ratio is None:
            ratio = here
        elif here != ratio:
            return False
    return ratio is not None and 0 < ratio < 1


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
