"""`dagc analyze`: the critical path, per-GPU figures and memory of a device DAG."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dagc.analysis.costs import CostModel, Extrapolated
from dagc.analysis.critical_path import CriticalPath, critical_path, op_costs
from dagc.analysis.memory import GpuMemory, estimate_memory
from dagc.analysis.serving import ServingFigures
from dagc.analysis.streams import stream_overlap
from dagc.analysis.totals import ModelTotals, model_totals
from dagc.analysis.training import TrainingFigures, training_figures
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import BlockKind
from dagc.ir.steps import Phase, Step, StepBlockKind, TransferKind
from dagc.ir.terms import OpKind, op_kind

COMMUNICATION_KINDS = frozenset(kind for kind in OpKind if kind.is_communication)
# Every operation kind, in the order reports list ties; the JSON report lists all four.
KINDS: tuple[OpKind, ...] = tuple(OpKind)
# Block kinds as reports name them: a transfer block moves activations between stages.
BLOCK_NAMES: dict[StepBlockKind, str] = {TransferKind.TRANSFER: "pipeline_transfer"}
BLOCK_ORDER = (*BlockKind, BLOCK_NAMES[TransferKind.TRANSFER])


@dataclass(frozen=True)
class Share:
    """The critical path's time in one kind of operation or one kind of block."""

    name: str
    time_s: float
    share: float


@dataclass(frozen=True)
class TableReach:
    """Matrix products priced outside a measured cost table, and their weight on the path.

    `terms`, `raised` and `lowered` count distinct Get_Time terms (see Extrapolated);
    `path_s` is the critical path's time in operations with one of those terms.
    """

    table: str
    ranges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    fallback: str
    terms: int
    raised: int
    lowered: int
    priced: int
    path_s: float
    share: float

    def message(self) -> str:
        """The warning a report and stderr give."""
        axes = ", ".join(
            f"{name} {low}" if low == high else f"{name} {low}..{high}"
            for name, (low, high) in zip("mkn", self.ranges, strict=True)
        )
        moved = [
            f"{count} {verb} to the table's value at its nearest edge"
            for count, verb in ((self.raised, "raised"), (self.lowered, "lowered"))
            if count
        ]
        how = f", {' and '.join(moved)}" if moved else ""
        return (
            f"{self.terms} of {self.priced} distinct Get_Time terms lie outside the measured"
            f" range of {self.table} ({axes}) and were priced by the {self.fallback}{how};"
            f" they are {self.share:.1%} of the critical path's time"
        )


@dataclass(frozen=True)
class PathNode:
    """One node of the critical path: consecutive operations with the same node name."""

    name: str
    kind: OpKind
    ops: tuple[str, ...]
    terms: tuple[str, ...]
    start_s: float
    time_s: float
    share: float


@dataclass(frozen=True)
class GpuFigures:
    """What one GPU does over the whole run."""

    gpu: int
    busy_s: float
    idle_s: float
    bubble: float
    matmul_flops: int
    tflops: float
    hfu: float  # hardware FLOPs utilisation: the products it executes, over its peak
    weight_bytes: int
    activation_bytes: int  # training: saved activations' peak plus the working set
    # training only (dagc/analysis/memory.py): gradients, optimizer states, and the part of
    # activation_bytes that is the liveness peak of saved values
    gradient_bytes: int = 0
    optimizer_bytes: int = 0
    saved_activation_bytes: int = 0
    # decode and serve (dagc/analysis/capacity.py): the KV cache it holds
    kv_cache_bytes: int = 0

    @property
    def memory_bytes(self) -> int:
        """The GPU's peak memory estimate: everything it holds plus its activations."""
        held = self.weight_bytes + self.gradient_bytes + self.optimizer_bytes
        return held + self.kv_cache_bytes + self.activation_bytes

    @property
    def working_set_bytes(self) -> int:
        """The largest inputs-plus-outputs of one operation (prefill: all activations)."""
        return self.activation_bytes - self.saved_activation_bytes


