"""KV cache per GPU and the largest batch that fits (inference: decode and serve).

Symbols as in docs/semantics.md: B batch, m micro-batches, Bm = B/m, C context, w bytes
per element, nkv kv_heads, d_qk and d_v the key and value sizes of a head (both d outside
MLA), t the attention's tp, dp its replicas, r_kv kv_lora_rank, d_r qk_rope_head_dim.

KV cache bytes per token of one layer, unsplit (dagc.blocks.kv_cache.layer_kv_bytes, the
c_layer of the disaggregated handoff):

    c_layer = nkv·(d_qk + d_v)·w  (= 2·nkv·d·w)     grouped / multi-head attention
    c_layer = (r_kv + d_r)·w                          MLA (the latent and the rope key)

Held by rank i of an attention block (dagc.blocks.kv_cache.rank_kv_bytes), i_t = i mod t
its rank in its tensor-parallel group:

    kv_i·(d_qk + d_v)·w,  kv_i = split(nkv, t)[i_t] when nkv ≥ t, else 1 (replicated)
    (r_kv + d_r)·w        MLA: the latent is replicated on every tp rank

KV cache of GPU g at context C (`kv_cache_bytes`), summed over every layer l whose
attention runs on g (rank i of that layer's group):

    KV_g(C) = Σ_l  m·Bm_i · C · per-token bytes of rank i

where Bm_i = split(Bm, dp)[i // t] for a block with dp replicas (dagc.blocks.shapes
.rank_sequences), else Bm: every micro-batch's sequences stay cached on the GPU. C is the
keys a new token attends over (itself included); the memory estimate uses the largest
context of the program: C in decode mode, I + O for a serve program (its last token's
cache slot), I for the prefill layout of a disaggregated serve (what it holds before the
handoff).

Llama-3.1-70B on TP8 (nkv = 8, d = 128, bf16): kv_i = 1, 2·1·128·2 = 512 B per token per
layer per GPU. DeepSeek-V3 (MLA, r_kv = 512, d_r = 64): (512 + 64)·2 = 1152 B per token
per layer on every GPU of the attention group.

The largest batch (`max_batch`): weights are fixed; the KV cache of each candidate B comes
exactly from the closed form above; the working set is scaled linearly from the file's
batch, WS_g(B) = WS_g(B_file)·B/B_file (a stated approximation: the largest operation's
inputs and outputs grow with the tokens of a micro-batch, Bm·S). B is a multiple of m with
Bm ≥ dp for every block with replicas. Every KV_g is nondecreasing in B, so a binary
search over B = k·m finds the largest that fits every GPU.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from dagc.blocks.kv_cache import rank_kv_bytes
from dagc.blocks.shapes import rank_sequences
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import BlockKind, LayerRange, Mode, Program
from dagc.ir.steps import KV_SEND, BlockSteps

if TYPE_CHECKING:
    from dagc.analysis.memory import MemoryEstimate

# the largest batch max_batch tries (a program whose memory never fills stops here)
BATCH_CEILING = 1 << 40


def cache_ranges(program: Program) -> tuple[LayerRange, ...]:
    """The layout whose GPUs hold the decode's KV cache: the decode layout of a serve
    program (its `decode_ranges` when disaggregated), else the program's ranges."""
    if program.mode is Mode.SERVE and program.decode_ranges:
        return program.decode_ranges
    return program.ranges


def largest_context(program: Program) -> int | None:
    """The context whose KV cache the memory estimate counts: C (decode), I + O (serve),
    I on the prefill layout of a disaggregated serve (`kv_handoff` set); None otherwise
    (a prefill or training program holds no cache)."""
    workload = program.workload
    if workload.mode is Mode.DECODE:
        return workload.context
    if workload.mode is Mode.SERVE:
        assert workload.output is not None
        return workload.seq + workload.output
    if program.kv_handoff:
        return workload.seq
    return None


