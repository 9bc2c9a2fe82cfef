"""Dropout (model keys `attention_dropout`, `hidden_dropout`): its steps, their terms, their
backward and their masks, worked out by hand from docs/semantics.md.

The program: 2 layers, H = 64, 4 heads of d = 16, F = 128, batch 4 x seq 8 in 2
micro-batches (Bm = 2, T = 16), tp = 2: each rank holds 2 heads. So attn_dropout is
Elem_Time(Bm·h_i·S·S) = Elem_Time(2·2·8·8) = Elem_Time(256) per rank, and each hidden
dropout Elem_Time(T·H) = Elem_Time(1024) on every rank (after the all-reduce, each rank holds
the whole T x H activation); with sequence parallelism a rank's share, 8·64 = 512.
"""

from __future__ import annotations

import pytest

import dagc
from dagc.analysis.memory import value_bytes
from dagc.expand import expand
from dagc.ir.steps import BlockSteps, Step, StepProgram
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.values import MASK_DTYPE
from dagc.passes.manager import PassOptions, lower_to_steps
from helpers import check, config, only_diagnostic

H, D, F, BM, S, T = 64, 16, 128, 2, 8, 16
HEADS_PER_RANK = 2


def _text(kernel: str = "explicit", training: str = "training { }\n", extra: str = "") -> str:
    return f"""
model m {{
  layers = 2; hidden = {H}; heads = 4; ffn = {F}; vocab = 100
  attention_kernel = {kernel}
  attention_dropout = 0.1
  hidden_dropout = 0.1
}}
workload {{ batch = 4; seq = {S}; microbatches = 2 }}
{training}devices {{ group g = gpu[0..1] }}
layers 0..1 on g {{ embed; attention tp=2{extra}; mlp tp=2; lm_head tp=2 }}
"""


def _steps(text: str) -> StepProgram:
    return lower_to_steps(dagc.compile_text(text, "t.dag").program)


def _forward(steps: StepProgram) -> list[Step]:
    return [s for b in steps.blocks if not b.backward for s in b.steps]


def _named(steps: StepProgram, base: str, layer: int = 0) -> Step:
    (found,) = [s for b in steps.blocks for s in b.steps if s.base == base and s.layer == layer]
    return found


def _bases(steps: StepProgram) -> set[str]:
    return {s.base for b in steps.blocks for s in b.steps}


def _elem(n: int) -> CostTerm:
    return CostTerm(TermKind.ELEMENTWISE, (n,))


def test_training_with_the_explicit_kernel_has_the_three_dropouts() -> None:
    steps = _steps(_text())
    attn = _named(steps, "attn_dropout")
    assert attn.terms == (_elem(BM * HEADS_PER_RANK * S * S),) * 2  # 2·2·8·8 = 256
    probs, mask = attn.writes
    assert [v.name for v in attn.reads] == ["probs_l0"]
    assert (probs.name, mask.name, mask.dtype) == (
        "probs_dropped_l0",
        "attn_dropout_mask_l0",
        MASK_DTYPE,
    )
    # weights·V reads the dropped probabilities
    assert _named(steps, "attn_out").reads[0] == probs
    for base, res, source in (
        ("hidden_dropout1", "res1", "o_l0_sum"),
        ("hidden_dropout2", "res2", "down_l0_sum"),
    ):
        drop = _named(steps, base)
        assert drop.terms == (_elem(T * H),) * 2  # 16·64 = 1024 on each rank
        assert [v.name for v in drop.reads] == [source]  # after the all-reduce
        assert drop.writes[1].dtype == MASK_DTYPE
        assert _named(steps, res).reads[0] == drop.writes[0]
    # no FLOPs: the verifier's FLOP conservation holds after every pass
    expand(dagc.compile_text(_text(), "t.dag"), options=PassOptions(verify_each=True))


