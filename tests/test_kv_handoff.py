"""The KV handoff of a disaggregated serve (dagc/passes/transfers.py; docs/semantics.md,
"KV handoff").

The prefill phase of a serve whose decode runs on other GPUs sends each layer's KV cache,
right after the layer produces it, from the prefill's attention GPUs to the decode
layout's: one `kv_send_l{l}` per layer, P2P_Time(ceil(Bm·S·c_layer / min(t_send,
t_recv))) with c_layer = 2·nkv·d·w (MLA: (kv_lora + rope)·w), on the communication stream.
Every number is hand arithmetic written here. Until the front end's `prefill`/`decode`
layer flags land, the serve program is built with dataclasses.replace.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import dagc
from dagc.analysis.capacity import handoff_end
from dagc.analysis.costs import CostModel
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.analysis.formula import evaluate
from dagc.analysis.selection import cost_model
from dagc.api import formula_compiled
from dagc.ir.device import DeviceGraph
from dagc.ir.logical import Mode, Program, prefill_phase
from dagc.ir.steps import BlockSteps, Step, StepProgram, Stream
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.verify import VerificationError, verify
from dagc.passes.manager import PassOptions, run_passes
from dagc.passes.transfers import insert_transfers
from tests.helpers import EXAMPLES

VERIFY = PassOptions(verify_each=True)


def model_text(*, layers: int = 4, kv_heads: int = 4, extra: str = "") -> str:
    return f"""
model m {{
  layers = {layers}; hidden = 1024; heads = 16; kv_heads = {kv_heads}; ffn = 4096
  vocab = 1000; attention_kernel = fused; attention_mask = causal{extra}
}}
"""


def serve(
    text: str,
    decode_group: str,
    decode_tp: int,
    *,
    output: int = 16,
) -> Program:
    """The file as a disaggregated serve: its layout prefills; the same blocks on
    `decode_group` (tp = `decode_tp`) decode."""
    program = dagc.compile_text(text, "t.dag").program
    decode = tuple(
        replace(
            r,
            blocks=tuple(replace(b, group=decode_group, degree=decode_tp) for b in r.blocks),
        )
        for r in program.ranges
    )
    workload = replace(program.workload, mode=Mode.SERVE, output=output)
    return replace(program, workload=workload, decode_ranges=decode)


def prefill_of(program: Program) -> Program:
    prefill = prefill_phase(program)
    assert prefill.kv_handoff == program.decode_ranges
    return prefill


def dense(batch: int = 8, seq: int = 128, microbatches: int = 1, *, layers: int = 4) -> str:
    return (
        model_text(layers=layers)
        + f"""
