"""Real MoE and embedding features: shared experts, routed dispatch, vocab-parallel embed,
tied tables and split pipeline sends (docs/semantics.md).

Every expected number is hand arithmetic from the semantics, written in the test."""

from __future__ import annotations

import math

import pytest

import dagc
from dagc.api import analyze_compiled
from dagc.expand import expand
from dagc.ir.steps import Step, StepProgram
from dagc.ir.terms import TermKind
from dagc.ir.verify.flops import expected_flops
from dagc.passes.manager import PassOptions, run_passes

W = 2  # bf16


def lowered(text: str) -> StepProgram:
    """The step IR after insert-transfers."""
    result = run_passes(dagc.compile_text(text, "t.dag").program, until="insert-transfers")
    assert isinstance(result, StepProgram)
    return result


def steps_named(steps: StepProgram, base: str, layer: int = 0) -> list[Step]:
    return [s for b in steps.blocks for s in b.steps if s.base == base and s.layer == layer]


def step(steps: StepProgram, base: str, part: str = "", layer: int = 0) -> Step:
    [found] = [s for s in steps_named(steps, base, layer) if s.part == part]
    return found


def verified(text: str) -> None:
    """The whole pipeline with the verifier after every pass, full and collapsed; FLOPs as
    the verifier expects them are what the graph runs."""
    compiled = dagc.compile_text(text, "t.dag")
    for symmetric in (False, True):
        expansion = expand(compiled, options=PassOptions(verify_each=True), symmetric=symmetric)
        if not symmetric:
            assert expansion.graph.total_matmul_flops() == expected_flops(compiled.program)


def weights_per_gpu(text: str) -> dict[int, int]:
    analysis = analyze_compiled(dagc.compile_text(text, "t.dag")).analysis
    return {g.gpu: g.weight_bytes for g in analysis.gpus}


# -- shared experts ------------------------------------------------------------------------

# T = 3·5 = 15 tokens; E = 8, k = 2: T_e = ceil(15·2/8) = 4; ep = 4: 2 experts per GPU.
SHARED = """
model m {{
  layers = 2; hidden = 64; heads = 4; head_dim = 16; activation = swiglu
  experts = 8; top_k = 2; expert_ffn = 32
  shared_experts = 2; shared_expert_ffn = 24{gate}
}}
workload {{ batch = 3; seq = 5 }}
devices {{ group a = gpu[0..3]{more} }}
layers 0..1 {{ attention on a tp=4; moe on {moe} ep=4 }}
"""


def shared(*, gate: bool = True, excursion: bool = False) -> str:
    return SHARED.format(
        gate="; shared_expert_gate = true" if gate else "",
        more="; group e = gpu[4..7]" if excursion else "",
        moe="e" if excursion else "a",
    )


def test_shared_experts_split_tokens_over_the_ranks_with_whole_weights() -> None:
    steps = lowered(shared())
    # split(15, 4) = 4, 4, 4, 3 tokens; one product of inner n_s·Fs = 2·24 = 48
    ranks = [4, 4, 4, 3]
    up = step(steps, "shared_expert", ".up")
    assert up.gpus == (0, 1, 2, 3)
    assert [t.args for t in up.terms] == [(r, 64, 48) for r in ranks]
    assert [t.args for t in step(steps, "shared_expert", ".gate").terms] == [
        (r, 64, 48) for r in ranks
    ]
    assert [t.args for t in step(steps, "shared_expert", ".act").terms] == [
        (r * 48,) for r in ranks
    ]
    assert [t.args for t in step(steps, "shared_expert", ".down").terms] == [
        (r, 48, 64) for r in ranks
    ]
    assert [t.args for t in step(steps, "shared_expert", ".score").terms] == [
        (r, 64, 1) for r in ranks
    ]
    # after the gate, before the routed experts; the output joins expert_agg
    moe = next(b for b in steps.blocks if str(b.kind) == "moe")
    order = [s.base + s.part for s in moe.steps]
    assert order.index("gate") < order.index("shared_expert.up") < order.index("expert.up")
    agg = step(steps, "expert_agg")
    assert {"shared_down_l0", "shared_score_l0"} <= {v.name for v in agg.reads}


