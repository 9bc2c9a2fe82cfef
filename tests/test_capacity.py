"""Memory and capacity for inference (dagc/analysis/capacity.py; docs/semantics.md,
"Memory and capacity").

Every expected number is hand arithmetic written here from the model's sizes: the KV cache
per token and layer (2·kv_i·d·w, or (kv_lora + rope)·w under MLA), the sequences a GPU
serves, the parameters each GPU holds, and the largest batch that fits by the closed form
(limit − weights) / (KV per sequence + working set per sequence).
"""

from __future__ import annotations

import json
from dataclasses import replace
from io import StringIO

import pytest

import dagc
from dagc.analysis.capacity import (
    kv_cache_bytes,
    largest_context,
    max_batch,
)
from dagc.analysis.memory import GpuMemory, MemoryEstimate, activation_bytes, estimate_memory
from dagc.api import analyze_compiled
from dagc.backends.report import write_json
from dagc.blocks.kv_cache import layer_kv_bytes, rank_kv_bytes
from dagc.blocks.shapes import count
from dagc.expand import expand
from dagc.ir.logical import DType, Mode, Program, decode_phase, prefill_phase
from dagc.ir.steps import Step
from dagc.ir.terms import batched_matmul, decode_attention, latent_decode_attention
from tests.helpers import EXAMPLES

# Llama-3.1-70B's sizes
L70, H70, NH70, KV70, F70, V70, D70 = 80, 8192, 64, 8, 28_672, 128_256, 128


def llama70b(
    batch: int = 32,
    tp: int = 8,
    microbatches: int = 1,
    kv_heads: int = KV70,
    *,
    context: int = 4096,
    dp: int = 1,
) -> str:
    """Llama-3.1-70B decoding on one group of tp·dp GPUs."""
    blocks = f"embed vocab_parallel; attention tp={tp}; mlp tp={tp}; lm_head tp={tp}"
    if dp > 1:
        blocks = f"embed dp={dp}; attention dp={dp}; mlp dp={dp}; lm_head dp={dp}"
    return f"""
model llama {{
  layers = {L70}; hidden = {H70}; heads = {NH70}; kv_heads = {kv_heads}; ffn = {F70}
  activation = swiglu; vocab = {V70}; attention_kernel = fused; attention_mask = causal
}}
workload {{ mode = decode; batch = {batch}; context = {context}; microbatches = {microbatches} }}
devices {{ group g = gpu[0..{tp * dp - 1}] }}
layers 0..{L70 - 1} on g {{ {blocks} }}
"""


def as_decode(program: Program, context: int) -> Program:
    """A prefill file's program as one decode step at `context`."""
    workload = replace(program.workload, mode=Mode.DECODE, seq=1, context=context)
    return replace(program, workload=workload)


def decode_program(text: str) -> Program:
    return dagc.compile_text(text, "t.dag").program


# -- the closed forms per token ---------------------------------------------------------------


def test_llama_70b_tp8_holds_one_kv_head_per_gpu() -> None:
    model = dagc.compile_text(llama70b(), "t.dag").program.model
    # 8 KV heads over 8 ranks: one head, K and V of d = 128, bf16
    assert [rank_kv_bytes(model, 8, rank, 2) for rank in range(8)] == [2 * 1 * 128 * 2] * 8
    assert rank_kv_bytes(model, 8, 0, 2) == 512
    assert layer_kv_bytes(model, 2) == 2 * 8 * 128 * 2 == 4096


def test_fewer_kv_heads_than_ranks_replicate_one_head_and_uneven_splits_follow_split() -> None:
    model = dagc.compile_text(llama70b(kv_heads=4), "t.dag").program.model
    assert [rank_kv_bytes(model, 8, rank, 2) for rank in range(8)] == [512] * 8
    model = dagc.compile_text(llama70b(), "t.dag").program.model
    # 8 heads over 3 ranks: 3, 3, 2 (the spec's splitting rule)
    assert [rank_kv_bytes(model, 3, rank, 2) for rank in range(3)] == [3 * 512, 3 * 512, 1024]


def deepseek_v3(dtype: str = "bf16") -> Program:
    program = dagc.compile_file(EXAMPLES / "models" / "deepseek_v3.dag").program
    return replace(program, workload=replace(program.workload, dtype=DType(dtype)))


def test_deepseek_v3_mla_holds_the_whole_latent_on_every_rank() -> None:
    model = deepseek_v3().model
    assert layer_kv_bytes(model, 2) == (512 + 64) * 2 == 1152
    assert {rank_kv_bytes(model, 32, rank, 2) for rank in range(32)} == {1152}


# -- the KV cache per GPU ---------------------------------------------------------------------