@dataclass(frozen=True)
class Analysis:
    """Everything `dagc analyze` reports about one configuration."""

    graph: DeviceGraph
    cost_model: str
    peak_flops: float
    memory_limit: float
    total_s: float
    path: tuple[PathNode, ...]
    compute_s: float
    communication_s: float
    gpus: tuple[GpuFigures, ...]
    totals: ModelTotals
    executed_flops: int
    cost_notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = ()
    by_kind: tuple[Share, ...] = ()
    by_block: tuple[Share, ...] = ()
    table_reach: TableReach | None = None
    training: TrainingFigures | None = None  # None for prefill
    # decode and serve programs (dagc.api.serve_compiled): the rest describes one decode step
    serving: ServingFigures | None = None

    @property
    def tokens(self) -> int:
        """Tokens the run processes: batch x seq (every micro-batch together)."""
        workload = self.graph.program.workload
        return workload.batch * workload.seq

    @property
    def tokens_per_s(self) -> float | None:
        """Throughput: the run's tokens over the critical path's time; None when the path
        takes no time (a cost model that prices everything at 0), where it is unbounded."""
        return self.tokens / self.total_s if self.total_s > 0 else None

    @property
    def tokens_per_s_per_gpu(self) -> float | None:
        """Throughput per GPU of the configuration (None as for tokens_per_s)."""
        if self.training is not None:  # every GPU of every replica
            return self.training.tokens_per_s_per_gpu
        rate = self.tokens_per_s
        return rate / len(self.gpus) if rate is not None and self.gpus else None

    @property
    def matmul_flops(self) -> int:
        """The FLOPs of every product the device DAG runs (the same as executed_flops)."""
        return self.executed_flops

    @property
    def model_flops(self) -> int:
        """The model's FLOPs for the whole batch, whatever the sharding (ModelTotals)."""
        return self.totals.model_flops

    @property
    def params(self) -> int:
        return self.totals.params

    @property
    def active_params(self) -> int:
        return self.totals.active_params

    @property
    def kv_cache_bytes_per_token(self) -> int:
        return self.totals.kv_cache_bytes_per_token

    def _utilisation(self, flops: int) -> float:
        if not self.gpus or self.total_s == 0:
            return 0.0
        return flops / self.total_s / (self.peak_flops * len(self.gpus))

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: the model's FLOPs over time x peak x GPUs (training:
        3 x the forward's over the iteration and all dp·N GPUs)."""
        if self.training is not None:
            return self.training.mfu
        return self._utilisation(self.model_flops)

    @property
    def hfu(self) -> float:
        """Hardware FLOPs utilisation: the executed FLOPs (replicated and padded work
        included) over time x peak x GPUs."""
        return self._utilisation(self.executed_flops)

    def bottleneck(self) -> tuple[str, float]:
        """The operation family (name stem) with the largest share of the critical path."""
        by_family: dict[str, float] = defaultdict(float)
        for node in self.path:
            by_family[_family(node.name)] += node.time_s
        if not by_family:
            return ("-", 0.0)
        family = max(sorted(by_family), key=lambda f: by_family[f])
        return family, by_family[family] / self.total_s if self.total_s else 0.0


def analyze(
    graph: DeviceGraph,
    model: CostModel,
    peak_flops: float,
    memory_limit: float,
    *,
    kv_context: int | None = None,
) -> Analysis:
    """Cost every operation with `model` and gather the report's figures. `kv_context`:
    the context whose KV cache the memory counts (default: the program's largest, see
    dagc/analysis/capacity.py; a serve program's decode phase passes I + O)."""
    term_costs = model.term_costs(graph.terms.terms)
    costs = op_costs(graph, term_costs)
    path = critical_path(graph, costs)
    nodes = _path_nodes(graph, path, costs)
    communication = sum(n.time_s for n in nodes if n.kind in COMMUNICATION_KINDS)
    compute = sum(n.time_s for n in nodes) - communication
    memory = estimate_memory(graph, path.start, path.finish, kv_context=kv_context)
    gpus = _gpu_figures(graph, term_costs, path, peak_flops, memory.gpus)
    warnings = _memory_warnings(gpus, memory_limit)
    reach = _table_reach(graph, path, costs, model.extrapolated())
    if reach is not None:
        warnings += (reach.message(),)
    return Analysis(
        graph=graph,
        cost_model=model.name,
        peak_flops=peak_flops,
        memory_limit=memory_limit,
        total_s=path.time,
        path=tuple(nodes),
        compute_s=compute,
        communication_s=communication,
        gpus=gpus,
        totals=model_totals(graph.program),
        executed_flops=graph.total_matmul_flops(),
        cost_notes=tuple(model.notes()),
        warnings=warnings,
        notes=_score_notes(graph, path, costs, gpus, memory.working_peak_step),
        by_kind=_split(graph, path, costs, lambda op: op_kind(graph.term_of(op)), KINDS),
        by_block=_split(graph, path, costs, _block_name(graph), ()),
        table_reach=reach,
        training=_training(graph, path.time, peak_flops, gpus, communication),
    )