def test_shared_expert_gate_is_optional_and_gelu_has_no_gate_product() -> None:
    steps = lowered(shared(gate=False).replace("swiglu", "gelu"))
    parts = [s.part for s in steps_named(steps, "shared_expert")]
    assert parts == [".up", ".act", ".down"]


def test_tokens_of_agg_combine_and_return_count_the_shared_experts() -> None:
    # routed: T_e·E/e = 4·2 = 8 tokens; shared: ceil(15/4) = 4; min(15, 8 + 4) = 12
    steps = lowered(shared())
    assert step(steps, "expert_agg").terms[0].args == (12 * 64,)
    # dispatch brings the routed tokens only; combine sends back all 12
    assert step(steps, "dispatch").terms[0].args == (8 * 64 * W, 4)
    assert step(steps, "combine").terms[0].args == (12 * 64 * W, 4)
    away = lowered(shared(excursion=True))
    assert step(away, "return").terms[0].args == (12 * 64 * W,)
    assert step(away, "expert_agg").terms[0].args == (12 * 64,)


def test_tokens_a_moe_gpu_touches_stop_at_every_token() -> None:
    # top_k = 8 of 8: T_e = 15, 2 experts per GPU: min(15, 30 + 4) = 15
    steps = lowered(shared().replace("top_k = 2", "top_k = 8"))
    assert step(steps, "expert_agg").terms[0].args == (15 * 64,)
    assert step(steps, "combine").terms[0].args == (15 * 64 * W, 4)


def test_shared_expert_weights_are_whole_on_every_moe_gpu() -> None:
    weights = weights_per_gpu(shared(excursion=True))
    # per layer: gate 64·8, 2 local experts of 3 products 64·32, shared: up, gate and down
    # of 64·48 each, score 64·1; 2 layers
    per_layer = 64 * 8 + 2 * 3 * 64 * 32 + 3 * 64 * 48 + 64
    assert [weights[g] for g in range(4, 8)] == [2 * per_layer * W] * 4


def test_shared_experts_verify_and_conserve_flops() -> None:
    verified(shared())
    verified(shared(excursion=True))
    # the verifier's target, by hand for one layer: T = 15
    program = dagc.compile_text(shared(), "t.dag").program
    t, h = 15, 64
    attention = 2 * t * h * 64 * 4 + 2 * 2 * 3 * 4 * 5 * 16 * 5  # q,k,v,o; scores, P·V
    gate = 4 * 2 * t * h * 8  # replicated on every rank
    experts = 8 * 4 * 2 * h * 32 * 3  # 8 experts x T_e = 4 slots x 3 products
    shared_ = 2 * t * h * 48 * 3 + 2 * t * h
    assert expected_flops(program) == 2 * (attention + gate + experts + shared_)


# -- vocab-parallel embed and tied tables ---------------------------------------------------

# V = 101 rows over 3 GPUs: split(101, 3) = 34, 34, 33; T = 2·8/2 = 8 tokens per micro-batch
EMBED = """
model m {{ layers = 2; hidden = 64; heads = 6; head_dim = 16; ffn = 96; vocab = 101{tied} }}
workload {{ batch = 2; seq = 8; microbatches = 2 }}
devices {{ group g = gpu[0..2]{more} }}
{layers}
"""
SAME_GPUS = "layers 0..1 on g {{ embed{vp}; attention tp=3; mlp tp=3; lm_head tp=3 }}"
PIPELINED = (
    "layers 0..0 on g {{ embed{vp}; attention tp=3; mlp tp=3 }}\n"
    "layers 1..1 on h {{ attention tp=3; mlp tp=3; lm_head tp=3 }}"
)
# per layer on each GPU: q, k, v 64·32 (2 heads of 16), o 32·64, up and down 64·32
LAYER = 4 * 64 * 32 + 2 * 64 * 32
ROWS = [34, 34, 33]