@pytest.mark.parametrize("microbatches", [1, 4])
def test_kv_cache_per_gpu_of_a_llama_70b_decode(microbatches: int) -> None:
    """Every micro-batch's sequences stay cached: m·Bm = B sequences of C tokens on each
    GPU, 80 layers of 512 B per token."""
    batch, context = 32, 4096
    program = decode_program(llama70b(batch, microbatches=microbatches, context=context))
    assert kv_cache_bytes(program, context) == {g: 80 * batch * context * 512 for g in range(8)}
    assert largest_context(program) == context


def test_kv_cache_of_deepseek_v3_per_pipeline_stage() -> None:
    """Stage 0 runs layers 0..15 (16 attention layers), the others 15 each; every GPU of a
    stage holds the whole latent of every sequence: layers·B·C·1152 B."""
    program = as_decode(deepseek_v3(), 1024)
    kv = kv_cache_bytes(program, 1024)
    b = program.workload.batch  # 32 sequences, 4 micro-batches of 8: all cached
    for gpu, layers in ((0, 16), (31, 16), (32, 15), (127, 15)):
        assert kv[gpu] == layers * b * 1024 * 1152


def test_dp_replicas_cache_their_own_sequences() -> None:
    """attention dp=4 (tp = 1) on 4 GPUs, B = 10 in one micro-batch: the replicas serve
    split(10, 4) = 3, 3, 2, 2 sequences, each with all 8 KV heads (2·8·128·2 = 4096 B)."""
    program = decode_program(llama70b(10, tp=1, dp=4, context=100))
    kv = kv_cache_bytes(program, 100)
    assert kv == {g: 80 * n * 100 * 4096 for g, n in enumerate((3, 3, 2, 2))}


def test_a_disaggregated_serve_caches_on_both_layouts() -> None:
    """examples/serving/llama_3_1_70b_disaggregated.dag, B = 32, I = 4096, O = 512: the
    decode GPUs (8..15) hold I + O tokens per sequence, the prefill GPUs (0..7) the I of the
    prefill until the handoff; 512 B per token and layer on each."""
    serve = dagc.compile_file(EXAMPLES / "serving" / "llama_3_1_70b_disaggregated.dag").program
    assert largest_context(serve) == 4096 + 512
    assert kv_cache_bytes(serve, 4608) == {g: 80 * 32 * 4608 * 512 for g in range(8, 16)}
    prefill = prefill_phase(serve)
    assert largest_context(prefill) == 4096
    assert kv_cache_bytes(prefill, 4096) == {g: 80 * 32 * 4096 * 512 for g in range(8)}
    decode = decode_phase(serve, 4097)
    assert kv_cache_bytes(decode, 4608) == kv_cache_bytes(serve, 4608)


# -- the memory estimate ----------------------------------------------------------------------