def test_dropout_backwards_read_the_gradient_and_the_mask() -> None:
    steps = _steps(_text())
    for base, forward_reads in (
        ("attn_dropout", "probs_l0"),
        ("hidden_dropout1", "o_l0_sum"),
        ("hidden_dropout2", "down_l0_sum"),
    ):
        forward = _named(steps, base)
        backward = _named(steps, base + "_bwd")
        assert backward.terms == forward.terms
        mask = forward.writes[1]
        assert mask in backward.reads  # the saved mask
        assert all(v.name != forward_reads for v in backward.reads)  # not the input
        assert [v.name for v in backward.writes] == [f"d_{forward_reads}"]


def test_masks_are_one_byte_per_element() -> None:
    mask = _named(_steps(_text()), "attn_dropout").writes[1]
    assert value_bytes(mask, 0) == BM * S * 4 * S // 2  # the rank's 2 heads, 1 byte each
    hidden = _named(_steps(_text()), "hidden_dropout1").writes[1]
    assert value_bytes(hidden, 0) == T * H


def test_sequence_parallel_drops_out_each_ranks_tokens() -> None:
    steps = _steps(_text(training="training { sequence_parallel = true }\n"))
    for base in ("hidden_dropout1", "hidden_dropout2"):
        drop = _named(steps, base)
        assert drop.terms == (_elem(T // 2 * H),) * 2  # 8·64 = 512
        assert all(str(v.placement) == "split(tokens)" for v in drop.writes)


def test_a_fused_kernel_drops_out_inside() -> None:
    bases = _bases(_steps(_text(kernel="fused")))
    assert "attn_dropout" not in bases
    assert {"hidden_dropout1", "hidden_dropout2"} <= bases


def test_selective_recompute_reruns_the_attention_dropout() -> None:
    bases = _bases(_steps(_text(training="training { recompute = selective }\n")))
    assert "attn_dropout_recompute" in bases


@pytest.mark.parametrize("kernel", ["explicit", "fused"])
def test_prefill_runs_no_dropout(kernel: str) -> None:
    with_dropout = _steps(_text(kernel=kernel, training=""))
    assert not any("dropout" in s.base for s in _forward(with_dropout))
    without = _text(kernel=kernel, training="").replace("attention_dropout = 0.1", "")
    without = without.replace("hidden_dropout = 0.1", "")
    assert _forward(_steps(without)) == _forward(with_dropout)


def test_the_logical_ir_prints_dropout_only_when_set() -> None:
    printed = dagc.compile_text(_text(), "t.dag").program
    from dagc.ir.logical import print_program

    assert "attention_dropout=0.1 hidden_dropout=0.1" in print_program(printed)
    plain = _text().replace("attention_dropout = 0.1", "").replace("hidden_dropout = 0.1", "")
    assert "dropout" not in print_program(dagc.compile_text(plain, "t.dag").program)


@pytest.mark.parametrize("written", ["1", "1.5", "fast"])
def test_dropout_must_be_a_probability(written: str) -> None:
    found = only_diagnostic(config({5: f"  ffn = 4096; hidden_dropout = {written}"}))
    check(
        found,
        5,
        32,
        f"`hidden_dropout` must be a probability in [0, 1), not `{written}`",
        help="`hidden_dropout` is the dropout probability of attention's and the MLP's outputs"
        " (training); e.g. `hidden_dropout = 0.1`",
    )


def test_moe_excursion_drops_out_on_the_input_gpus() -> None:
    text = """
model m { layers = 2; hidden = 32; heads = 4; experts = 4; top_k = 2; expert_ffn = 24
  hidden_dropout = 0.1 }
workload { batch = 4; seq = 8; microbatches = 2 }
training { }
devices { group attn = gpu[0..1]; group moe = gpu[2..3] }
layers 0..1 { attention on attn tp=2; moe on moe ep=2 }
"""
    steps = _steps(text)
    moe: BlockSteps = next(b for b in steps.blocks if str(b.kind) == "moe" and not b.backward)
    drop = next(s for s in moe.steps if s.base == "hidden_dropout2")
    assert drop.gpus == (0, 1)
    assert [v.name for v in drop.reads] == ["moe_ret_l0"]
    expand(dagc.compile_text(text, "t.dag"), options=PassOptions(verify_each=True))