def embed_text(*, vp: bool, tied: bool, pipelined: bool = False) -> str:
    layers = (PIPELINED if pipelined else SAME_GPUS).format(vp=" vocab_parallel" if vp else "")
    return EMBED.format(
        tied="; tied_embeddings = true" if tied else "",
        more="; group h = gpu[3..5]" if pipelined else "",
        layers=layers,
    )


def test_vocab_parallel_embed_splits_rows_and_all_reduces() -> None:
    steps = lowered(embed_text(vp=True, tied=False))
    lookup = step(steps, "embed")
    assert [t.args for t in lookup.terms] == [(8 * 64,)] * 3  # Elem(T·H) on each rank
    reduce = step(steps, "all_reduce_embed")
    assert reduce.joint and reduce.gpus == (0, 1, 2)
    assert reduce.terms[0].kind is TermKind.ALL_REDUCE
    assert reduce.terms[0].args == (8 * 64 * W, 3)
    assert [v.name for v in reduce.reads] == ["embed_part_l0"]
    assert [v.name for v in reduce.writes] == ["x_l0_embed"]
    # the whole table on every GPU without vocab_parallel: no all-reduce
    assert not steps_named(lowered(embed_text(vp=False, tied=False)), "all_reduce_embed")


def test_vocab_parallel_embed_on_one_gpu_has_no_all_reduce() -> None:
    text = embed_text(vp=True, tied=False).replace("gpu[0..2]", "gpu[0..0]")
    text = text.replace("tp=3", "tp=1")
    assert not steps_named(lowered(text), "all_reduce_embed")


def test_embed_weights_per_gpu() -> None:
    # untied: embed's table (all of it, or its rows) plus lm_head's rows, 2 layers
    whole = weights_per_gpu(embed_text(vp=False, tied=False))
    assert [whole[g] for g in range(3)] == [(2 * LAYER + 101 * 64 + r * 64) * W for r in ROWS]
    split_ = weights_per_gpu(embed_text(vp=True, tied=False))
    assert [split_[g] for g in range(3)] == [(2 * LAYER + 2 * r * 64) * W for r in ROWS]


def test_tied_table_counts_once_on_a_gpu_running_embed_and_lm_head() -> None:
    # vocab-parallel: embed and lm_head hold the same rows, once
    split_ = weights_per_gpu(embed_text(vp=True, tied=True))
    assert [split_[g] for g in range(3)] == [(2 * LAYER + r * 64) * W for r in ROWS]
    # the whole table for embed: lm_head's rows are part of it
    whole = weights_per_gpu(embed_text(vp=False, tied=True))
    assert [whole[g] for g in range(3)] == [(2 * LAYER + 101 * 64) * W] * 3


def test_tied_table_is_a_copy_on_each_stage() -> None:
    weights = weights_per_gpu(embed_text(vp=True, tied=True, pipelined=True))
    # stage 0: one layer and embed's rows; stage 1: one layer and lm_head's rows
    assert [weights[g] for g in range(3)] == [(LAYER + r * 64) * W for r in ROWS]
    assert [weights[g] for g in range(3, 6)] == [(LAYER + r * 64) * W for r in ROWS]
    untied = weights_per_gpu(embed_text(vp=True, tied=False, pipelined=True))
    assert untied == weights


def test_vocab_parallel_embed_verifies() -> None:
    verified(embed_text(vp=True, tied=True))
    verified(
        embed_text(vp=True, tied=False, pipelined=True).replace(
            "vocab_parallel", "vocab_parallel overlap"
        )
    )


# -- split pipeline sends ----------------------------------------------------------------

