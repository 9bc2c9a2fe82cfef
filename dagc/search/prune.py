"""Exact pruning: a lower bound on a layout's time and on its memory, from the step IR.

**Time.** The `order` pass chains the operations of each stream of each GPU (its compute
stream, and its communication stream) into one path of the device DAG: each stream runs
one operation at a time (docs/internals.md, "Streams"). The critical path is the longest
path, so it is at least as long as any one stream's chain, whose length is the sum of its
operations' costs. A GPU's chain holds m copies of every per-micro-batch step the GPU
takes part in on that stream (a per-GPU step: its rank's term; a joint step: its one
term), plus the once-per-iteration tail once. So

    critical path ≥ max over (GPU, stream) of  m · Σ per-micro-batch steps + Σ tail steps

priced by the same cost model, plus **fill and drain**: the first operation o of a
(GPU g, stream σ) chain is a copy (micro-batch j, or the tail) of a template node; every
template ancestor A of *every* node on (g, σ) is, in micro-batch j, an ancestor of o (data
edges of one micro-batch; a tail node reads every micro-batch's writers), and none lies on
(g, σ)'s chain (a cycle otherwise). Among A, the nodes on one other (h, σ') all lie on
h's chain, so the chain from the first to the last of them covers them all and reaches o:
fill ≥ max over (h, σ') of  W(A ∩ (h, σ')) + fill(ancestors common to those nodes),
recursively (memoised; past a call budget a set counts 0, still a bound). Drain is the
same with descendants. Pipelines: the stage s GPU's first op waits for micro-batch j's
forward over stages 0..s−1 (each stage's busiest GPU). Training's drain is small (a
weight-gradient node has few descendants: only data edges are used, never the schedule).
On the reduced program a node of an interior layer counts its multiplicity (every copy
is related when the other node is in another layer) except when the set was taken from
nodes of the same interior layer ("pinned": one copy counted). critical path ≥
max over (g, σ) of fill + busy + drain. No device DAG is built: the step IR (the pipeline's front
half, up to `assign-streams`) is enough, and it is built on a *reduced* program.

**The reduced program.** The layers of one layer range run the same blocks on the same
GPUs, and a layer's steps depend only on its blocks, its own placement and its
neighbours' (a stage transfer into it, sequence parallelism's split residual between
blocks on one group): every interior layer of a range (neither its first nor its last) has
the same steps, up to the layer index. `reduce` keeps each range's first and last layer
and one interior layer standing for all of them (multiplicity last − first − 1), so a
range of 80 layers costs 3. Steps that exist once per program (the optimizer and ZeRO-1's
parameter all-gather, which cover all of a GPU's parameters) price the reduced program's
smaller parameter count: an under-estimate, which keeps the bound a bound (their terms are
monotone in their size). tests/test_search.py checks the reduced bound against the
unreduced one.

**Memory.** Weights (and, training, gradients and optimizer states under the ZeRO rule),
the KV cache, and the largest working set of one operation, as dagc/analysis/memory.py
counts them, from the same step IR; for a training program, of the saved activations only
one micro-batch's forward values (all alive when its first backward operation on the GPU
starts; the liveness peak is at least that). So the figure is a lower bound of the
estimate `dagc analyze` gives: a layout above the GPU's memory here is above it there.

**Serve** (collocated; the space holds no disaggregated layout): TTFT is the prefill's
critical path, bounded as above; each decode step at context C ≥ I + 1 takes at least the
step at I + 1 (a step's time does not decrease with C under the roofline, see
dagc/analysis/serving.py), so e2e ≥ bound(prefill) + (O − 1) · bound(step at I + 1).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from dagc.analysis.capacity import kv_cache_bytes, largest_context
from dagc.analysis.costs import CostModel
from dagc.analysis.memory import KEEPING_PHASES, activation_bytes, training_memory, value_bytes
from dagc.blocks.params import idle_parameters, layer_parameters
from dagc.ir.logical import BlockKind, LayerRange, Mode, Program, decode_phase, prefill_phase
from dagc.ir.steps import IterationKind, Phase, Step, StepProgram, Stream
from dagc.ir.terms import CostTerm
from dagc.passes.manager import run_passes
from dagc.passes.microbatch import template_data_edges

# Block kinds whose steps repeat for every layer of a range.
PER_LAYER = frozenset(
    {BlockKind.ATTENTION, BlockKind.MLP, BlockKind.MOE, IterationKind.PARAM_GATHER}
)


@dataclass(frozen=True)
class Reduced:
    """A program with each range cut to ≤ 3 layers, and how many layers each stands for."""

    program: Program
    multiplicity: tuple[int, ...]


def reduce(program: Program) -> Reduced:
    """`program` with every range's interior layers represented by one (see above)."""
    ranges: list[LayerRange] = []
    multiplicity: list[int] = []
    layer = 0
    for layer_range in program.ranges:
        count = layer_range.last - layer_range.first + 1
        parts = [1] * count if count <= 3 else [1, count - 2, 1]
        for index, weight in enumerate(parts):
            # embed runs before layer 0 only, lm_head after the last layer only: a range
            # keeps them on its first and its last part
            blocks = tuple(
                b
                for b in layer_range.blocks
                if not (b.kind is BlockKind.EMBED and index > 0)
                and not (b.kind is BlockKind.LM_HEAD and index < len(parts) - 1)
            )
            ranges.append(LayerRange(layer, layer, blocks))
            multiplicity.append(weight)
            layer += 1
    model = replace(program.model, layers=layer)
    return Reduced(replace(program, model=model, ranges=tuple(ranges)), tuple(multiplicity))