def _training(
    graph: DeviceGraph,
    total: float,
    peak_flops: float,
    gpus: tuple[GpuFigures, ...],
    communication: float,
) -> TrainingFigures | None:
    """The training figures (dagc/analysis/training.py); None for prefill."""
    training = graph.program.training
    if training is None:
        return None
    workload = graph.program.workload
    return training_figures(
        iteration_s=total,
        dp=training.dp,
        layout_gpus=len(gpus),
        tokens=workload.batch * workload.seq,
        forward_model_flops=model_totals(graph.program).model_flops,
        executed_flops=graph.total_matmul_flops(),
        peak_flops=peak_flops,
        busy_s={g.gpu: g.busy_s for g in gpus},
        communication_s=communication,
    )


def _block_name(graph: DeviceGraph) -> Callable[[int], str]:
    def name(op: int) -> str:
        block = graph.block_of(op)
        return BLOCK_NAMES.get(block, block)

    return name


def _split(
    graph: DeviceGraph,
    path: CriticalPath,
    costs: npt.NDArray[np.float64],
    key: Callable[[int], str],
    always: tuple[str, ...],
) -> tuple[Share, ...]:
    """The path's time per key of its operations, largest first (ties in report order).

    Keys in `always` are listed even when no operation of the path has them.
    """
    seconds: dict[str, float] = dict.fromkeys(always, 0.0)
    for op in path.ops:
        name = key(int(op))
        seconds[name] = seconds.get(name, 0.0) + float(costs[op])
    order = {name: i for i, name in enumerate((*KINDS, *BLOCK_ORDER))}
    names = sorted(seconds, key=lambda n: (-seconds[n], order.get(n, len(order)), n))
    total = path.time
    return tuple(Share(n, seconds[n], seconds[n] / total if total else 0.0) for n in names)


def _table_reach(
    graph: DeviceGraph,
    path: CriticalPath,
    costs: npt.NDArray[np.float64],
    outside: Extrapolated | None,
) -> TableReach | None:
    """How much of the critical path rests on products priced outside a cost table."""
    if outside is None:
        return None
    path_s = sum(float(costs[op]) for op in path.ops if graph.term_of(int(op)) in outside.terms)
    return TableReach(
        table=outside.table,
        ranges=outside.ranges,
        fallback=outside.fallback,
        terms=len(outside.terms),
        raised=len(outside.raised),
        lowered=len(outside.lowered),
        priced=outside.priced,
        path_s=path_s,
        share=path_s / path.time if path.time else 0.0,
    )


def _memory_warnings(gpus: tuple[GpuFigures, ...], limit: float) -> tuple[str, ...]:
    """One warning per run of consecutive GPUs over the limit with the same figures."""
    runs: list[list[GpuFigures]] = []
    for g in gpus:
        if g.memory_bytes <= limit:
            continue
        previous = runs[-1][-1] if runs else None
        if (
            previous is not None
            and previous.gpu == g.gpu - 1
            and _memory_key(previous) == _memory_key(g)
        ):
            runs[-1].append(g)
        else:
            runs.append([g])
    warnings = []
    for run in runs:
        g = run[0]
        who = f"gpu{g.gpu}" if len(run) == 1 else f"gpu[{g.gpu}..{run[-1].gpu}] each"
        training = (
            f", gradients {g.gradient_bytes / 1e9:.1f} GB,"
            f" optimizer states {g.optimizer_bytes / 1e9:.1f} GB"
            if g.gradient_bytes or g.optimizer_bytes
            else ""
        )
        cache = f", KV cache {g.kv_cache_bytes / 1e9:.1f} GB" if g.kv_cache_bytes else ""
        warnings.append(
            f"{who} needs {g.memory_bytes / 1e9:.1f} GB (weights {g.weight_bytes / 1e9:.1f} GB"
            f"{training}{cache}, activations {g.activation_bytes / 1e9:.1f} GB), more than"
            f" {limit / 1e9:.0f} GB"
        )
    return tuple(warnings)


def _memory_key(g: GpuFigures) -> tuple[int, ...]:
    return (
        g.weight_bytes,
        g.gradient_bytes,
        g.optimizer_bytes,
        g.activation_bytes,
        g.saved_activation_bytes,
        g.kv_cache_bytes,
    )


def _family(node_name: str) -> str:
    """`qkv_l0_gpu3` -> `qkv`, `expert_l0_15_gpu15` -> `expert`, `send_stage1` -> `send_stage`.

    A micro-batch suffix goes first: `send_stage1_mb3` -> `send_stage`.
    """
    node_name = re.sub(r"_mb\d+$", "", node_name)
    stem = node_name.split("_l", 1)[0] if "_l" in node_name else node_name
    return stem.rstrip("0123456789")


