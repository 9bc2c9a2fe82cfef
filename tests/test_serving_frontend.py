"""The serving front end: workload modes, the block option `dp`, and the `prefill`/`decode`
flags of `layers` statements (docs/language.md).

Each test varies the base config of helpers.py (its line numbers are written next to it);
expected lines, columns and messages are worked out by hand from the change. These tests
stop at the logical IR: expanding decode programs is the passes' business.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import dagc
from dagc.cli import app
from dagc.ir.logical import Block, BlockKind, Mode, Program, decode_phase, prefill_phase
from helpers import REPO, check, check_golden, config, diagnostics_of, only_diagnostic

runner = CliRunner()

# Every layer on g0 (gpu[0..3]) as 4 replicas of one GPU; g1 (gpu[4..7]) unused.
DP = {
    15: "layers 0..3 on g0 {",
    16: "  attention dp=4",
    17: "  mlp dp=4",
    **dict.fromkeys(range(19, 23), ""),
}
# A serve workload: prompts of 128 tokens, 16 tokens generated per sequence.
SERVE = {9: "  mode = serve; input = 128; output = 16"}
# Disaggregated serving: prefill on g0, decode on g1.
DISAGGREGATED = {**SERVE, 15: "layers 0..3 on g0 prefill {", 19: "layers 0..3 on g1 decode {"}
MOE_MODEL = {5: "  ffn = 4096; experts = 8; top_k = 2"}


def compile_program(text: str) -> Program:
    result = dagc.compile_text(text, path="t.dag")
    assert result.warnings == (), [w.render() for w in result.warnings]
    return result.program


def blocks(program: Program, decode: bool = False) -> list[tuple[int, int, Block]]:
    """(first, last, block) of every block of the prefill (or decode) layout."""
    ranges = program.decode_ranges if decode else program.ranges
    return [(r.first, r.last, b) for r in ranges for b in r.blocks]


# -- workload modes: the IR ------------------------------------------------------------


def test_prefill_is_the_default_and_unchanged() -> None:
    program = compile_program(config())
    w = program.workload
    assert (w.mode, w.batch, w.seq, w.context, w.output) == (Mode.PREFILL, 8, 128, None, None)
    assert program.decode_ranges == ()
    # an explicit `mode = prefill` is the same program
    assert compile_program(config({9: "  seq = 128; mode = prefill"})) == program


def test_decode_workload() -> None:
    program = compile_program(config({9: "  mode = decode; context = 4096"}))
    w = program.workload
    # one new token per sequence (S = 1), attending over C = 4096 keys
    assert (w.mode, w.batch, w.seq, w.context, w.output) == (Mode.DECODE, 8, 1, 4096, None)
    assert (w.microbatches, w.microbatch_size, w.tokens_per_microbatch) == (1, 8, 8)
    assert program.decode_ranges == ()
    assert [(r.first, r.last) for r in program.ranges] == [(0, 1), (2, 3)]


def test_serve_workload() -> None:
    program = compile_program(config(SERVE))
    w = program.workload
    # the prefill runs I = 128 tokens per sequence; O = 16 tokens are generated
    assert (w.mode, w.batch, w.seq, w.context, w.output) == (Mode.SERVE, 8, 128, None, 16)
    assert program.decode_ranges == ()  # collocated: decode runs on `ranges`
    assert not program.disaggregated


@pytest.mark.parametrize(
    ("line", "bm"),
    [
        ("  mode = decode; context = 512; microbatches = 2", 4),  # Bm = 8/2
        ("  mode = serve; input = 64; output = 4; microbatch_size = 2", 2),  # m = 8/2
    ],
)
def test_micro_batches_in_every_mode(line: str, bm: int) -> None:
    w = compile_program(config({9: line})).workload
    assert w.microbatch_size == bm
    assert w.microbatches == 8 // bm


# -- workload modes: diagnostics -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message", "help"),
    [
        (
            "  seq = 128; mode = decode; context = 256",
            "`seq` means nothing in a decode workload",
            "a decode step runs one new token per sequence: write the keys it attends over as"
            " `context = 128`",
        ),
        (
            "  seq = 128; mode = serve; input = 64; output = 8",
            "`seq` means nothing in a serve workload",
            "write the prompt length as `input = 128` (and the tokens generated per sequence"
            " as `output = N`)",
        ),
    ],
)
def test_seq_outside_prefill(line: str, message: str, help: str) -> None:
    check(only_diagnostic(config({9: line})), 9, 3, message, help=help, width=3)


@pytest.mark.parametrize(
    ("line", "column", "message", "help"),
    [
        (  # `  seq = 128; ` is 13 characters
            "  seq = 128; context = 256",
            14,
            "`context` is the context length of a decode step, but this workload is in"
            " prefill mode",
            "add `mode = decode` to the workload, or remove `context`",
        ),
        (
            "  seq = 128; input = 64",
            14,
            "`input` is the prompt length of a serve workload, but this workload is in"
            " prefill mode",
            "add `mode = serve` to the workload, or remove `input`",
        ),
        (
            "  seq = 128; output = 8",
            14,
            "`output` is the output length of a serve workload, but this workload is in"
            " prefill mode",
            "add `mode = serve` to the workload, or remove `output`",
        ),
        (  # `  mode = decode; ` is 17 characters, `context = 256; ` 15 more
            "  mode = decode; context = 256; output = 8",
            33,
            "`output` is the output length of a serve workload, but this workload is in"
            " decode mode",
            "write `mode = serve` for a prefill and its decode steps, or remove `output`",
        ),
        (  # `  mode = serve; ` is 16 characters, `input = 64; ` 12, `output = 8; ` 12
            "  mode = serve; input = 64; output = 8; context = 99",
            41,
            "`context` is the context length of a decode step, but this workload is in serve mode",
            "a serve workload's decode steps run at contexts input+1 ... input+output-1:"
            " remove `context`, or write `mode = decode` for one decode step",
        ),
    ],
)
def test_key_of_another_mode(line: str, column: int, message: str, help: str) -> None:
    check(only_diagnostic(config({9: line})), 9, column, message, help=help)


@pytest.mark.parametrize(
    ("line", "missing"),
    [
        ("  mode = decode", [("context", "keys each new token attends over, itself included")]),
        (
            "  mode = serve",
            [("input", "prompt tokens per sequence"), ("output", "tokens generated per sequence")],
        ),
        ("  mode = serve; input = 64", [("output", "tokens generated per sequence")]),
    ],
)
def test_missing_keys_of_a_mode(line: str, missing: list[tuple[str, str]]) -> None:
    found = diagnostics_of(config({9: line}))
    assert len(found) == len(missing)
    for diagnostic, (key, meaning) in zip(found, missing, strict=True):
        check(
            diagnostic,
            7,
            1,
            f"workload has no `{key}` ({meaning})",
            help=f"add `{key} = ...` to the workload section",
            width=len("workload"),
        )


def test_an_invalid_mode_is_reported_once() -> None:
    # no cascade: `context` is not also reported as a key of another mode
    found = only_diagnostic(config({9: "  mode = decod; context = 256"}))
    check(
        found,
        9,
        10,
        "`mode` must be `decode`, `prefill` or `serve`, not `decod`",
        help="did you mean `decode`?",
    )


def test_training_in_decode_mode() -> None:
    found = only_diagnostic(
        config({9: "  mode = decode; context = 256"}, append="training { dp = 2 }\n")
    )
    check(
        found,
        9,
        10,
        "a training step runs forward and backward passes over whole sequences, not"
        " `mode = decode`",
        help="remove `mode` (training takes `seq`), or remove the `training` section",
        width=len("decode"),
    )
    (note,) = found.notes
    assert note.message == "the training section is here"
    assert note.span is not None and (note.span.line, note.span.column) == (23, 1)


def test_a_mode_error_exits_2_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "bad.dag"
    path.write_text(config({9: "  seq = 128; context = 256"}))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"{path}:9:14: error: `context` is the context length of a decode step, but this"
        " workload is in prefill mode"
    )
    assert lines[1] == "    9 |   seq = 128; context = 256"
    assert lines[2] == "      |              ^^^^^^^"
    assert lines[3] == "      = help: add `mode = decode` to the workload, or remove `context`"
    assert lines[-1] == "dagc: checked 1 file, 1 with errors, 0 warnings"


# -- the block option `dp`: the IR -------------------------------------------------------


def test_dp_blocks() -> None:
    program = compile_program(config(DP))
    # |G| = 4 = tp·dp with tp = 1: four replicas of one GPU
    (_, _, attention), (_, _, mlp) = blocks(program)
    assert (attention.kind, attention.group, attention.degree, attention.dp) == (
        BlockKind.ATTENTION, "g0", 1, 4,
    )  # fmt: skip
    assert (mlp.kind, mlp.degree, mlp.dp) == (BlockKind.MLP, 1, 4)


def test_dp_with_tp_1_written() -> None:
    program = compile_program(config({**DP, 16: "  attention tp=1 dp=4", 17: "  mlp tp=1 dp=4"}))
    assert [(b.degree, b.dp) for _, _, b in blocks(program)] == [(1, 4), (1, 4)]


def test_dp_1_is_no_replica() -> None:
    program = compile_program(config({16: "  attention tp=4 dp=1"}))
    assert program == compile_program(config())
    assert blocks(program)[0][2].dp == 1


def test_dp_on_embed_and_lm_head() -> None:
    program = compile_program(
        config(
            {
                **DP,
                3: "  hidden = 1024; vocab = 1000",
                16: "  embed dp=4; attention dp=4",
                18: "  lm_head dp=4 }",
            }
        )
    )
    assert [(b.kind, b.degree, b.dp) for _, _, b in blocks(program)] == [
        (BlockKind.EMBED, 1, 4),
        (BlockKind.ATTENTION, 1, 4),
        (BlockKind.MLP, 1, 4),
        (BlockKind.LM_HEAD, 1, 4),
    ]


def test_moe_excursion_from_a_dp_group() -> None:
    # attention as 4 replicas on g0, experts on g1 (ep = 4): the moe block's tokens go to
    # g1 and come back, so no pipeline stage starts
    program = compile_program(config({**DP, **MOE_MODEL, 17: "  moe on g1 dispatch=routed"}))
    (_, _, attention), (_, _, moe) = blocks(program)
    assert (attention.group, attention.degree, attention.dp) == ("g0", 1, 4)
    assert (moe.group, moe.degree, moe.dp) == ("g1", 4, 1)


def test_moe_on_the_dp_group() -> None:
    # moe on the same group as dp attention: the experts split over its 4 GPUs
    program = compile_program(config({**DP, **MOE_MODEL, 17: "  moe"}))
    assert [(b.kind, b.degree, b.dp) for _, _, b in blocks(program)] == [
        (BlockKind.ATTENTION, 1, 4),
        (BlockKind.MOE, 4, 1),
    ]


def test_dp_in_a_decode_program() -> None:
    program = compile_program(config({**DP, 9: "  mode = decode; context = 1024"}))
    assert program.workload.microbatch_size == 8  # 8 sequences over 4 replicas
    assert [b.dp for _, _, b in blocks(program)] == [4, 4]


# -- the block option `dp`: diagnostics -------------------------------------------------


def test_tp_times_dp_is_not_the_group() -> None:
    # `  attention tp=2 dp=4`: dp's value `4` is column 21
    found = only_diagnostic(config({**DP, 16: "  attention tp=2 dp=4"}))
    check(
        found,
        16,
        21,
        "tp=2 × dp=4 is 8 GPUs, but group `g0` has 4",
        help="a block's group holds tp·dp GPUs: write `tp=1 dp=4` for 4 replicas of one GPU,"
        " or `tp=4` without `dp`",
    )


def test_dp_does_not_divide_the_group() -> None:
    found = only_diagnostic(config({**DP, 16: "  attention dp=3"}))
    check(
        found,
        16,
        16,
        "dp=3 does not divide group `g0` (4 GPUs)",
        help="a replica is one GPU of the group: write `dp=4`, or `tp=4` without `dp`",
    )


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("  attention tp=2 dp=2", 21),
        ("  attention dp=2", 16),  # tp = |G|/dp = 2
    ],
)
def test_dp_with_tensor_parallel_replicas(line: str, column: int) -> None:
    found = only_diagnostic(config({**DP, 16: line}))
    check(
        found,
        16,
        column,
        "dp=2 over 4 GPUs makes replicas of 2 GPUs each",
        help="attention data parallelism with tensor-parallel replicas is not modelled yet;"
        " write tp = 1: `tp=1 dp=4` (4 replicas of one GPU), or `tp=4` without `dp`",
    )


def test_dp_on_moe() -> None:
    # `  moe dp=4`: the key `dp` is column 7
    found = only_diagnostic(config({**MOE_MODEL, 17: "  moe dp=4"}))
    check(
        found,
        17,
        7,
        "a moe block has no data-parallel replicas",
        help="experts are split over the group with ep; dp is for attention, mlp, embed, lm_head",
        width=2,
    )


def test_dp_in_a_training_program() -> None:
    lines = {**DP, 16: "  attention tp=1 dp=4", 17: "  mlp"}
    found = only_diagnostic(config(lines, append="training { dp = 2 }\n"))
    check(
        found,
        16,
        21,
        "dp=4 on a block replicates it for inference; a training program replicates its whole"
        " layout",
        help="remove `dp=4`: the training section's `dp` makes data-parallel replicas of the"
        " whole layout",
    )


def test_blocks_on_one_group_with_different_dp() -> None:
    # mlp omits dp (1, so tp = 4) beside attention's 4 replicas: reported at the mlp block
    found = only_diagnostic(config({**DP, 17: "  mlp"}))
    check(
        found,
        17,
        3,
        "`mlp` on group `g0` runs dp=1, but `attention` on the same group runs dp=4",
        help="the blocks on one group (but moe) run as the same replicas: give them the same `dp`",
        width=3,
    )
    (note,) = found.notes
    assert note.message == "dp=4 here"
    assert note.span is not None and (note.span.line, note.span.column) == (16, 3)


def test_different_dp_across_statements_points_at_the_dp_option() -> None:
    # layers 2..3 on g0 again, attention with tp=4 dp=1 written out: reported at its dp
    lines = {
        **DP,
        15: "layers 0..1 on g0 {",
        19: "layers 2..3 on g0 {",
        20: "  attention tp=4 dp=1",
        21: "  mlp dp=4",
        22: "}",
    }
    found = only_diagnostic(config(lines))
    check(
        found,
        20,
        21,
        "`attention` on group `g0` runs dp=1, but `attention` on the same group runs dp=4",
    )


def test_stage_boundary_after_a_dp_group() -> None:
    lines = {
        **DP,
        15: "layers 0..1 on g0 {",
        19: "layers 2..3 on g1 {",
        20: "  attention",
        21: "  mlp",
        22: "}",
    }
    found = only_diagnostic(config(lines))
    check(
        found,
        20,
        3,
        "`attention` on group `g1` starts a pipeline stage after `mlp` on group `g0`, and"
        " group `g0` runs dp=4 replicas",
        help="pipeline stages between dp groups are not modelled; keep the dp blocks on one group",
        width=len("attention"),
    )
    (note,) = found.notes
    assert note.message == "the stage before ends here"
    assert note.span is not None and (note.span.line, note.span.column) == (17, 3)


def test_stage_boundary_before_a_dp_group() -> None:
    lines = {
        15: "layers 0..1 on g1 {",
        16: "  attention",
        17: "  mlp",
        19: "layers 2..3 on g0 {",
        20: "  attention dp=4",
        21: "  mlp dp=4",
    }
    found = only_diagnostic(config(lines))
    check(
        found,
        20,
        3,
        "`attention` on group `g0` starts a pipeline stage after `mlp` on group `g1`, and"
        " group `g0` runs dp=4 replicas",
    )


def test_stage_boundary_through_the_pipeline_sugar() -> None:
    # `on g0, g1 pp=2` cuts layers 0..3 into stages on g0 and g1: a boundary between two dp
    # groups, reported once for the pair
    found = only_diagnostic(config({**DP, 15: "layers 0..3 on g0, g1 pp=2 {"}))
    check(
        found,
        16,
        3,
        "`attention` on group `g1` starts a pipeline stage after `mlp` on group `g0`, and"
        " group `g0` runs dp=4 replicas",
    )


@pytest.mark.parametrize(
    ("batch_line", "help"),
    [
        (  # Bm = 2 < dp = 4
            "  batch = 2",
            "each replica needs at least one sequence: write `batch = 4` or more",
        ),
        (  # Bm = 8/4 = 2 < dp = 4; 4 micro-batches of 4 sequences need a batch of 16
            "  batch = 8; microbatches = 4",
            "each replica needs at least one sequence: write `batch = 16` or more, or fewer"
            " `microbatches`",
        ),
    ],
)
def test_a_replica_without_sequences(batch_line: str, help: str) -> None:
    found = only_diagnostic(config({**DP, 8: batch_line, 17: "  mlp"}))
    check(
        found,
        16,
        16,
        "dp=4 replicas need 4 sequences per micro-batch, but a micro-batch holds 2: a replica"
        " would run without sequences",
        help=help,
    )


def test_dp_on_a_vocab_parallel_embed() -> None:
    lines = {**DP, 3: "  hidden = 1024; vocab = 1000", 16: "  embed dp=4 vocab_parallel"}
    found = only_diagnostic(config({**lines, 17: "  attention dp=4; mlp dp=4"}))
    check(
        found,
        16,
        12,
        "`vocab_parallel` splits the table over a replica's GPUs, but each of the dp=4"
        " replicas is one GPU",
        help="remove `vocab_parallel` (each GPU then holds the whole table) or `dp`",
    )


def test_the_degree_mismatch_names_dp() -> None:
    # without dp, tp must still equal the group's size; the help now offers replicas
    found = only_diagnostic(config({16: "  attention tp=1"}))
    check(
        found,
        16,
        16,
        "tp=1 is smaller than group `g0` (4 GPUs)",
        help="tp must equal the group's size: write `tp=4`, use a group of 1 GPUs, or make 4"
        " data-parallel replicas: `tp=1 dp=4`",
    )


# -- `prefill` and `decode` layer flags: the IR -------------------------------------------


def test_disaggregated_serve() -> None:
    program = compile_program(config(DISAGGREGATED))
    assert program.disaggregated
    assert [(first, last, b.kind, b.group) for first, last, b in blocks(program)] == [
        (0, 3, BlockKind.ATTENTION, "g0"),
        (0, 3, BlockKind.MLP, "g0"),
    ]
    assert [(first, last, b.kind, b.group) for first, last, b in blocks(program, decode=True)] == [
        (0, 3, BlockKind.ATTENTION, "g1"),
        (0, 3, BlockKind.MLP, "g1"),
    ]
    # the phases: prefill on g0 sending its KV cache to g1's layout, decode steps on g1
    assert prefill_phase(program).ranges == program.ranges
    assert prefill_phase(program).kv_handoff == program.decode_ranges
    assert decode_phase(program, 200).ranges == program.decode_ranges


def test_a_layout_of_several_statements() -> None:
    # each layout places layers 0..1 and 2..3 with a statement each: prefill on g0,
    # decode on g1
    lines = {
        **SERVE,
        15: "layers 0..1 on g0 prefill {",
        19: "layers 0..1 on g1 decode { attention; mlp }",
        20: "layers 2..3 on g0 prefill { attention; mlp }",
        21: "layers 2..3 on g1 decode { attention; mlp }",
        22: "",
    }
    program = compile_program(config(lines))
    assert [(r.first, r.last) for r in program.ranges] == [(0, 1), (2, 3)]
    assert [(r.first, r.last) for r in program.decode_ranges] == [(0, 1), (2, 3)]
    assert {b.group for _, _, b in blocks(program)} == {"g0"}
    assert {b.group for _, _, b in blocks(program, decode=True)} == {"g1"}


def test_disaggregated_with_dp_and_separation() -> None:
    # prefill: layers on g0 (TP4); decode: attention as 4 replicas on g1, experts on g2
    text = config(
        {
            **MOE_MODEL,
            **SERVE,
            13: "  group g1 = gpu[4..7]; group g2 = gpu[8..15]",
            15: "layers 0..3 on g0 prefill {",
            17: "  moe",
            19: "layers 0..3 on g1 decode {",
            20: "  attention dp=4",
            21: "  moe on g2 dispatch=routed",
        }
    )
    program = compile_program(text)
    assert [(b.group, b.degree, b.dp) for _, _, b in blocks(program)] == [
        ("g0", 4, 1), ("g0", 4, 1),
    ]  # fmt: skip
    assert [(b.group, b.degree, b.dp) for _, _, b in blocks(program, decode=True)] == [
        ("g1", 1, 4), ("g2", 8, 1),
    ]  # fmt: skip


# -- `prefill` and `decode` layer flags: diagnostics ------------------------------------


@pytest.mark.parametrize(
    ("workload", "mode"),
    [({}, "prefill"), ({9: "  mode = decode; context = 64"}, "decode")],
)
def test_layer_flag_outside_serve(workload: dict[int, str], mode: str) -> None:
    # `layers 0..1 on g0 ` is 18 characters: the flag starts in column 19
    found = only_diagnostic(config({**workload, 15: "layers 0..1 on g0 decode {"}))
    check(
        found,
        15,
        19,
        f"`decode` places layers in the decode layout of a serve workload, but this workload"
        f" is in {mode} mode",
        help="add `mode = serve` to the workload (with `input` and `output`), or remove `decode`",
        width=6,
    )


def test_both_layer_flags_on_one_statement() -> None:
    found = only_diagnostic(config({**SERVE, 15: "layers 0..1 on g0 prefill decode {"}))
    check(
        found,
        15,
        27,
        "a statement is in the prefill layout or in the decode layout, not both: it has"
        " `prefill` and `decode`",
        help="keep one of the flags; a statement with neither is in both layouts (when no"
        " statement has a flag, prefill and decode share the GPUs)",
    )


@pytest.mark.parametrize(
    ("lines", "layout", "text"),
    [
        ({19: "layers 0..1 on g1 decode {"}, "decode", "2..3"),
        ({15: "layers 0..2 on g0 prefill {"}, "prefill", "3"),
    ],
)
def test_a_layout_misses_layers(lines: dict[int, str], layout: str, text: str) -> None:
    found = only_diagnostic(config({**DISAGGREGATED, **lines}))
    layers = f"layer {text} is" if ".." not in text else f"layers {text} are"
    check(
        found,
        2,
        12,
        f"{layers} not placed on any GPUs in the {layout} layout",
        help=f"add `layers {text} on GROUP {layout} {{ ... }}`",
    )


def test_a_layer_placed_twice_in_one_layout() -> None:
    found = only_diagnostic(
        config(DISAGGREGATED, append="layers 2..3 on g1 decode { attention; mlp }\n")
    )
    check(
        found,
        23,
        8,
        "layers 2..3 are already placed by the `layers` statement on line 19 in the decode layout",
        help="each layer is placed once in each layout: split or shorten one of the ranges",
        width=4,
    )


def test_an_unflagged_statement_meets_a_flagged_one() -> None:
    # layers 0..3 without a flag are in the prefill layout too, beside line 15's
    found = only_diagnostic(config({**DISAGGREGATED, 19: "layers 0..3 on g1 {"}))
    check(
        found,
        19,
        8,
        "layers 0..3 are already placed by the `layers` statement on line 15 in the prefill layout",
    )


def test_layouts_share_a_gpu() -> None:
    found = only_diagnostic(config({**DISAGGREGATED, 19: "layers 0..3 on g0 decode {"}))
    check(
        found,
        20,
        3,
        "gpu 0 runs both prefill and decode: group `g0` is in both layouts",
        help="disaggregated serving runs prefill and decode on disjoint GPUs: place the"
        " `decode` statements on other groups than the `prefill` ones",
        width=len("attention"),
    )
    (note,) = found.notes
    assert note.message == "the prefill layout uses it here"
    assert note.span is not None and (note.span.line, note.span.column) == (16, 3)


def test_layouts_share_a_gpu_through_an_unflagged_statement() -> None:
    # layers 2..3 without a flag are in both layouts, on g1: the decode layout's g1 (line
    # 20) is also the prefill layout's (line 22)
    lines = {
        **SERVE,
        15: "layers 0..1 on g0 prefill {",
        19: "layers 0..1 on g1 decode { attention; mlp }",
        20: "layers 2..3 on g1 { attention; mlp }",
        21: "",
        22: "",
    }
    found = only_diagnostic(config(lines))
    check(
        found,
        19,
        28,
        "gpu 4 runs both prefill and decode: group `g1` is in both layouts",
        help="disaggregated serving runs prefill and decode on disjoint GPUs: place the"
        " `decode` statements on other groups than the `prefill` ones; a statement without"
        " `prefill` or `decode` is in both layouts",
    )
    (note,) = found.notes
    assert note.span is not None and (note.span.line, note.span.column) == (20, 21)


def test_checks_run_on_the_decode_layout() -> None:
    # the same checks as the prefill layout's: a degree, the dp of a group
    found = only_diagnostic(config({**DISAGGREGATED, 20: "  attention tp=8"}))
    check(found, 20, 16, "tp=8 is larger than group `g1` (4 GPUs)")
    found = only_diagnostic(config({**DISAGGREGATED, 20: "  attention dp=4"}))
    check(
        found,
        21,
        3,
        "`mlp` on group `g1` runs dp=1, but `attention` on the same group runs dp=4",
    )


# -- `dagc lower --emit ir` --------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parent / "golden" / "serving"


@pytest.mark.parametrize("name", ["decode_dp", "serve_disaggregated"])
def test_golden_serving_ir(name: str) -> None:
    source = GOLDEN / f"{name}.dag"
    result = runner.invoke(app, ["lower", str(source), "--emit", "ir"])
    assert result.exit_code == 0, result.stderr
    review = f"the output of `dagc lower {source.relative_to(REPO)} --emit ir`, line by line"
    check_golden(GOLDEN / f"{name}.ir", result.stdout, review)