# T = 3·7 = 21 tokens of H = 64 at 2 bytes: T·H·w = 2688 bytes per micro-batch
SPLIT = """
model m {{ layers = 2; hidden = 64; heads = 4; ffn = 128 }}
workload {{ batch = 6; seq = 7; microbatches = 2 }}
devices {{ group a = gpu[0..{last_a}]; group b = gpu[8..{last_b}]{split} }}
layers 0..0 on a {{ attention tp={tp_a}; mlp tp={tp_a} }}
layers 1..1 on b {{ attention tp={tp_b}; mlp tp={tp_b} }}
"""


def split_text(tp_a: int, tp_b: int, *, on: bool = True) -> str:
    return SPLIT.format(
        last_a=tp_a - 1,
        last_b=8 + tp_b - 1,
        tp_a=tp_a,
        tp_b=tp_b,
        split="; split_sends = true" if on else "",
    )


@pytest.mark.parametrize(("tp_a", "tp_b", "t"), [(4, 2, 2), (2, 4, 2), (4, 4, 4), (1, 4, 1)])
def test_split_sends_carry_a_piece_per_link_and_gather_it(tp_a: int, tp_b: int, t: int) -> None:
    steps = lowered(split_text(tp_a, tp_b))
    [send] = steps_named(steps, "send_stage1", 0)
    piece = math.ceil(21 * 64 * W / t)
    assert send.terms[0].kind is TermKind.P2P and send.terms[0].args == (piece,)
    gathers = steps_named(steps, "gather_stage1", 1)
    if t == 1:
        assert not gathers  # one link: the whole activation, nothing to gather
        return
    [gather] = gathers
    assert gather.gpus == tuple(range(8, 8 + tp_b))
    assert gather.terms[0].kind is TermKind.ALL_GATHER
    assert gather.terms[0].args == (piece, t)
    # the gather writes the value the block then reads
    [recv] = steps_named(steps, "recv_stage1", 1)
    assert gather.reads == recv.writes
    ln1 = step(steps, "ln1", layer=1)
    assert ln1.reads == gather.writes


def test_uneven_split_sends_round_up() -> None:
    # 4 GPUs send, 3 receive: t = 3 links of ceil(2688 / 3) = 896 bytes
    text = split_text(4, 3).replace("heads = 4", "heads = 6; head_dim = 16")
    [send] = steps_named(lowered(text), "send_stage1", 0)
    assert send.terms[0].args == (896,)


def test_without_split_sends_the_whole_activation_goes_through_one_link() -> None:
    steps = lowered(split_text(4, 2, on=False))
    [send] = steps_named(steps, "send_stage1", 0)
    assert send.terms[0].args == (21 * 64 * W,)
    assert not steps_named(steps, "gather_stage1", 1)


def test_split_sends_verify() -> None:
    verified(split_text(4, 2))
    verified(split_text(2, 4).replace("tp=4 }", "tp=4 overlap }"))


# -- routed dispatch ---------------------------------------------------------------------

# T = 2·5 = 10 tokens; E = 8, k = 2: T_e = ceil(10·2/8) = 3; X = 3 attention GPUs, e = 4
ROUTED = """
model m {{
  layers = 2; hidden = 64; heads = 6; head_dim = 16; activation = swiglu
  experts = 8; top_k = 2; expert_ffn = 32{shared}
}}
workload {{ batch = 6; seq = 5; microbatches = 3 }}
devices {{ group a = gpu[0..2]; group e = gpu[3..6] }}
layers 0..1 {{ attention on a tp=3; moe on e ep=4 dispatch=routed{overlap} }}
"""


def routed_text(*, shared: bool = False, overlap: bool = False) -> str:
    return ROUTED.format(
        shared="; shared_experts = 1" if shared else "", overlap=" overlap" if overlap else ""
    )


