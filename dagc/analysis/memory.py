"""Memory per GPU: weights, gradients, optimizer states, KV cache and activations.

Prefill (a program without `training`): the weights every GPU multiplies by (each layer and
expert its own K × N operand, plus the embedding table) and the largest working set of one
operation of one micro-batch (its inputs plus outputs) — the figures `dagc analyze` has
always given.

Inference with a KV cache (docs/semantics.md, "Memory and capacity"): a decode step (or a
serve program's decode phase) adds to the prefill's two figures the KV cache of every
micro-batch's sequences at the program's largest context (dagc/analysis/capacity.py: C in
decode mode, or the context the caller gives, I + O for a serve program); the prefill
layout of a disaggregated serve holds the cache of its I tokens until the handoff. The
working set keeps the prefill's rule, the largest inputs-plus-outputs of one operation: a
decode attention reads the cache in place (counted once, as the cache) and adds the new
tokens' q, k, v and its outputs; an absorbed MLA product (BMM_Time) its activations, not
its weights.

Training (docs/training.md, "Memory"), per GPU, w bytes per element of the workload's dtype:

- weights: the same weight elements P (those its forward steps hold), P·w bytes;
- gradients: P·w bytes (gradients are kept and reduced in the workload's dtype);
- optimizer states: 12 B per parameter (fp32 master weight and Adam's two moments);
- ZeRO: with zero ≥ 1 the optimizer states are sharded over the dp replicas (⌈P/dp⌉
  parameters per GPU); with zero = 3 the weights and gradients are too;
- activations: the peak, along the GPU's program order, of the saved values alive (below)
  plus the largest working set of one operation (of any phase).

Liveness of saved values. A value written on a GPU by a forward or recompute step and read
there by a later recompute, backward or weight-gradient step is *saved*: it stays in memory
from the operation that writes it (its start) to the last such operation that reads it (its
end), for each micro-batch. The operations of a GPU are walked in the order the
critical-path schedule runs them (start and end times; equal times in topological order,
which is the program order of each of the GPU's streams), so the peak follows the pipeline
schedule: under 1F1B stage s of p holds the saved values of at most p − s micro-batches at
once, under GPipe all m. Everything is computed on one micro-batch's template and repeated
arithmetically over the micro-batches with numpy, so millions of operations cost a few
array operations.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dagc.analysis.capacity import kv_cache_bytes, largest_context
from dagc.blocks import weight_products
from dagc.blocks.params import gpu_parameters, idle_parameters
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import DType, Training
from dagc.ir.steps import Phase, Step
from dagc.ir.terms import TermKind
from dagc.ir.values import MASK_DTYPE, Value

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Step bases whose products read a weight, as each block kind's module declares them.
WEIGHT_PRODUCTS = weight_products()
# Bytes of optimizer state per parameter: the fp32 master weight and Adam's m and v.
OPTIMIZER_BYTES_PER_PARAM = 12
# Phases whose steps write values a later phase may keep alive.
WRITING_PHASES = frozenset({Phase.FORWARD, Phase.RECOMPUTE})
# Phases whose reads keep a forward value alive (saved for, or recomputed before, the
# backward).
KEEPING_PHASES = frozenset({Phase.RECOMPUTE, Phase.BACKWARD, Phase.WEIGHT_GRAD})
# Suffixes of the backward products of a weight product (`qkv_dgrad`, `qkv_wgrad`).
DGRAD, WGRAD = "_dgrad", "_wgrad"


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """One GPU's memory in bytes: what it holds for the whole run, and activations.

    `saved_activation_bytes` is the liveness peak of saved values (0 for prefill);
    `working_set_bytes` the largest inputs-plus-outputs of one operation;
    `kv_cache_bytes` the KV cache it holds (inference with a cache, else 0).
    """

    weight_bytes: int
    gradient_bytes: int = 0
    optimizer_bytes: int = 0
    saved_activation_bytes: int = 0
    working_set_bytes: int = 0
    kv_cache_bytes: int = 0

    @property
    def activation_bytes(self) -> int:
        return self.saved_activation_bytes + self.working_set_bytes

    @property
    def peak_bytes(self) -> int:
        held = self.weight_bytes + self.gradient_bytes + self.optimizer_bytes
        return held + self.kv_cache_bytes + self.activation_bytes


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Memory of every GPU, and the step with each GPU's largest working set."""

    gpus: dict[int, GpuMemory]
    working_peak_step: dict[int, Step]

    @property
    def kv_cache_bytes(self) -> int:
        """The KV cache of every GPU together."""
        return sum(g.kv_cache_bytes for g in self.gpus.values())


