"""The search: enumerate, prune exactly, evaluate in waves, rank.

1. Every layout of the space is built (dagc.search.space); one that cannot run is counted
   under its reason.
2. Each valid layout gets its lower bounds from the step IR (dagc.search.prune): one whose
   memory bound exceeds the GPU's memory, or whose TPOT/TTFT bound exceeds an SLA, is
   dropped and counted.
3. Branch and bound in waves: the rest are sorted by the lower bound of the objective
   (ties by the layout's order); a wave is the next `wave` of them, all evaluated (in
   parallel when asked); after each wave the threshold is the K-th best feasible score so
   far (K = `top`), and every layout whose bound is worse than it is dropped unevaluated.
   Wave boundaries depend only on the sorted list, never on timing, so the result is the
   same byte for byte whatever the number of workers.

Pruning by bound never drops a layout that would rank in the top K: its score is at least
its bound, which is worse than K layouts already evaluated (ties are kept).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from dagc.analysis.selection import CostOptions, cost_model
from dagc.ir.logical import Mode, Program, Schedule
from dagc.search.evaluate import (
    Bounded,
    Evaluation,
    Failed,
    bound,
    evaluate,
    score,
    score_bound,
)
from dagc.search.space import REASONS, Invalid, Layout, Objective, Space, layout_program, layouts

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TOP = 10
# Layouts evaluated per wave, at least; a fixed number, so that waves never depend on timing.
MIN_WAVE = 8
OVER_MEMORY = "over memory"
OVER_SLA = "over the SLA"


@dataclass(frozen=True)
class Options:
    """How to search: objective, K, SLAs (seconds), parallelism, pruning."""

    objective: Objective | None = None  # None: the mode's default
    top: int = DEFAULT_TOP
    tpot_max_s: float | None = None
    ttft_max_s: float | None = None
    costs: CostOptions | None = None
    workers: int = 1
    ray: str | None = None  # a Ray address ("" or "auto": start or join a local one)
    prune: bool = True  # False: evaluate every valid layout (brute force)
    wave: int | None = None  # layouts per wave (default max(top, MIN_WAVE))


def default_objective(program: Program) -> Objective:
    if program.training is not None:
        return Objective.ITERATION
    if program.mode is Mode.PREFILL:
        return Objective.LATENCY
    return Objective.THROUGHPUT


@dataclass(frozen=True)
class Counts:
    """What happened to the layouts of the space (they add up to `considered`)."""

    considered: int
    invalid: dict[str, int]
    over_memory_bound: int
    over_sla_bound: int
    pruned_by_bound: int
    evaluated: int
    over_memory: int  # evaluated, then found not to fit
    over_sla: int  # evaluated, then found over an SLA
    seconds: float = field(default=0.0, compare=False)

    def check(self) -> None:
        dropped = sum(self.invalid.values()) + self.over_memory_bound + self.over_sla_bound
        assert self.considered == dropped + self.pruned_by_bound + self.evaluated


@dataclass(frozen=True)
class Ranked:
    """One evaluated layout and its score (lower is better)."""

    evaluation: Evaluation
    score: float


@dataclass(frozen=True)
class SearchResult:
    space: Space
    objective: Objective
    options: Options
    ranked: tuple[Ranked, ...]  # the top K feasible layouts, best first
    feasible: tuple[Ranked, ...]  # every evaluated layout that fits (the Pareto front's)
    counts: Counts

    @property
    def best(self) -> Ranked | None:
        return self.ranked[0] if self.ranked else None

    def best_program(self) -> Program | None:
        best = self.best
        return layout_program(self.space, best.evaluation.layout) if best else None


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def search(
    space: Space, options: Options | None = None, progress: Progress | None = None
) -> SearchResult:
    """Search `space` (see the module docstring)."""
    options = options or Options()
    objective = options.objective or default_objective(space.base)
    started = time.perf_counter()
    invalid: dict[str, int] = dict.fromkeys(REASONS, 0)
    valid: list[Layout] = []
    considered = 0
    for layout in layouts(space):
        considered += 1
        try:
            layout_program(space, layout)
        except Invalid as error:
            invalid[error.reason] += 1
            continue
        valid.append(layout)
    with _pool(options) as pool:
        # layouts that differ only in what the bound cannot see share one bound
        keys = [bound_key(layout) for layout in valid]
        unique = list(dict.fromkeys(keys))
        found = pool.map(_bound_task(space, options.costs), unique, "bounds", progress)
        by_key = dict(zip(unique, found, strict=True))
        bounded = [
            replace(by_key[key], layout=layout) for key, layout in zip(keys, valid, strict=True)
        ]
        candidates: list[tuple[float, Layout]] = []
        over_memory_bound = over_sla_bound = 0
        _, params = cost_model(space.base, options.costs)
        for each in bounded:
            if each.bound is None:
                invalid[REASONS[-1]] += 1
                continue
            if each.bound.memory_bytes > params.memory_bytes:
                over_memory_bound += 1
            elif _over_sla(options, each.bound.tpot_s, each.bound.ttft_s, slack=True):
                over_sla_bound += 1
            else:
                candidates.append((score_bound(space, objective, each.bound), each.layout))
        candidates.sort(key=lambda c: (c[0], c[1].key()))
        feasible: list[Ranked] = []
        evaluated = over_memory = over_sla = pruned = 0
        wave = options.wave or max(options.top, MIN_WAVE)
        position = 0
        while position < len(candidates):
            if options.prune and len(feasible) >= options.top:
                threshold = sorted(r.score for r in feasible)[options.top - 1]
                if candidates[position][0] > _above(threshold):  # sorted: none can beat it
                    pruned = len(candidates) - position
                    break
            batch = [layout for _, layout in candidates[position : position + wave]]
            position += len(batch)
            results = pool.map(_evaluate_task(space, options.costs), batch, None, None)
            for result in results:
                if isinstance(result, Failed):
                    invalid[REASONS[-1]] += 1
                    continue
                evaluated += 1
                if not result.fits:
                    over_memory += 1
                elif _over_sla(options, result.tpot_s, result.ttft_s):
                    over_sla += 1
                else:
                    feasible.append(Ranked(result, score(objective, result)))
            if progress is not None:
                progress("evaluate", position, len(candidates))
    feasible.sort(key=lambda r: (r.score, r.evaluation.layout.key()))
    counts = Counts(
        considered=considered,
        invalid={k: v for k, v in invalid.items() if v},
        over_memory_bound=over_memory_bound,
        over_sla_bound=over_sla_bound,
        pruned_by_bound=pruned,
        evaluated=evaluated,
        over_memory=over_memory,
        over_sla=over_sla,
        seconds=time.perf_counter() - started,
    )
    counts.check()
    return SearchResult(
        space, objective, options, tuple(feasible[: options.top]), tuple(feasible), counts
    )


# A bound is a sum of the same costs as the critical path, added in another order: it may
# exceed an equal true figure by a rounding error. Pruning compares with this relative slack.
SLACK = 1e-9


def _above(value: float) -> float:
    """`value` plus the rounding slack (for a bound to be worse than it, surely)."""
    return value + SLACK * abs(value)


def bound_key(layout: Layout) -> Layout:
    """The layout whose bound `layout` shares: a pipeline schedule changes only program
    order (the `order` pass), never the step IR the bound is computed from, so zb_h1 and
    1f1b (one chunk per stage) have the same bound."""
    if layout.schedule is Schedule.ZB_H1:
        return replace(layout, schedule=Schedule.ONE_F_ONE_B)
    return layout


def _over_sla(
    options: Options, tpot_s: float | None, ttft_s: float | None, *, slack: bool = False
) -> bool:
    def over(value: float | None, limit: float | None) -> bool:
        if value is None or limit is None:
            return False
        return value > (_above(limit) if slack else limit)

    return over(tpot_s, options.tpot_max_s) or over(ttft_s, options.ttft_max_s)


# -- running tasks: in-process, local processes, or Ray ----------------------------------------


@dataclass(frozen=True)
class _bound_task:
    space: Space
    costs: CostOptions | None

    def __call__(self, layout: Layout) -> Bounded:
        return bound(self.space, layout, self.costs)


@dataclass(frozen=True)
class _evaluate_task:
    space: Space
    costs: CostOptions | None

    def __call__(self, layout: Layout) -> Evaluation | Failed:
        return evaluate(self.space, layout, self.costs)


class _Pool:
    """Maps a task over items, results in the items' order, whatever ran them."""

    def __init__(self, workers: int, ray: str | None) -> None:
        self.workers = workers
        self.ray = ray
        self.executor: Executor | None = None

    def __enter__(self) -> _Pool:
        if self.ray is not None:
            from dagc.search.ray_pool import start

            start(self.ray)
        elif self.workers > 1:
            self.executor = ProcessPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)

    def map(
        self,
        task: Callable[[Layout], T],
        items: Sequence[Layout],
        phase: str | None,
        progress: Progress | None,
    ) -> list[T]:
        out: list[T] = []
        chunks = list(_chunks(items, self._chunk(len(items))))
        if self.ray is not None:
            from dagc.search.ray_pool import map_chunks

            for chunk_results in map_chunks(task, chunks):
                out += chunk_results
                if progress and phase:
                    progress(phase, len(out), len(items))
            return out
        if self.executor is None:
            results: Iterable[list[T]] = (_run_chunk(task, chunk) for chunk in chunks)
        else:
            results = self.executor.map(_run_chunk, [task] * len(chunks), chunks)
        for chunk_results in results:
            out += chunk_results
            if progress and phase:
                progress(phase, len(out), len(items))
        return out

    def _chunk(self, n: int) -> int:
        parallel = max(self.workers, 1) if self.ray is None else 8
        return max(1, min(32, -(-n // (4 * parallel))))


def _run_chunk(task: Callable[[Any], R], chunk: list[Any]) -> list[R]:
    return [task(item) for item in chunk]


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _pool(options: Options) -> _Pool:
    workers = options.workers if options.workers > 0 else (os.cpu_count() or 1)
    return _Pool(workers, options.ray)


# -- the report -----------------------------------------------------------------------------

OBJECTIVE_TEXT = {
    (Objective.LATENCY, "prefill"): "latency (the critical path), lower is better",
    (Objective.LATENCY, "decode"): "latency (TPOT), lower is better",
    (Objective.LATENCY, "serve"): "latency (TPOT), lower is better",
    (Objective.THROUGHPUT, "decode"): "throughput (tokens/s per GPU), higher is better",
    (Objective.THROUGHPUT, "serve"): "throughput (tokens/s per GPU), higher is better",
    (Objective.ITERATION, "training"): "iteration time, lower is better (every layout uses"
    " all the GPUs and the same global batch)",
}


def mode_name(program: Program) -> str:
    return "training" if program.training is not None else program.mode.value


def to_report(result: SearchResult) -> Any:
    """The back end's SearchReport of a search (dagc.backends.search_report)."""
    from dagc.backends.search_report import Row, SearchReport, pareto_front

    space, options = result.space, result.options
    base = space.base
    mode = mode_name(base)

    def row(rank: int, ranked: Ranked) -> Row:
        e = ranked.evaluation
        return Row(
            rank=rank,
            layout=e.layout.summary(space.training),
            score=ranked.score,
            time_s=e.time_s,
            tokens_per_s_per_gpu=e.tokens_per_s_per_gpu,
            memory_bytes=e.memory_bytes,
            mfu=e.mfu,
            ttft_s=e.ttft_s,
            tpot_s=e.tpot_s,
            e2e_s=e.e2e_s,
            iteration_s=e.iteration_s,
            max_batch=e.max_batch,
        )

    rows = tuple(row(i + 1, r) for i, r in enumerate(result.ranked))
    every = [row(0, r) for r in result.feasible]
    if mode in ("decode", "serve"):
        pareto = pareto_front(
            every,
            "tpot_s",
            "tokens_per_s_per_gpu",
            maximise_y=True,
        )
    else:
        pareto = pareto_front(every, "memory_bytes", "time_s", maximise_y=False)
    sla = []
    if options.tpot_max_s is not None:
        sla.append(f"TPOT ≤ {options.tpot_max_s * 1e3:g} ms")
    if options.ttft_max_s is not None:
        sla.append(f"TTFT ≤ {options.ttft_max_s * 1e3:g} ms")
    counts = result.counts
    return SearchReport(
        model=base.model.name,
        source=base.source_path,
        mode=mode,
        gpus=space.gpus,
        gpu=base.hardware.gpu,
        node_size=base.hardware.node_size,
        objective=result.objective.value,
        objective_text=OBJECTIVE_TEXT.get((result.objective, mode), result.objective.value),
        top=options.top,
        rows=rows,
        considered=counts.considered,
        invalid=counts.invalid,
        over_memory_bound=counts.over_memory_bound,
        over_sla_bound=counts.over_sla_bound,
        pruned_by_bound=counts.pruned_by_bound,
        evaluated=counts.evaluated,
        over_memory=counts.over_memory,
        over_sla=counts.over_sla,
        seconds=counts.seconds,
        sla=", ".join(sla),
        pareto=pareto,
        points=tuple(every),
    )