workload {{ batch = {batch}; seq = {seq}; microbatches = {microbatches} }}
devices {{ group p = gpu[0..3]; group d = gpu[8..9]; group near = gpu[4..5] }}
layers 0..{layers - 1} on p {{ embed; attention tp=4; mlp tp=4; lm_head tp=4 }}
"""
    )


def steps_of(program: Program) -> StepProgram:
    steps: StepProgram = run_passes(program, VERIFY, until="assign-streams")
    return steps


def graph_of(program: Program, *, collapse: bool = False) -> DeviceGraph:
    options = PassOptions(verify_each=True, enable=frozenset({"collapse-symmetric"}))
    graph: DeviceGraph = run_passes(program, options if collapse else VERIFY)
    return graph


def sends(steps: StepProgram) -> list[tuple[BlockSteps, Step]]:
    return [(b, s) for b in steps.blocks for s in b.steps if s.base == "kv_send"]


# -- where and what ---------------------------------------------------------------------------


def test_one_kv_send_per_layer_right_after_the_projections() -> None:
    steps = steps_of(prefill_of(serve(dense(), "d", 2)))
    found = sends(steps)
    assert [s.op_name(0, None) for _, s in found] == [f"kv_send_l{n}" for n in range(4)]
    for block, send in found:
        assert str(block.kind) == "attention"
        names = [s.base + s.part for s in block.steps]
        assert names[names.index("kv_send") - 1] == "qkv.v"  # after k and v exist
        assert names[names.index("kv_send") + 1] == "attn_core"
        assert [v.name for v in send.reads] == [f"k_l{block.layer}", f"v_l{block.layer}"]
        (cache,) = send.writes
        assert cache.name == f"kv_cache_l{block.layer}"
        assert cache.gpus == (8, 9)  # the decode layout's attention GPUs
        assert send.gpus == (0, 1, 2, 3)  # the senders: the prefill's attention GPUs
        assert send.stream is Stream.COMM


def test_bytes_are_the_layer_cache_over_the_fewer_links() -> None:
    """Bm·S·c_layer / min(4, 2): 8·128·(2·4·64·2) / 2 = 524,288 bytes, across nodes
    (gpu 0..3 and 8..9); to gpu[4..5] the same bytes within one node."""
    for group, nodes in (("d", 2), ("near", 1)):
        steps = steps_of(prefill_of(serve(dense(), group, 2)))
        for _, send in sends(steps):
            (term,) = send.terms
            assert term.kind is TermKind.P2P
            assert term.args == (8 * 128 * (2 * 4 * 64 * 2) // 2,)
            assert term.nodes == nodes


def test_llama_70b_tp8_to_tp8_sends_one_head_per_link() -> None:
    """examples/serving/llama_3_1_70b_disaggregated.dag: Llama-3.1-70B, B = 32, I = 4096,
    TP8 on gpu[0..7] to TP8 on gpu[8..15]: each layer 32·4096·(2·8·128·2) / 8 =
    67,108,864 bytes per link, inter-node; the cache as the decode GPUs hold it."""
    path = EXAMPLES / "serving" / "llama_3_1_70b_disaggregated.dag"
    program = prefill_of(dagc.compile_file(path).program)
    steps = steps_of(program)
    found = sends(steps)
    assert [s.op_name(0, None) for _, s in found] == [f"kv_send_l{n}" for n in range(80)]
    assert {s.terms[0].args for _, s in found} == {(67_108_864,)}
    assert {s.terms[0].nodes for _, s in found} == {2}
    assert {s.stream for _, s in found} == {Stream.COMM}
    for _, send in found:
        (cache,) = send.writes
        assert cache.gpus == tuple(range(8, 16))
        assert [(d.name, d.size) for d in cache.dims] == [
            ("sequences", 32),
            ("context", 4096),
            ("kv_heads", 8),
            ("kv_dim", 256),
        ]
        assert cache.local_sizes(0) == (32, 4096, 1, 256)  # one head per decode GPU
    graph = run_passes(steps, resume_after="assign-streams")
    assert graph.gpus() == list(range(8))


def test_uneven_links_round_up() -> None:
    """tp = 4 prefill to tp = 3 decode: 3 links, ceil(8·100·1024 / 3) = 273,067 bytes."""
    text = dense(seq=100).replace("group d = gpu[8..9]", "group d = gpu[8..10]")
    steps = steps_of(prefill_of(serve(text, "d", 3)))
    assert {s.terms[0].args for _, s in sends(steps)} == {(273_067,)}


def test_qk_norm_sends_the_normed_keys() -> None:
    text = dense().replace(model_text(), model_text(extra="; qk_norm = true"))
    steps = steps_of(prefill_of(serve(text, "d", 2)))
    for block, send in sends(steps):
        names = [s.base for s in block.steps]
        assert names[names.index("kv_send") - 1] == "qk_norm"
        assert [v.name for v in send.reads] == [f"k_normed_l{block.layer}", f"v_l{block.layer}"]


def mla(batch: int = 4, seq: int = 64) -> str:
    return f"""