def estimate_memory(
    graph: DeviceGraph,
    start: FloatArray | None = None,
    finish: FloatArray | None = None,
    *,
    kv_context: int | None = None,
) -> MemoryEstimate:
    """Every GPU's memory. `start` and `finish` (seconds per operation, the critical-path
    schedule) order a training program's operations for the liveness of saved values; a
    prefill program needs neither. `kv_context`: the context whose KV cache to count
    (default: the program's largest, capacity.largest_context; a serve program's decode
    phase is a decode program at one context, so its caller gives I + O)."""
    weights, working, peaks = weights_and_working_sets(graph)
    training = graph.program.training
    if training is None:
        context = kv_context if kv_context is not None else largest_context(graph.program)
        kv = kv_cache_bytes(graph.program, context) if context is not None else {}
        gpus = {
            g: GpuMemory(weights[g], working_set_bytes=working[g], kv_cache_bytes=kv.get(g, 0))
            for g in graph.gpus()
        }
        return MemoryEstimate(gpus, peaks)
    saved = (
        saved_activation_peaks(graph, start, finish)
        if start is not None and finish is not None
        else {}
    )
    w = graph.program.workload.dtype.bytes
    gpus = {
        g: training_memory(training, weights[g] // w, w, saved.get(g, 0), working[g])
        for g in graph.gpus()
    }
    return MemoryEstimate(gpus, peaks)


def training_memory(
    training: Training, params: int, element_bytes: int, saved: int, working: int
) -> GpuMemory:
    """A GPU's training memory from the parameters it holds (`params`, before ZeRO)."""
    shard = math.ceil(params / training.dp)
    held = shard if training.zero >= 3 else params  # weights and gradients
    states = shard if training.zero >= 1 else params  # optimizer states
    return GpuMemory(
        weight_bytes=held * element_bytes,
        gradient_bytes=held * element_bytes,
        optimizer_bytes=states * OPTIMIZER_BYTES_PER_PARAM,
        saved_activation_bytes=saved,
        working_set_bytes=working,
    )


def weights_and_working_sets(
    graph: DeviceGraph,
) -> tuple[dict[int, int], dict[int, int], dict[int, Step]]:
    """Weight bytes, the largest working set of one operation, and the step that has it
    (the first one), per GPU.

    Weights: the K x N operand of every weight product the GPU's forward runs (each layer
    and expert has its own), plus the embedding table: dagc/blocks/params.py's rule, which
    the data-parallel pass shares. A recompute reruns forward products over the same
    weights, and backward products read them: only forward steps count.
    Working set: the largest inputs-plus-outputs of any single operation of one micro-batch,
    weights excluded (a weight gradient's output is a gradient, counted apart).
    """
    w = graph.program.workload.dtype.bytes
    held = gpu_parameters(graph.program.model, graph.full_steps())  # data-parallel's rule
    for gpu, layers in idle_parameters(graph.program, graph.blocks).items():
        held[gpu] = held.get(gpu, 0) + sum(layers.values())  # decode's idle experts
    weights: dict[int, int] = defaultdict(int, {gpu: n * w for gpu, n in held.items()})
    working_sets: dict[int, int] = defaultdict(int)
    peaks: dict[int, Step] = {}
    for step in graph.full_steps():
        if step.joint:
            continue
        for rank, gpu in enumerate(step.gpus):
            working = activation_bytes(step, rank, w)
            if working > working_sets[gpu]:
                working_sets[gpu] = working
                peaks[gpu] = step
    return weights, working_sets, peaks


def activation_bytes(step: Step, rank: int, w: int) -> int:
    """The working set of rank `rank`'s operation: its inputs plus outputs, weights
    excluded. A forward product reads its weight as the K × N operand; its input-gradient
    product (`_dgrad`, Get_Time(M, N, K)) reads it as the K × N operand too; its
    weight-gradient product (`_wgrad`, Get_Time(K, M, N)) writes the K × N gradient."""
    term = step.terms[rank]
    if term.kind is TermKind.MATMUL:
        m, k, n = term.args
        weight = 0
        if step.base in WEIGHT_PRODUCTS or _backward_of(step.base, DGRAD):
            weight = k * n
        elif _backward_of(step.base, WGRAD):
            weight = m * n
        return (m * k + k * n + m * n - weight) * w
    if term.kind is TermKind.ELEMENTWISE:
        return 2 * term.args[0] * w
    if term.kind.is_fused_attention:  # Q, K, V in and O out; the scores never reach memory
        return term.bytes_moved(w)
    if term.kind is TermKind.BATCHED_MATMUL:  # each of the b products' K × N is a weight
        b, m, k, n = term.args
        return b * (m * k + m * n) * w
    if term.kind is TermKind.DECODE_ATTENTION:
        # the new tokens' q, k, v in and o out; the cache it reads is the KV cache's (counted
        # apart), and no scores reach memory
        batch, heads, kv, _, d_qk, d_v = term.args
        return batch * (heads + kv) * (d_qk + d_v) * w
    if term.kind is TermKind.LATENT_DECODE_ATTENTION:
        # the absorbed queries (d_c + d_r) and latent outputs (d_c) of every head, the new
        # token's latent and rope key; the latent cache counted apart
        batch, heads, _, d_c, d_r = term.args
        return batch * (heads * (2 * d_c + d_r) + d_c + d_r) * w
    return 0


def _backward_of(base: str, suffix: str) -> bool:
    """Whether `base` is the `suffix` product of a weight product (`qkv_dgrad`)."""
    return base.endswith(suffix) and base[: -len(suffix)] in WEIGHT_PRODUCTS


def value_bytes(value: Value, gpu: int) -> int:
    """The bytes of `value` that `gpu` holds (its split share, or the whole tensor)."""
    sizes = value.local_sizes(value.gpus.index(gpu))
    return math.prod(sizes) * _dtype_bytes(value.dtype)


def _dtype_bytes(name: str) -> int:
    return 1 if name == MASK_DTYPE else DType(name).bytes


@dataclass(frozen=True)
class SavedValues:
    """The saved values of one micro-batch's template, as (value, GPU) intervals.

    Interval i: `gpu[i]` holds `nbytes[i]` from template operation `writer[i]` until the
    last of its readers; reader pair j belongs to interval `owner[j]` and is template
    operation `reader[j]`. `forward[i]`: a forward step wrote the value (else a recompute).
    """

    gpu: IntArray
    nbytes: IntArray
    writer: IntArray
    owner: IntArray
    reader: IntArray
    names: tuple[str, ...]
    forward: npt.NDArray[np.bool_]

    def per_microbatch(self, *, forward_only: bool = False) -> dict[int, int]:
        """Bytes of one micro-batch's saved values on each GPU (`forward_only`: those the
        forward writes and keeps for a later phase, without recomputed values)."""
        totals: dict[int, int] = defaultdict(int)
        for gpu, size, forward in zip(
            self.gpu.tolist(), self.nbytes.tolist(), self.forward.tolist(), strict=True
        ):
            if forward or not forward_only:
                totals[gpu] += size
        return dict(totals)


def saved_values(graph: DeviceGraph) -> SavedValues:
    """The (value, GPU) pairs of one micro-batch that a later phase keeps alive."""
    offsets: list[int] = []
    offset = 0
    for step in graph.steps:
        offsets.append(offset)
        offset += step.width
    writers: dict[str, int] = {}
    for index, step in enumerate(graph.steps):
        if step.phase in WRITING_PHASES:
            for value in step.writes:
                writers[value.name] = index
    interval: dict[tuple[str, int], int] = {}
    gpu: list[int] = []
    nbytes: list[int] = []
    writer: list[int] = []
    names: list[str] = []
    forward: list[bool] = []
    owner: list[int] = []
    reader: list[int] = []
    for index, step in enumerate(graph.steps):
        if step.phase not in KEEPING_PHASES:
            continue
        for value in step.reads:
            w_index = writers.get(value.name)
            if w_index is None:
                continue
            w_step = graph.steps[w_index]
            for rank, g in enumerate(step.gpus):
                if g not in value.gpus:
                    continue
                if w_step.joint:
                    w_op = offsets[w_index]
                elif g in w_step.gpus:
                    w_op = offsets[w_index] + w_step.gpus.index(g)
                else:
                    continue  # written onto g by another GPU's step (a transfer's send)
                key = (value.name, g)
                if key not in interval:
                    interval[key] = len(gpu)
                    gpu.append(g)
                    nbytes.append(value_bytes(value, g))
                    writer.append(w_op)
                    names.append(value.name)
                    forward.append(w_step.phase is Phase.FORWARD)
                owner.append(interval[key])
                reader.append(offsets[index] + (0 if step.joint else rank))
    return SavedValues(
        gpu=np.asarray(gpu, dtype=np.int64),
        nbytes=np.asarray(nbytes, dtype=np.int64),
        writer=np.asarray(writer, dtype=np.int64),
        owner=np.asarray(owner, dtype=np.int64),
        reader=np.asarray(reader, dtype=np.int64),
        names=tuple(names),
        forward=np.asarray(forward, dtype=np.bool_),
    )


def op_levels(graph: DeviceGraph) -> IntArray:
    """The topological level of every operation (program order on each stream)."""
    levels = graph.levels
    if levels is None:
        raise ValueError("the device graph has a cycle")
    level_of = np.zeros(graph.num_ops, dtype=np.int64)
    for index, level in enumerate(levels):
        level_of[level] = index
    return level_of


def saved_activation_peaks(
    graph: DeviceGraph, start: FloatArray, finish: FloatArray
) -> dict[int, int]:
    """Per GPU, the largest bytes of saved values alive at once over the whole run.

    Each (value, GPU, micro-batch) is alive from its writer's start to its last keeping
    reader's end (the reader that ends last, ties to the later in topological order).
    Events are sorted by GPU, time and topological level, a release before an allocation
    at the same point; the running sum's largest value is the peak. A collapsed graph's
    peaks are its representatives', given to every GPU of their class.
    """
    saved = saved_values(graph)
    if saved.gpu.size == 0:
        return {}
    width, m = graph.template_size, graph.microbatches
    level = op_levels(graph)
    shift = (np.arange(m, dtype=np.int64) * width)[:, None]
    # the last reader of each interval, per micro-batch: sort pairs by (owner, end, level)
    readers = (shift + saved.reader[None, :]).ravel()
    intervals = len(saved.gpu)
    copies = np.repeat(np.arange(m, dtype=np.int64), len(saved.owner))
    owners = np.tile(saved.owner, m) + copies * intervals
    order = np.lexsort((level[readers], finish[readers], owners))
    owners, readers = owners[order], readers[order]
    last = np.flatnonzero(np.concatenate((owners[1:] != owners[:-1], [True])))
    end_op = np.empty(intervals * m, dtype=np.int64)
    end_op[owners[last]] = readers[last]
    start_op = (shift + saved.writer[None, :]).ravel()
    gpus = np.tile(saved.gpu, m)
    sizes = np.tile(saved.nbytes, m)
    # events: (gpu, time, level, release first) with +bytes at a start, −bytes at an end
    ev_gpu = np.concatenate((gpus, gpus))
    ev_time = np.concatenate((start[start_op], finish[end_op]))
    ev_level = np.concatenate((level[start_op], level[end_op]))
    ev_alloc = np.concatenate((np.ones(len(gpus), np.int64), np.zeros(len(gpus), np.int64)))
    ev_delta = np.concatenate((sizes, -sizes))
    order = np.lexsort((ev_alloc, ev_level, ev_time, ev_gpu))
    ev_gpu, running = ev_gpu[order], np.cumsum(ev_delta[order])
    # every GPU's deltas sum to zero, so the global running sum is each GPU's own
    firsts = np.flatnonzero(np.concatenate(([True], ev_gpu[1:] != ev_gpu[:-1])))
    peaks = np.maximum.reduceat(running, firsts)
    by_gpu = {int(g): int(p) for g, p in zip(ev_gpu[firsts], peaks, strict=True)}
    if graph.symmetry is not None:
        rep = graph.symmetry.representative
        return {g: by_gpu[rep.get(g, g)] for g in graph.gpus() if rep.get(g, g) in by_gpu}
    return by_gpu