def step_ir(program: Program) -> StepProgram:
    """The pipeline's front half (up to assign-streams): the step IR of one micro-batch."""
    steps = run_passes(program, None, "assign-streams")
    assert isinstance(steps, StepProgram)
    return steps


@dataclass(frozen=True)
class StepCosts:
    """The busiest stream's time (the time bound) and each GPU's memory lower bound."""

    time_s: float
    memory_bytes: int


def step_bound(
    steps: StepProgram,
    multiplicity: tuple[int, ...],
    model: CostModel,
    full: Program,
    kv_context: int | None = None,
) -> StepCosts:
    """The time and memory bounds of `full` from the step IR of its reduced program."""
    program = steps.program
    m = program.workload.microbatches
    params = _parameters(steps, multiplicity)
    busy: dict[tuple[int, Stream], dict[CostTerm, int]] = defaultdict(lambda: defaultdict(int))
    for block in steps.blocks:
        per_layer = block.kind in PER_LAYER or block.kind is IterationKind.ITERATION
        for step in block.steps:
            weight = multiplicity[step.layer] if per_layer and step.layer_in_name else 1
            times = weight * (1 if step.phase is Phase.ITERATION else m)
            for rank, gpu in enumerate(step.gpus):
                term = step.term(rank)
                if step.base in WHOLE_MODEL:
                    term = _whole_model(full, step.base, term, params[gpu])
                busy[gpu, step.stream][term] += times
    terms = list(dict.fromkeys(t for counts in busy.values() for t in counts))
    price = dict(zip(terms, model.term_costs(terms).tolist(), strict=True))
    chains = {key: sum(price[t] * n for t, n in counts.items()) for key, counts in busy.items()}
    ends = _Ends(steps, multiplicity, model, full, params).bounds()
    time = max(
        (busy_s + sum(ends.get(key, (0.0, 0.0))) for key, busy_s in chains.items()),
        default=0.0,
    )
    return StepCosts(time, _memory(steps, multiplicity, params, full, kv_context))