model m {{
  layers = 2; hidden = 1024; heads = 8; q_lora_rank = 256; kv_lora_rank = 128
  qk_nope_head_dim = 64; qk_rope_head_dim = 32; v_head_dim = 64; ffn = 2048
  attention_kernel = fused; attention_mask = causal
}}
workload {{ batch = {batch}; seq = {seq} }}
devices {{ group p = gpu[0..3]; group d = gpu[8..15] }}
layers 0..1 on p {{ attention tp=4; mlp tp=4 }}
"""


def test_mla_sends_the_latent_and_the_rope_key() -> None:
    """(kv_lora + rope)·w = (128 + 32)·2 = 320 B per token: 4·64·320 / min(4, 8) bytes."""
    steps = steps_of(prefill_of(serve(mla(), "d", 8)))
    for block, send in sends(steps):
        names = [s.base + s.part for s in block.steps]
        assert names[names.index("kv_send") - 1] == "qkv.kv_a_norm"
        layer = block.layer
        assert [v.name for v in send.reads] == [f"kv_latent_l{layer}", f"kv_a_l{layer}"]
        assert send.terms[0].args == (4 * 64 * 320 // 4,)
        (cache,) = send.writes
        assert [d.size for d in cache.dims] == [4, 64, 160]
        assert cache.gpus == tuple(range(8, 16))


# -- the DAG ----------------------------------------------------------------------------------


def p2p_only(graph: DeviceGraph, seconds: float = 1.0) -> np.ndarray:
    """Every P2P costs `seconds`, everything else nothing."""
    term_costs = np.asarray(
        [seconds if t.kind is TermKind.P2P else 0.0 for t in graph.terms.terms], dtype=np.float64
    )
    return op_costs(graph, term_costs)


@pytest.mark.parametrize("microbatches", [1, 2])
def test_the_handoffs_queue_on_the_communication_stream(microbatches: int) -> None:
    """With only the kv_sends costing (1 s each), the senders' communication stream runs
    them one after another: the critical path is L·m seconds and ends with the last one."""
    graph = graph_of(prefill_of(serve(dense(microbatches=microbatches), "d", 2)))
    path = critical_path(graph, p2p_only(graph))
    assert path.time == pytest.approx(4 * microbatches)
    kv_ops = [op for op in range(graph.num_ops) if graph.name(op).startswith("kv_send")]
    assert len(kv_ops) == 4 * microbatches
    assert graph.name(path.ops[-1]).startswith("kv_send_l3")
    assert max(path.finish[kv_ops]) <= path.time
    assert handoff_end(graph, path.finish) == pytest.approx(4 * microbatches)


def test_the_critical_path_ends_no_earlier_than_the_last_kv_send() -> None:
    """Real costs (the roofline): the handoff of the last layer ends within the path."""
    program = prefill_of(serve(dense(), "d", 2))
    graph = graph_of(program)
    model, _ = cost_model(program)
    costs = op_costs(graph, model.term_costs(graph.terms.terms))
    path = critical_path(graph, costs)
    kv_ops = [op for op in range(graph.num_ops) if graph.name(op).startswith("kv_send")]
    assert path.time >= max(path.finish[kv_ops]) > 0
    # the handoff overlaps compute: on the communication stream, the senders' compute goes on
    free = np.where(np.isin(np.arange(graph.num_ops), kv_ops), 0.0, costs)
    compute_only = critical_path(graph, free)
    assert path.time < compute_only.time + float(costs[kv_ops].sum())


def test_the_decode_gpus_only_receive() -> None:
    graph = graph_of(prefill_of(serve(dense(), "d", 2)))
    assert graph.gpus() == [0, 1, 2, 3]


def test_verify_passes_collapsed_and_pipelined() -> None:
    graph_of(prefill_of(serve(dense(microbatches=2), "d", 2)), collapse=True)
    staged = dense().replace(
        "layers 0..3 on p { embed; attention tp=4; mlp tp=4; lm_head tp=4 }",
        "layers 0..1 on p { embed; attention tp=4; mlp tp=4 }\n"
        "layers 2..3 on near { attention tp=2; mlp tp=2; lm_head tp=2 }",
    )
    program = prefill_of(serve(staged, "d", 2))
    steps = steps_of(program)
    assert [s.gpus for _, s in sends(steps)] == [(0, 1, 2, 3)] * 2 + [(4, 5)] * 2
    graph_of(program)


def test_no_handoff_without_a_disaggregated_decode() -> None:
    program = dagc.compile_text(dense(), "t.dag").program
    assert sends(steps_of(program)) == []
    graph = graph_of(program)
    assert handoff_end(graph, np.ones(graph.num_ops)) is None
    collocated = replace(program, workload=replace(program.workload, mode=Mode.SERVE, output=4))
    assert sends(steps_of(prefill_phase(collocated))) == []


def test_the_verifier_knows_where_the_cache_goes() -> None:
    """A kv_send writing onto other GPUs than the decode layout's attention is a bug."""
    program = prefill_of(serve(dense(), "d", 2))
    steps = insert_transfers(run_passes(program, until="insert-collectives"))
    verify(steps)
    wrong = replace(program, kv_handoff=serve(dense(), "near", 2).decode_ranges)
    with pytest.raises(VerificationError, match="kv_send of attention l0"):
        verify(replace(steps, program=wrong))
    without = replace(program, kv_handoff=())
    with pytest.raises(VerificationError, match="has no handoff for"):
        verify(replace(steps, program=without))