def kv_bytes_per_context_token(
    program: Program,
    ranges: tuple[LayerRange, ...] | None = None,
    batch: int | None = None,
) -> dict[int, int]:
    """{gpu: Σ_l m·Bm_i·(per-token bytes of rank i)}: the GPU's KV cache per token of
    context, over every layer whose attention it runs (`ranges`: `cache_ranges(program)`
    by default; `batch`: the workload's by default). GPUs without attention are absent."""
    if batch is not None and batch != program.workload.batch:
        program = replace(program, workload=replace(program.workload, batch=batch))
    ranges = cache_ranges(program) if ranges is None else ranges
    w, m = program.workload.dtype.bytes, program.workload.microbatches
    per_gpu: dict[int, int] = defaultdict(int)
    for layer_range in ranges:
        layers = len(layer_range.layer_indices)
        for block in layer_range.blocks:
            if block.kind is not BlockKind.ATTENTION:
                continue
            gpus = program.group(block.group).gpus
            placed = BlockSteps(
                block.kind, layer_range.first, block.group, gpus, block.degree, dp=block.dp
            )
            for rank, (gpu, sequences) in enumerate(
                zip(gpus, rank_sequences(program, placed), strict=True)
            ):
                token = rank_kv_bytes(program.model, block.degree, rank, w)
                per_gpu[gpu] += layers * m * sequences * token
    return dict(per_gpu)


def kv_cache_bytes(
    program: Program,
    context: int,
    ranges: tuple[LayerRange, ...] | None = None,
    batch: int | None = None,
) -> dict[int, int]:
    """{gpu: KV_g(C)}: the KV cache of every micro-batch's sequences at context C on each
    GPU that runs attention (see the module docstring)."""
    per_token = kv_bytes_per_context_token(program, ranges, batch)
    return {gpu: context * n for gpu, n in per_token.items()}


def _smallest_share(program: Program, ranges: tuple[LayerRange, ...]) -> int:
    """The most dp replicas of any block: each needs ≥ 1 sequence of a micro-batch."""
    return max((block.dp for r in ranges for block in r.blocks), default=1)


@dataclass(frozen=True, slots=True)
class BatchCapacity:
    """The largest batch that fits every GPU at `context`.

    `max_batch` is 0 when not even the smallest allowed batch fits; `limiting_gpu` is the
    GPU that the next allowed batch would overflow first (the lowest id among ties), None
    when nothing limits below the ceiling.
    """

    context: int
    max_batch: int
    limiting_gpu: int | None


def max_batch(
    program: Program,
    context: int,
    memory: MemoryEstimate,
    limit: float,
    ranges: tuple[LayerRange, ...] | None = None,
) -> BatchCapacity:
    """The largest B whose every GPU fits `limit` bytes at `context`.

    `memory` is the memory estimate of `program`'s graph at its file batch: its weights are
    fixed, its working sets scaled by B/B_file; the KV cache is exact (`kv_cache_bytes` on
    `ranges`, `cache_ranges(program)` by default). B is a multiple of m with Bm ≥ dp.
    """
    workload = program.workload
    m, b_file = workload.microbatches, workload.batch
    ranges = cache_ranges(program) if ranges is None else ranges
    gpus = sorted(set(memory.gpus) | set(kv_bytes_per_context_token(program, ranges)))

    def overflow(batch: int) -> int | None:
        """The first GPU over the limit at `batch`, or None when every one fits."""
        kv = kv_cache_bytes(program, context, ranges, batch)
        for gpu in gpus:
            held = memory.gpus.get(gpu)
            weights = held.weight_bytes if held else 0
            working = held.working_set_bytes * batch / b_file if held else 0.0
            if weights + working + kv.get(gpu, 0) > limit:
                return gpu
        return None

    low = _smallest_share(program, ranges)  # in micro-batch sizes Bm = k
    first = overflow(low * m)
    if first is not None:
        return BatchCapacity(context, 0, first)
    high = low
    while overflow(2 * high * m) is None:
        high *= 2
        if high * m >= BATCH_CEILING:
            return BatchCapacity(context, high * m, None)
    # overflow(low·m) is None, overflow(2·high·m) is not: search the last k that fits
    low, top = high, 2 * high
    while top - low > 1:
        middle = (low + top) // 2
        if overflow(middle * m) is None:
            low = middle
        else:
            top = middle
    return BatchCapacity(context, low * m, overflow(top * m))


def handoff_end(graph: DeviceGraph, finish: npt.NDArray[np.float64]) -> float | None:
    """When the KV handoff of a disaggregated serve's prefill phase ends: the latest finish
    (seconds, per operation: the critical-path schedule's) of its `kv_send` operations;
    None for a graph without a handoff."""
    positions = [
        position
        for position in range(graph.template_size)
        if graph.steps[int(graph.template_step[position])].base == KV_SEND
    ]
    if not positions:
        return None
    ops = np.concatenate([graph.template_ops(position) for position in positions])
    return float(finish[ops].max())