class _Ends:
    """fill(g, σ) and drain(g, σ) of every (GPU, stream) from one micro-batch's template
    (see the module docstring, "Fill and drain")."""

    # recursive calls of `_longest` per direction; past it a set counts 0 (still a bound)
    BUDGET = 400

    def __init__(
        self,
        steps: StepProgram,
        multiplicity: tuple[int, ...],
        model: CostModel,
        full: Program,
        params: dict[int, int],
    ) -> None:
        all_steps = tuple(steps.steps())
        per_layer: list[bool] = []
        for block in steps.blocks:
            flag = block.kind in PER_LAYER or block.kind is IterationKind.ITERATION
            per_layer += [flag] * len(block.steps)
        terms: list[CostTerm] = []
        weight: list[int] = []
        layer: list[int] = []  # an interior layer's index (multiplicity > 1), else −1
        self.groups: dict[tuple[int, Stream], list[int]] = defaultdict(list)
        for step, flag in zip(all_steps, per_layer, strict=True):
            times = multiplicity[step.layer] if flag and step.layer_in_name else 1
            for rank in range(step.width):
                term = step.term(rank)
                if step.base in WHOLE_MODEL:
                    term = _whole_model(full, step.base, term, params[step.gpus[rank]])
                node = len(terms)
                terms.append(term)
                weight.append(times)
                layer.append(step.layer if times > 1 else -1)
                on = step.gpus if step.joint else (step.gpus[rank],)
                for gpu in on:
                    self.groups[gpu, step.stream].append(node)
        n = len(terms)
        unique = list(dict.fromkeys(terms))
        priced = dict(zip(unique, model.term_costs(unique).tolist(), strict=True))
        one = np.array([priced[t] for t in terms], dtype=np.float64)
        self.cost_one = one
        self.cost_all = one * np.array(weight, dtype=np.float64)
        self.layer = np.array(layer, dtype=np.int64)
        self.n = n
        inputs = frozenset(value.name for value in steps.inputs)
        src, dst = template_data_edges(all_steps, inputs)
        preds: list[list[int]] = [[] for _ in range(n)]
        succs: list[list[int]] = [[] for _ in range(n)]
        for a, b in zip(src, dst, strict=True):
            preds[b].append(a)
            succs[a].append(b)
        # template indices follow step order, a topological order of the data edges
        self.anc = [0] * n
        for node in range(n):
            bits = 0
            for p in preds[node]:
                bits |= self.anc[p] | (1 << p)
            self.anc[node] = bits
        self.desc = [0] * n
        for node in reversed(range(n)):
            bits = 0
            for q in succs[node]:
                bits |= self.desc[q] | (1 << q)
            self.desc[node] = bits
        self.index = {key: np.array(nodes, dtype=np.int64) for key, nodes in self.groups.items()}

    def bounds(self) -> dict[tuple[int, Stream], tuple[float, float]]:
        result: dict[tuple[int, Stream], tuple[float, float]] = {}
        ends = []
        for relation in (self.anc, self.desc):
            memo: dict[tuple[int, frozenset[int]], float] = {}
            budget = [self.BUDGET]
            ends.append(
                {
                    key: self._longest(*self._common(relation, nodes), relation, memo, budget)
                    for key, nodes in self.groups.items()
                }
            )
        for key in self.groups:
            result[key] = (ends[0][key], ends[1][key])
        return result

    def _common(self, relation: list[int], nodes: list[int]) -> tuple[int, frozenset[int]]:
        """The nodes related to every one of `nodes` (ancestors or descendants), and the
        interior layers `nodes` touch."""
        bits = -1
        for node in nodes:
            bits &= relation[node]
        layers = frozenset(int(x) for x in self.layer[nodes] if x >= 0)
        return (bits if nodes else 0), layers

    def _longest(
        self,
        bits: int,
        pinned: frozenset[int],
        relation: list[int],
        memo: dict[tuple[int, frozenset[int]], float],
        budget: list[int],
    ) -> float:
        """A lower bound of the longest path through copies of the template nodes in
        `bits` (every copy of each related to the chain's end), with an interior layer in
        `pinned` counted once (one copy of it is known to be related)."""
        if bits == 0 or budget[0] <= 0:
            return 0.0
        key = (bits, pinned)
        if key in memo:
            return memo[key]
        budget[0] -= 1
        raw = np.frombuffer(bits.to_bytes((self.n + 7) // 8, "little"), dtype=np.uint8)
        inside = np.unpackbits(raw, bitorder="little")[: self.n].astype(bool)
        once = np.isin(self.layer, list(pinned)) if pinned else np.zeros(self.n, dtype=bool)
        cost = np.where(once, self.cost_one, self.cost_all)
        best = 0.0
        for nodes in self.index.values():
            chosen = nodes[inside[nodes]]
            if len(chosen) == 0:
                continue
            segment = float(cost[chosen].sum())
            common, layers = self._common(relation, chosen.tolist())
            best = max(
                best, segment + self._longest(common, pinned | layers, relation, memo, budget)
            )
        memo[key] = best
        return best


# Once-per-program steps over all of a GPU's parameters (dagc/passes/data_parallel.py):
# priced with the full program's parameters, not the reduced one's.
WHOLE_MODEL = frozenset({"optimizer", "param_all_gather"})


def _whole_model(full: Program, base: str, term: CostTerm, params: int) -> CostTerm:
    """The data-parallel pass's term of `base` for a GPU holding `params` parameters."""
    training = full.training
    assert training is not None
    dp, w = training.dp, full.workload.dtype.bytes
    if base == "optimizer":
        return replace(term, args=(-(-params // dp) if training.zero >= 1 else params,))
    return replace(term, args=(-(-params * w // dp), dp))


def _parameters(steps: StepProgram, multiplicity: tuple[int, ...]) -> dict[int, int]:
    """Parameters each GPU holds in the full program (forward products', as params.py)."""
    held: dict[int, int] = defaultdict(int)
    for gpu, layers in layer_parameters(steps.program.model, steps.steps()).items():
        held[gpu] += sum(n * multiplicity[layer] for layer, n in layers.items())
    return held


def _memory(
    steps: StepProgram,
    multiplicity: tuple[int, ...],
    params: dict[int, int],
    full: Program,
    kv_context: int | None,
) -> int:
    program = steps.program
    w = program.workload.dtype.bytes
    held = defaultdict(int, params)
    for gpu, layers in idle_parameters(program, steps.blocks).items():
        held[gpu] += sum(n * multiplicity[layer] for layer, n in layers.items())
    working: dict[int, int] = defaultdict(int)
    for step in steps.steps():
        if not step.joint:
            for rank, gpu in enumerate(step.gpus):
                working[gpu] = max(working[gpu], activation_bytes(step, rank, w))
    gpus = set(held) | set(working)
    if full.training is not None:
        saved = _saved_once(steps, multiplicity)
        return max(
            training_memory(full.training, held[g], w, saved[g], working[g]).peak_bytes
            for g in gpus
        )
    context = kv_context if kv_context is not None else largest_context(full)
    kv = kv_cache_bytes(full, context) if context is not None else {}
    return max(held[g] * w + working[g] + kv.get(g, 0) for g in gpus)


def _saved_once(steps: StepProgram, multiplicity: tuple[int, ...]) -> dict[int, int]:
    """Per GPU, the bytes of one micro-batch's saved values written by its forward: all of
    them are alive at once when the micro-batch's first backward (or recompute) operation
    on the GPU starts, since every schedule runs a micro-batch's forward on a GPU before
    its backward there (dagc/analysis/memory.py, saved_values, the rule it restates)."""
    writers: dict[str, tuple[Step, bool]] = {}
    for block in steps.blocks:
        per_layer = block.kind in PER_LAYER
        for step in block.steps:
            if step.phase is Phase.FORWARD:
                for value in step.writes:
                    writers[value.name] = (step, per_layer)
    seen: set[tuple[str, int]] = set()
    saved: dict[int, int] = defaultdict(int)
    for step in steps.steps():
        if step.phase not in KEEPING_PHASES:
            continue
        for value in step.reads:
            if value.name not in writers:
                continue
            writer, per_layer = writers[value.name]
            for gpu in step.gpus:
                if gpu not in value.gpus or (not writer.joint and gpu not in writer.gpus):
                    continue
                if (value.name, gpu) in seen:
                    continue
                seen.add((value.name, gpu))
                weight = multiplicity[writer.layer] if per_layer else 1
                saved[gpu] += value_bytes(value, gpu) * weight
    return saved


@dataclass(frozen=True)
class Bound:
    """Lower bounds of a layout: of its time (prefill: critical path; decode: TPOT;
    serve: TTFT and the first decode step; training: iteration) and its peak memory."""

    time_s: float
    memory_bytes: int
    ttft_s: float | None = None
    tpot_s: float | None = None


def lower_bound(program: Program, model: CostModel) -> Bound:
    """The exact lower bounds of `program` (see the module docstring)."""
    if program.mode is Mode.SERVE:
        workload = program.workload
        assert workload.output is not None
        prefill = _phase_bound(prefill_phase(program), model)
        decode = None
        if workload.output > 1:
            first = workload.seq + 1
            cached = workload.seq + workload.output
            decode = _phase_bound(decode_phase(program, first), model, cached)
        tpot = decode.time_s if decode is not None else None
        e2e = prefill.time_s + (workload.output - 1) * (tpot or 0.0)
        # the memory a serve report gives is its decode phase's (its prefill's without one)
        memory = decode.memory_bytes if decode is not None else prefill.memory_bytes
        return Bound(e2e, memory, ttft_s=prefill.time_s, tpot_s=tpot)
    costs = _phase_bound(program, model)
    if program.mode is Mode.DECODE:
        return Bound(costs.time_s, costs.memory_bytes, tpot_s=costs.time_s)
    return Bound(costs.time_s, costs.memory_bytes)


def _phase_bound(program: Program, model: CostModel, kv_context: int | None = None) -> StepCosts:
    reduced = reduce(program)
    return step_bound(step_ir(reduced.program), reduced.multiplicity, model, program, kv_context)