class Scaled(CostModel):
    """The roofline with P2P terms `factor` times as slow (a slow link between the layouts)."""

    def __init__(self, base: CostModel, factor: float) -> None:
        self.base, self.factor = base, factor
        self.name = f"{base.name}, P2P x{factor:g}"

    def term_seconds(self, term: CostTerm) -> float:
        seconds = self.base.term_seconds(term)
        return seconds * self.factor if term.kind is TermKind.P2P else seconds


def test_the_formula_of_a_prefill_with_handoff_is_its_critical_path() -> None:
    """The max-plus formula keeps the handoff's stream: it equals the critical path when the
    handoff hides behind the compute and when it dominates."""
    text = dense(microbatches=2)
    compiled = dagc.compile_text(text, "t.dag")
    compiled = replace(compiled, program=prefill_of(serve(text, "d", 2)))
    result = formula_compiled(compiled)
    assert result.exact
    graph = graph_of(compiled.program, collapse=True)
    roofline, _ = cost_model(compiled.program)
    for model in (roofline, Scaled(roofline, 1e3), Scaled(roofline, 1e-3)):
        path = critical_path(graph, op_costs(graph, model.term_costs(graph.terms.terms)))
        assert evaluate(result.expression, model.term_seconds) == pytest.approx(path.time)


def test_dp_replicas_hand_their_own_sequences_over() -> None:
    """Prefill and decode both as 4 attention replicas (tp = 1), written with the front
    end's layer flags: 4 links, 8·128·(2·4·64·2) / 4 = 262,144 bytes; the decode replicas
    hold their own sequences (split by sequences)."""
    text = (
        model_text(layers=2)
        + """
workload { mode = serve; batch = 8; input = 128; output = 8 }
devices { group p = gpu[0..3]; group d = gpu[8..11] }
layers 0..1 on p prefill { embed dp=4; attention dp=4; mlp dp=4; lm_head dp=4 }
layers 0..1 on d decode { embed dp=4; attention dp=4; mlp dp=4; lm_head dp=4 }
"""
    )
    program = prefill_of(dagc.compile_text(text, "t.dag").program)
    found = sends(steps_of(program))
    assert len(found) == 2
    for _, send in found:
        assert send.terms[0].args == (262_144,)
        (cache,) = send.writes
        assert str(cache.placement) == "split(sequences)"
        assert cache.gpus == (8, 9, 10, 11)
    assert graph_of(program).gpus() == [0, 1, 2, 3]
