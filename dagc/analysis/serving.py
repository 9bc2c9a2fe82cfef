"""Serving figures of a decode or serve program: TTFT, TPOT, end-to-end latency, throughput.

A decode step's device DAG does not depend on the context C: only the decode attention
terms do, through their C argument (Decode_Attn_Time's fourth, MLA_Decode_Attn_Time's
third). The decode phase is therefore expanded once and re-priced at every context it
needs: the term table is small, and a longest path per context is one numpy pass over the
graph's topological levels.

A serve program (input I, output O) runs its prefill, which gives the first token (the
time to first token, TTFT, is the prefill's critical path), then decode steps j = 1 … O−1
at contexts C = I + j. When O − 1 ≤ EXACT_STEPS every step is priced. Otherwise
SAMPLED_STEPS steps at evenly spaced contexts (both ends included) are priced and the
steps between two samples are interpolated linearly. A step's time does not decrease as C
grows (the roofline prices decode attention monotonically in C, and a longest path is
monotone in its operations' costs), so every step between two samples lies between their
two times: the true sum lies between the sums that give each unpriced step its left or its
right sample's time (a left and a right Riemann sum), and so does the interpolated sum.
Reports give that interval; a cost model that is not monotone in C voids it (a plugin's
decode_attn_time, for instance), and reports say so when the sampled times show it.

Disaggregated serving (prefill and decode on disjoint GPUs): the prefill sends each
layer's KV cache to the decode GPUs (`kv_send_l{l}`, on the communication stream). The
first token is known when the prefill's last compute block ends (TTFT); decoding starts
when the last kv_send has also arrived (the handoff), so e2e = max(TTFT, handoff) + Σ
steps. In steady state one batch prefills while the previous one decodes, so throughput is
B·O / max(prefill makespan, Σ steps).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dagc.analysis.costs import CostModel
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import Mode, Program
from dagc.ir.steps import TransferKind
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.toposort import csr, gather

FloatArray = npt.NDArray[np.float64]

# Up to this many decode steps, every one is priced; above it, SAMPLED_STEPS of them.
EXACT_STEPS = 64
SAMPLED_STEPS = 65
# The position of the context C among a decode attention term's arguments.
CONTEXT_ARGUMENT = {TermKind.DECODE_ATTENTION: 3, TermKind.LATENT_DECODE_ATTENTION: 2}
# Steps whose base name starts so move the KV cache to the decode layout (not the prefill's
# own work: the first token does not wait for them).
KV_TRANSFER_PREFIX = "kv_"


def reported_context(program: Program) -> int:
    """The context of the decode step a report describes: a decode program's C; a serve
    program's last (and slowest) step, I + O − 1."""
    workload = program.workload
    if workload.mode is Mode.DECODE:
        assert workload.context is not None
        return workload.context
    if workload.mode is Mode.SERVE:
        assert workload.output is not None
        return workload.seq + workload.output - 1
    raise ValueError("a prefill program has no decode step")


def layout_gpus(program: Program) -> tuple[int, ...]:
    """Every GPU a block of the program runs on, in either layout (prefill and decode)."""
    gpus = {
        gpu
        for layer_range in (*program.ranges, *program.decode_ranges)
        for block in layer_range.blocks
        for gpu in program.group(block.group).gpus
    }
    return tuple(sorted(gpus))


@dataclass(frozen=True)
class StepSum:
    """The decode steps of a serve: how many, how many were priced, their sum and its bounds.

    `lower_s` and `upper_s` bound the true sum when a step's time does not decrease with
    the context (module docstring); both equal `total_s` when every step was priced.
    `monotone` says whether the priced steps' times did not decrease.
    """

    steps: int
    priced: int
    first_context: int
    total_s: float
    lower_s: float
    upper_s: float
    first_s: float
    last_s: float
    monotone: bool = True

    @property
    def exact(self) -> bool:
        return self.priced == self.steps

    @property
    def mean_s(self) -> float:
        return self.total_s / self.steps

    def describe(self) -> str:
        """One sentence for reports."""
        if self.exact:
            return f"exact: every decode step priced ({self.steps:,} steps)"
        width = (self.upper_s - self.lower_s) / self.total_s if self.total_s else 0.0
        text = (
            f"sampled: {self.priced} of {self.steps:,} decode steps priced at evenly spaced"
            f" contexts, the others interpolated linearly; the sum of the steps lies in"
            f" [{self.lower_s:.6g} s, {self.upper_s:.6g} s] ({width:.3%} of it wide), as a"
            " step's time does not decrease with its context"
        )
        if not self.monotone:
            text += (
                " (not so here: some sampled steps are faster at a longer context,"
                " so the interval may not hold)"
            )
        return text