def test_routed_dispatch_runs_ln2_and_gate_token_split_on_the_input_gpus() -> None:
    steps = lowered(routed_text())
    ln2, gate = step(steps, "ln2"), step(steps, "gate")
    assert ln2.gpus == gate.gpus == (0, 1, 2)
    # split(10, 3) = 4, 3, 3 tokens
    assert [t.args for t in ln2.terms] == [(4 * 64,), (3 * 64,), (3 * 64,)]
    assert [t.args for t in gate.terms] == [(4, 64, 8), (3, 64, 8), (3, 64, 8)]
    moe = next(b for b in steps.blocks if str(b.kind) == "moe")
    order = [s.base for s in moe.steps]
    assert order[:4] == ["ln2", "gate", "dispatch", "recv_moe"]
    assert order[-2:] == ["return", "res2"]
    assert not steps_named(steps, "broadcast")


def test_routed_dispatch_payload() -> None:
    # one X rank sends ceil(10/3)·k = 8 tokens, one MoE GPU receives T_e·E/e = 6: 8·H·w
    dispatch = step(lowered(routed_text()), "dispatch")
    assert dispatch.gpus == tuple(range(7))  # joint over X ∪ G
    assert dispatch.terms[0].kind is TermKind.ALL_TO_ALL
    assert dispatch.terms[0].args == (8 * 64 * W, 3 + 4)
    [recv] = steps_named(lowered(routed_text()), "recv_moe")
    assert recv.gpus == (3, 4, 5, 6) and recv.reads == dispatch.writes
    # the experts read what arrived
    ups = [s for s in steps_named(lowered(routed_text()), "expert") if s.part == ".up"]
    assert len(ups) == 2 and all(up.reads == recv.writes for up in ups)


def test_routed_dispatch_payload_with_shared_experts() -> None:
    # a token also goes to one shared expert: sent ceil(10/3)·(2 + 1) = 12 tokens;
    # received T_e·E/e + ceil(10/4) = 6 + 3 = 9
    steps = lowered(routed_text(shared=True))
    assert step(steps, "dispatch").terms[0].args == (12 * 64 * W, 7)
    [recv] = steps_named(steps, "recv_moe")
    assert step(steps, "shared_expert", ".up").reads == recv.writes
    # return: min(10, 6 + 3) = 9 tokens
    assert step(steps, "return").terms[0].args == (9 * 64 * W,)


def test_routed_dispatch_has_no_replicated_gate() -> None:
    routed = dagc.compile_text(routed_text(), "t.dag").program
    broadcast = dagc.compile_text(routed_text().replace(" dispatch=routed", ""), "t.dag").program
    # per layer and micro-batch the broadcast gate runs on all 4 MoE GPUs: 3 extra copies
    # of 2·T·H·E = 2·10·64·8, over 2 layers and 3 micro-batches
    assert expected_flops(broadcast) - expected_flops(routed) == 3 * 2 * 10 * 64 * 8 * 2 * 3


def test_routed_dispatch_verifies() -> None:
    verified(routed_text())
    verified(routed_text(shared=True, overlap=True))


def test_shared_experts_with_fewer_tokens_than_gpus_skip_the_idle_ranks() -> None:
    # T = Bm·S = 1·2 = 2 tokens over ep = 4 GPUs: split(2, 4) = 1, 1, 0, 0, so GPUs 2 and 3
    # run no shared expert (no operation); every routed expert still runs (prefill: T_e =
    # ceil(2·2/8) = 1), so expert_agg runs on every GPU.
    text = (
        "model m { layers = 1; hidden = 64; heads = 4; experts = 8; top_k = 2;"
        " expert_ffn = 32; shared_experts = 1 }\n"
        "workload { batch = 1; seq = 2 }\n"
        "devices { group g = gpu[0..3] }\n"
        "layers 0 on g { attention; moe }\n"
    )
    steps = lowered(text)
    up = step(steps, "shared_expert", ".up")
    assert up.gpus == (0, 1)
    assert [t.args for t in up.terms] == [(1, 64, 32), (1, 64, 32)]
    assert step(steps, "expert_agg").gpus == (0, 1, 2, 3)
    verified(text)