# Llama-3.1-70B on TP8, per GPU: q, k, v (8 + 2·1 heads of 128), o (8 heads), the three MLP
# matrices (28672/8 columns), 80 layers; the embedding's and lm_head's 128256/8 rows.
LAYER_PARAMS = H70 * (8 + 2) * D70 + 8 * D70 * H70 + 3 * H70 * (F70 // 8)
GPU_PARAMS = L70 * LAYER_PARAMS + 2 * (V70 // 8) * H70


def test_memory_of_a_llama_70b_decode_adds_the_kv_cache() -> None:
    batch, context = 32, 4096
    text = llama70b(batch, context=context)
    graph = expand(dagc.compile_text(text, "t.dag")).graph
    memory = estimate_memory(graph)
    assert GPU_PARAMS == 8_819_048_448  # ~70.6e9 / 8
    # the largest operation: lm_head's Get_Time(32, 8192, 16032), activations in and out
    working = batch * (H70 + V70 // 8) * 2
    for gpu in range(8):
        g = memory.gpus[gpu]
        assert g.weight_bytes == GPU_PARAMS * 2
        assert g.kv_cache_bytes == 80 * batch * context * 512
        assert g.working_set_bytes == working
        assert g.peak_bytes == GPU_PARAMS * 2 + 80 * batch * context * 512 + working
    assert memory.kv_cache_bytes == 8 * 80 * batch * context * 512
    # a serve program's decode phase counts the cache at I + O when its caller says so
    at = estimate_memory(graph, kv_context=4608)
    assert at.gpus[0].kv_cache_bytes == 80 * batch * 4608 * 512


def test_a_prefill_program_holds_no_kv_cache() -> None:
    text = llama70b(4).replace("mode = decode; ", "").replace("context = 4096", "seq = 128")
    graph = expand(dagc.compile_text(text, "t.dag")).graph
    assert largest_context(graph.program) is None
    assert {g.kv_cache_bytes for g in estimate_memory(graph).gpus.values()} == {0}


def test_working_sets_of_the_decode_terms_leave_the_cache_and_weights_out() -> None:
    """Decode attention: the new tokens' q, k, v in and outputs out,
    Bm·(h + kv)·(d_qk + d_v)·w, the cache being counted as the cache; MLA's: the absorbed
    queries and latent outputs of every head and the new token's latent and rope key,
    Bm·(h·(2·d_c + d_r) + d_c + d_r)·w; BMM_Time: b·(M·K + M·N)·w, its per-head weights
    apart."""

    def one(term: object) -> int:
        step = Step("x", 0, (0,), (term,))  # type: ignore[arg-type]
        return activation_bytes(step, 0, 2)

    c = count
    assert one(decode_attention(c(32), c(8), c(1), c(4096), c(128), c(128))) == (
        32 * (8 + 1) * 256 * 2
    )
    assert one(latent_decode_attention(c(32), c(16), c(4096), c(512), c(64))) == (
        32 * (16 * (2 * 512 + 64) + 512 + 64) * 2
    )
    assert one(batched_matmul(c(16), c(32), c(128), c(512))) == 16 * (32 * 128 + 32 * 512) * 2


def test_json_reports_kv_cache_bytes_per_gpu() -> None:
    batch, context = 8, 1000
    analysis = analyze_compiled(dagc.compile_text(llama70b(batch, context=context))).analysis
    out = StringIO()
    write_json(analysis, out)
    gpus = json.loads(out.getvalue())["gpus"]
    assert [g["memory"]["kv_cache_bytes"] for g in gpus] == [80 * batch * context * 512] * 8
    assert all(g["memory"]["peak_bytes"] == g["memory_bytes"] for g in gpus)


# -- the largest batch ------------------------------------------------------------------------


def by_hand(limit: float, weights: int, per_sequence: float, m: int, least: int) -> int:
    """The largest multiple of m, at least m·least, with weights + B·per_sequence ≤ limit
    (0 when the smallest does not fit)."""
    best = int((limit - weights) // per_sequence) // m * m
    return best if best >= m * least else 0


def test_max_batch_of_a_llama_70b_decode_by_hand() -> None:
    """Per GPU: weights 2·8,819,048,448 B fixed; per sequence 80·C·512 B of cache and
    48,448 B of working set (lm_head's (8192 + 16032)·2, the file's 32 sequences scaled)."""
    compiled = dagc.compile_text(llama70b(32, context=4608))
    program = compiled.program
    graph = expand(compiled).graph
    memory = estimate_memory(graph)
    per_sequence = 80 * 4608 * 512 + (H70 + V70 // 8) * 2
    for limit in (80e9, 141e9):
        capacity = max_batch(program, 4608, memory, limit)
        assert capacity.max_batch == by_hand(limit, GPU_PARAMS * 2, per_sequence, 1, 1)
        assert capacity.limiting_gpu == 0
    assert max_batch(program, 4608, memory, 80e9).max_batch == 330  # 62.36 GB / 188.8 MB
    assert max_batch(program, 4608, memory, 17e9).max_batch == 0  # the weights alone overflow


def test_max_batch_keeps_multiples_of_m_and_a_sequence_per_replica() -> None:
    """dp = 4 replicas (tp = 1) on 4 GPUs, m = 2: B = 2·k with k ≥ 4. Weights 1e9 B and a
    working set of 1e6 B at the file's B = 8 on every GPU; the cache 80·C·4096 B per
    sequence; the busiest replica has ceil(k/4) sequences per micro-batch."""
    program = decode_program(llama70b(8, tp=1, dp=4, microbatches=2, context=100))
    memory = MemoryEstimate({g: GpuMemory(10**9, working_set_bytes=10**6) for g in range(4)}, {})
    token = 80 * 100 * 4096  # one sequence's cache, all heads

    def fits(batch: int, limit: float) -> bool:
        k = batch // 2
        busiest = 2 * -(-k // 4)  # m · ceil(k / 4)
        return 10**9 + 10**6 * batch / 8 + busiest * token <= limit

    for limit in (1.3e9, 2e9, 5.5e9):
        expected = max((b for b in range(8, 4000, 2) if fits(b, limit)), default=0)
        assert max_batch(program, 100, memory, limit).max_batch == expected
    # the smallest batch has a sequence per replica in each micro-batch: B = 8
    assert max_batch(program, 100, memory, 1e9 + 10**6 + 2 * token).max_batch == 8
    assert max_batch(program, 100, memory, 1e9 + 10**6 + 2 * token - 1).max_batch == 0