def sample_positions(steps: int) -> list[int]:
    """The 0-based indices of the priced steps among `steps`: all of them up to
    EXACT_STEPS, else SAMPLED_STEPS evenly spaced ones (the first and the last included),
    each rounded to the nearest index (halves up)."""
    if steps <= EXACT_STEPS:
        return list(range(steps))
    last = SAMPLED_STEPS - 1
    return [(k * (steps - 1) * 2 + last) // (2 * last) for k in range(SAMPLED_STEPS)]


def sum_steps(first_context: int, steps: int, price: Callable[[int], float]) -> StepSum:
    """The sum of `steps` decode steps at contexts first_context, first_context + 1, …,
    `price(C)` giving one step's seconds (see the module docstring for the sampling)."""
    if steps < 1:
        raise ValueError("no decode steps to sum")
    positions = sample_positions(steps)
    times = [price(first_context + p) for p in positions]
    total = lower = upper = sum(times)
    for k in range(len(positions) - 1):
        a, b = times[k], times[k + 1]
        between = positions[k + 1] - positions[k] - 1  # unpriced steps in the gap
        total += between * (a + b) / 2  # linear interpolation, summed
        lower += between * min(a, b)
        upper += between * max(a, b)
    monotone = all(b >= a for a, b in itertools.pairwise(times))
    return StepSum(
        steps=steps,
        priced=len(positions),
        first_context=first_context,
        total_s=total,
        lower_s=lower,
        upper_s=upper,
        first_s=times[0],
        last_s=times[-1],
        monotone=monotone,
    )


class DecodePricer:
    """A decode phase's device DAG, priced at any context.

    The costs of every term but the decode attention ones are computed once; per context,
    those terms are priced again with C replaced, and the longest path is one pass over
    the graph's levels (the predecessor lists are built once).
    """

    def __init__(self, graph: DeviceGraph, model: CostModel) -> None:
        self.graph = graph
        self.model = model
        terms = graph.terms.terms
        self.base = model.term_costs(terms)
        self.varying = [(i, t) for i, t in enumerate(terms) if t.kind.is_decode_attention]
        self.offsets, self.preds = csr(graph.num_ops, graph.dst, graph.src)
        levels = graph.levels
        if levels is None:
            raise ValueError("the device graph has a cycle")
        self.levels = levels

    def term_costs(self, context: int) -> FloatArray:
        """Seconds of every term of the graph with the decode attention at `context`."""
        costs = self.base.copy()
        for index, term in self.varying:
            position = CONTEXT_ARGUMENT[term.kind]
            args = (*term.args[:position], context, *term.args[position + 1 :])
            costs[index] = self.model.term_seconds(CostTerm(term.kind, args, term.nodes))
        return costs

    def step_s(self, context: int) -> float:
        """The decode step's critical path at `context`, in seconds."""
        costs = op_costs(self.graph, self.term_costs(context))
        finish = np.zeros(self.graph.num_ops, dtype=np.float64)
        for level in self.levels:
            owner, pred = gather(self.offsets, self.preds, level)
            start = np.zeros(len(level), dtype=np.float64)
            if pred.size:
                np.maximum.at(start, owner, finish[pred])
            finish[level] = start + costs[level]
        return float(finish.max()) if finish.size else 0.0


@dataclass(frozen=True)
class Prefill:
    """What a serve's prefill phase gives: the first token's time and, when disaggregated,
    the KV handoff (end of the last kv_send) and the whole phase's makespan."""

    ttft_s: float
    makespan_s: float
    handoff_s: float | None


def prefill_times(graph: DeviceGraph, model: CostModel) -> Prefill:
    """TTFT, makespan and KV handoff of a prefill phase's device DAG (module docstring)."""
    costs = op_costs(graph, model.term_costs(graph.terms.terms))
    path = critical_path(graph, costs)
    transfer = np.asarray(
        [step.base.startswith(KV_TRANSFER_PREFIX) for step in graph.steps], dtype=bool
    )
    op_step = graph.template_step[graph.templates_of(np.arange(graph.num_ops, dtype=np.int64))]
    moving = transfer[op_step]
    if not moving.any():
        return Prefill(path.time, path.time, None)
    # the first token: the end of the last compute block (lm_head, or the last layer's)
    compute = [i for i, block in enumerate(graph.blocks) if block.kind is not TransferKind.TRANSFER]
    last = graph.step_block[op_step] == compute[-1]
    first_token = last & ~moving
    ttft = float(path.finish[first_token].max()) if first_token.any() else path.time
    return Prefill(ttft, path.time, float(path.finish[moving].max()))


@dataclass(frozen=True)
class ServingFigures:
    """The serving figures of a decode or serve program (docs/analyze.md, "Serving").

    `context` is the context of the decode step the rest of the report describes (decode:
    C; serve: the last step's, I + O − 1). Serve: `steps` sums the O − 1 decode steps
    (None when O = 1), `tpot_s` is their mean, `e2e_s` TTFT (or, disaggregated, the KV
    handoff when later) plus their sum, `tokens_per_s` B·O over e2e (disaggregated: over
    max(prefill makespan, Σ steps)). Decode: `tpot_s` is the one step, `tokens_per_s`
    B / TPOT; TTFT and e2e are None. `gpus` counts every GPU of both layouts.
    """

    mode: Mode
    batch: int
    context: int
    gpus: int
    tpot_s: float | None
    tokens_per_s: float | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    steps: StepSum | None = None
    prefill_makespan_s: float | None = None
    handoff_s: float | None = None
    # the largest batch that fits every GPU with the KV cache at max_batch_context
    # (dagc/analysis/capacity.py): C for decode, I + O for serve; 0 when none fits
    max_batch: int | None = None
    max_batch_context: int | None = None

    @property
    def tokens_per_s_per_gpu(self) -> float | None:
        return self.tokens_per_s / self.gpus if self.tokens_per_s is not None else None

    @property
    def decode_step_first_s(self) -> float | None:
        if self.mode is Mode.DECODE:
            return self.tpot_s
        return self.steps.first_s if self.steps is not None else None

    @property
    def decode_step_last_s(self) -> float | None:
        if self.mode is Mode.DECODE:
            return self.tpot_s
        return self.steps.last_s if self.steps is not None else None

    @property
    def disaggregated(self) -> bool:
        return self.handoff_s is not None

    @property
    def approximation(self) -> str:
        if self.steps is None:
            return "exact: one decode step" if self.mode is Mode.DECODE else "exact: no decode step"
        return self.steps.describe()


def decode_figures(program: Program, step_s: float) -> ServingFigures:
    """A decode program's figures from its one step's critical path."""
    workload = program.workload
    return ServingFigures(
        mode=Mode.DECODE,
        batch=workload.batch,
        context=reported_context(program),
        gpus=len(layout_gpus(program)),
        tpot_s=step_s,
        tokens_per_s=workload.batch / step_s if step_s > 0 else None,
    )


def serve_figures(
    program: Program,
    prefill: Prefill,
    price: Callable[[int], float] | None,
) -> ServingFigures:
    """A serve program's figures from its prefill and `price(C)`, one decode step's seconds
    at context C (None when O = 1: there is no decode step)."""
    workload = program.workload
    assert workload.output is not None
    batch, inputs, outputs = workload.batch, workload.seq, workload.output
    steps = sum_steps(inputs + 1, outputs - 1, price) if price and outputs > 1 else None
    decoding = steps.total_s if steps is not None else 0.0
    start = prefill.ttft_s
    if prefill.handoff_s is not None:
        start = max(start, prefill.handoff_s)
    e2e = start + decoding
    # disaggregated, in steady state one batch prefills while the previous one decodes
    period = max(prefill.makespan_s, decoding) if prefill.handoff_s is not None else e2e
    return ServingFigures(
        mode=Mode.SERVE,
        batch=batch,
        context=reported_context(program),
        gpus=len(layout_gpus(program)),
        tpot_s=steps.mean_s if steps is not None else None,
        tokens_per_s=batch * outputs / period if period > 0 else None,
        input_tokens=inputs,
        output_tokens=outputs,
        ttft_s=prefill.ttft_s,
        e2e_s=e2e,
        steps=steps,
        prefill_makespan_s=prefill.makespan_s if prefill.handoff_s is not None else None,
        handoff_s=prefill.handoff_s,
    )


def describe_mode(figures: ServingFigures) -> str:
    """`serve: batch 64, input 2048, output 256` or `decode: batch 64 at context 4096`."""
    if figures.mode is Mode.DECODE:
        return f"decode: batch {figures.batch} at context {figures.context:,}"
    text = (
        f"serve: batch {figures.batch}, input {figures.input_tokens:,},"
        f" output {figures.output_tokens:,}"
    )
    if figures.steps is not None:
        first = figures.steps.first_context
        text += f" (decode steps at contexts {first:,}..{first + figures.steps.steps - 1:,})"
    return text + (", disaggregated" if figures.disaggregated else "")


# --batch-sweep auto stops here when the largest batch that fits is not known.
AUTO_SWEEP_LIMIT = 4096


@dataclass(frozen=True)
class SweepRow:
    """One batch of a sweep: its serving figures and whether it fits every GPU's memory."""

    batch: int
    ttft_s: float | None
    tpot_s: float | None
    tokens_per_s: float | None
    tokens_per_s_per_gpu: float | None
    fits: bool

    @classmethod
    def of(cls, figures: ServingFigures, fits: bool) -> SweepRow:
        return cls(
            batch=figures.batch,
            ttft_s=figures.ttft_s,
            tpot_s=figures.tpot_s,
            tokens_per_s=figures.tokens_per_s,
            tokens_per_s_per_gpu=figures.tokens_per_s_per_gpu,
            fits=fits,
        )


@dataclass(frozen=True)
class Sweep:
    """A decode or serve program analysed at several batches (`dagc analyze --batch-sweep`).

    `skipped` holds each batch left out and why (not divisible by the micro-batches, a
    data-parallel replica without a sequence, an expansion error).
    """

    source: str
    mode: Mode
    cost_model: str
    rows: tuple[SweepRow, ...]
    skipped: tuple[tuple[int, str], ...] = ()


def largest_dp(program: Program) -> int:
    """The most data-parallel replicas of any block, in either layout."""
    blocks = [b for r in (*program.ranges, *program.decode_ranges) for b in r.blocks]
    return max((block.dp for block in blocks), default=1)


def batch_problem(program: Program, batch: int) -> str | None:
    """Why `program` cannot run at `batch` sequences (None: it can): the micro-batches must
    divide it, and every data-parallel replica needs a sequence of each micro-batch."""
    m = program.workload.microbatches
    if batch % m:
        return f"not divisible by the {m} micro-batches"
    dp = largest_dp(program)
    if batch // m < dp:
        return (
            f"a micro-batch of {batch // m} sequence{'s' if batch // m > 1 else ''} leaves"
            f" some of the dp={dp} replicas without one"
        )
    return None


def auto_batches(program: Program, limit: int | None) -> list[int]:
    """`--batch-sweep auto`: the smallest valid batch (micro-batches × the largest dp) and
    its doublings up to `limit` (the largest batch that fits, else AUTO_SWEEP_LIMIT), then
    the largest batch that fits itself, where the curve ends; at least the smallest."""
    smallest = program.workload.microbatches * largest_dp(program)
    top = max(limit if limit is not None else AUTO_SWEEP_LIMIT, smallest)
    batches = []
    batch = smallest
    while batch <= top:
        batches.append(batch)
        batch *= 2
    if limit is not None and limit > batches[-1] and limit % program.workload.microbatches == 0:
        batches.append(limit)
    return batches