def _path_nodes(
    graph: DeviceGraph, path: CriticalPath, costs: npt.NDArray[np.float64]
) -> list[PathNode]:
    groups: list[list[int]] = []
    for op in path.ops:
        if groups and graph.node_name(groups[-1][-1]) == graph.node_name(op):
            groups[-1].append(op)
        else:
            groups.append([op])
    total = path.time or 1.0
    nodes = []
    for ops in groups:
        time = float(sum(costs[o] for o in ops))
        nodes.append(
            PathNode(
                name=graph.node_name(ops[0]),
                kind=op_kind(graph.term_of(ops[0])),
                ops=tuple(graph.name(o) for o in ops),
                terms=tuple(str(graph.term_of(o)) for o in ops),
                start_s=float(path.start[ops[0]]),
                time_s=time,
                share=time / total,
            )
        )
    return nodes


def _gpu_figures(
    graph: DeviceGraph,
    term_costs: npt.NDArray[np.float64],
    path: CriticalPath,
    peak_flops: float,
    memory: dict[int, GpuMemory],
) -> tuple[GpuFigures, ...]:
    m, total = graph.microbatches, path.time
    busy: dict[int, float] = defaultdict(float)
    flops: dict[int, int] = defaultdict(int)
    for step in graph.full_steps():  # every GPU, also those a symmetric collapse left out
        runs = 1 if step.phase is Phase.ITERATION else m  # the tail runs once per iteration
        for rank, gpu in enumerate(step.gpus):
            term = step.term(rank)
            busy[gpu] += float(term_costs[graph.terms.intern(term)]) * runs
            flops[gpu] += term.flops() * runs
    # busy is the time at least one stream runs: overlapped communication counts once
    for gpu, both in stream_overlap(graph, path).items():
        busy[gpu] -= both
    figures = []
    for gpu in graph.gpus():
        achieved = flops[gpu] / total if total else 0.0
        idle = max(total - busy[gpu], 0.0)
        figures.append(
            GpuFigures(
                gpu=gpu,
                busy_s=busy[gpu],
                idle_s=idle,
                bubble=idle / total if total else 0.0,
                matmul_flops=flops[gpu],
                tflops=achieved / 1e12,
                hfu=achieved / peak_flops,
                weight_bytes=memory[gpu].weight_bytes,
                activation_bytes=memory[gpu].activation_bytes,
                gradient_bytes=memory[gpu].gradient_bytes,
                optimizer_bytes=memory[gpu].optimizer_bytes,
                saved_activation_bytes=memory[gpu].saved_activation_bytes,
                kv_cache_bytes=memory[gpu].kv_cache_bytes,
            )
        )
    return tuple(figures)


# A value with this dim holds attention scores: a row per query token and head, a column
# per key (Bm·S·h x S). Only an explicit attention kernel has such values; a fused one
# keeps them in on-chip memory.
SCORE_DIM = "keys"
# The critical path's share in steps holding the scores at which analyze notes it.
SCORE_PATH_SHARE = 0.25


def holds_scores(step: Step) -> bool:
    """Whether `step` reads or writes the S×S attention scores (explicit kernel)."""
    return any(dim.name == SCORE_DIM for value in (*step.reads, *step.writes) for dim in value.dims)


def _score_notes(
    graph: DeviceGraph,
    path: CriticalPath,
    costs: npt.NDArray[np.float64],
    gpus: tuple[GpuFigures, ...],
    peaks: dict[int, Step],
) -> tuple[str, ...]:
    """A note when explicit attention's S×S work dominates: its steps take at least
    SCORE_PATH_SHARE of the critical path, or the GPU with the largest activation working
    set has it from one of them. Not a warning: the explicit kernel is a valid choice."""
    names: list[str] = []  # the steps holding scores, in program order
    for step in graph.steps:
        if holds_scores(step) and step.base not in names:
            names.append(step.base)
    if not names:
        return ()
    on_path = sum(float(costs[op]) for op in path.ops if holds_scores(graph.step_of(int(op))))
    share = on_path / path.time if path.time else 0.0
    facts = []
    if share >= SCORE_PATH_SHARE:
        facts.append(f"{_joined(names)} take {share:.1%} of the critical path")
    largest = max(gpus, key=lambda g: g.working_set_bytes, default=None)
    peak = peaks.get(largest.gpu) if largest is not None else None
    if largest is not None and peak is not None and holds_scores(peak):
        facts.append(
            f"gpu{largest.gpu}'s largest activation working set,"
            f" {largest.working_set_bytes / 1e9:.2f} GB, is {peak.base}'s"
        )
    if not facts:
        return ()
    return (
        "attention's explicit kernel writes the S×S scores to memory: "
        + "; ".join(facts)
        + ". A fused kernel (`attention_kernel = fused` in the model, or `kernel=fused` on"
        " the block) keeps the scores out of memory",
    )


def _joined(names: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
