"""One test per diagnostic of the front end (parser, semantic checks, reading files).

Every expected line, column and message is worked out by hand from the base config in
helpers.py (its line numbers are written next to it) and the change a test makes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import dagc
from dagc.compiler import parse_source
from dagc.diagnostics import EXCERPT_WIDTH, Severity, closest
from dagc.frontend.parser import MAX_SYNTAX_ERRORS
from dagc.source import SourceFile
from helpers import check, config, diagnostics_of, only_diagnostic

WARNING = Severity.WARNING
BLOCKS = "blocks are `attention`, `embed`, `lm_head`, `mlp` or `moe`"
DTYPES = "`bf16`, `fp16`, `fp32` or `fp8`"


def test_base_config_is_valid() -> None:
    result = dagc.compile_text(config(), path="t.dag")
    assert result.warnings == ()


# -- syntax errors (dagc/frontend/parser.py) -------------------------------------------


def test_unexpected_character() -> None:
    found = only_diagnostic(config({2: "  layers = 4 $"}))
    check(
        found,
        2,
        14,
        "unexpected character `$`",
        help="names use letters, digits and `_`; numbers use digits and `_`;"
        " comments start with `#`",
        width=1,
    )


@pytest.mark.parametrize(
    ("line", "column", "message", "help"),
    [
        ("  seq 128", 7, "unexpected `128`; expected `=`", "settings are written `key = value`"),
        (  # `layers` as a key without its `=`, not a statement: the body is not unclosed
            "  layers 4",
            10,
            "unexpected `4`; expected `=`",
            "settings are written `key = value`",
        ),
        (
            "  seq =",
            8,
            "unexpected end of line; expected `-`, a name, a number or an integer",
            None,
        ),
        (
            "  seq = 128 128",
            13,
            "unexpected `128`; expected `;`, `}` or a new line",
            "put one item per line, or separate items with `;`",
        ),
    ],
)
def test_unexpected_token(line: str, column: int, message: str, help: str | None) -> None:
    found = only_diagnostic(config({9: line}))
    check(found, 9, column, message)
    assert found.help == help


def test_unexpected_end_of_file_with_an_open_brace() -> None:
    found = only_diagnostic(config({22: ""}))  # drop the last `}`
    check(
        found,
        22,
        1,
        "unexpected end of file: a `}` is missing",
        help="close the body opened on line 19 with `}`",
    )
    assert [(n.message, n.span.line, n.span.column) for n in found.notes if n.span] == [
        ("this `{` is never closed", 19, 19)
    ]
    assert "t.dag:19:19: note: this `{` is never closed" in found.render()


def test_unexpected_end_of_file_in_a_statement() -> None:
    found = only_diagnostic(config(append="layers 0..1 on g0"))
    check(
        found,
        23,
        18,
        "unexpected end of file; expected `,`, `{`, a name or a new line",
        help="finish the statement or remove it",
    )


@pytest.mark.parametrize(
    ("lines", "line", "column", "written"),
    [
        ({15: "layers 0-1 on g0 {"}, 15, 9, "0-1"),
        ({12: "  group g0 = gpu[0 - 3]"}, 12, 20, "0-3"),
    ],
)
def test_range_written_with_a_dash(
    lines: dict[int, str], line: int, column: int, written: str
) -> None:
    found = only_diagnostic(config(lines))
    first, last = written.split("-")
    check(
        found,
        line,
        column,
        f"ranges are written `{first}..{last}`, not `{written}`",
        help="replace `-` with `..`",
        width=1,
    )


def test_dash_without_numbers_where_a_range_is_expected() -> None:
    found = only_diagnostic(config({12: "  group g0 = gpu[0-]"}))
    check(
        found,
        12,
        19,
        "ranges are written with `..`, e.g. `0..3`, not with `-`",
        help="replace `-` with `..`",
    )


@pytest.mark.parametrize(
    ("lines", "brace", "what", "next_line", "keyword"),
    [
        # `workload { batch = 8; seq = 128` and no `}` before `devices {`
        (
            {7: "workload { batch = 8; seq = 128", 8: "", 9: "", 10: ""},
            (7, 10),
            "the `workload` section",
            11,
            "devices",
        ),
        ({6: ""}, (1, 9), "the `model` section", 7, "workload"),
        ({14: ""}, (11, 9), "the `devices` section", 15, "layers"),
        ({18: ""}, (15, 19), "the `layers` statement", 19, "layers"),
        (
            {7: "workload", 8: "{ batch = 8", 10: ""},
            (8, 1),
            "the `workload` section",
            11,
            "devices",
        ),
    ],
)
def test_body_not_closed_before_the_next_statement(
    lines: dict[int, str], brace: tuple[int, int], what: str, next_line: int, keyword: str
) -> None:
    found = only_diagnostic(config(lines))
    check(
        found,
        *brace,
        f"{what} is not closed",
        help=f"add `}}` at the end of {what}, before line {next_line}",
        width=1,
    )
    assert [(n.message, n.span.line, n.span.column) for n in found.notes if n.span] == [
        (f"`{keyword}` starts a new statement here", next_line, 1)
    ]


def test_several_syntax_errors_are_reported_in_one_run() -> None:
    found = diagnostics_of(config({4: "  heads = 16 16", 9: "  seq 128", 17: "  mlp tp=4 @"}))
    assert [(d.span.line, d.span.column, d.message) for d in found if d.span] == [
        (4, 14, "unexpected `16`; expected `;`, `}` or a new line"),
        (9, 7, "unexpected `128`; expected `=`"),
        (17, 12, "unexpected character `@`"),
    ]


def test_recovery_stops_at_a_line_that_opens_a_body() -> None:
    # Blanking line 1 would drop a `{` and make every later line an error, so only the
    # first error is reported.
    found = only_diagnostic(config({1: "model m { $", 9: "  seq 128"}))
    check(found, 1, 11, "unexpected character `$`")


def test_syntax_errors_are_capped() -> None:
    found = diagnostics_of(config(append="$\n" * (MAX_SYNTAX_ERRORS + 5)))
    assert len(found) == MAX_SYNTAX_ERRORS
    assert [d.span.line for d in found if d.span] == list(range(23, 23 + MAX_SYNTAX_ERRORS))


def test_integer_too_long_to_read() -> None:
    digits = "1" * 5000  # Python refuses to convert more than 4300 digits
    found = only_diagnostic(config({9: f"  seq = {digits}"}))
    # The 5008-character line is shown as its first EXCERPT_WIDTH characters and `…`, the
    # carets from column 9 to the window's end.
    check(found, 9, 9, "this integer has 5000 digits, too many to read", width=EXCERPT_WIDTH - 8)


def test_form_feed_and_crlf_do_not_shift_lines() -> None:
    # Only `\n` ends a line for the lexer; `\f` is whitespace and `\r\n` is one line end.
    text = config({6: "}\f", 9: "  seq = 0"}).replace("\n", "\r\n")
    found = only_diagnostic(text)
    check(found, 9, 9, "`seq` must be a positive integer, not `0`")
    assert found.render().splitlines()[1] == "    9 |   seq = 0"


@pytest.mark.parametrize(
    ("text", "column", "shown"),
    [
        ("  layers = 4\u00a0", 13, "U+00A0"),  # a no-break space pasted from a web page
        ("\ufeff  layers = 4", 1, "U+FEFF"),  # a byte-order mark
        ("  layers = 4\x0b", 13, "U+000B"),
    ],
)
def test_invisible_unexpected_character(text: str, column: int, shown: str) -> None:
    check(only_diagnostic(config({2: text})), 2, column, f"unexpected character {shown}")


def test_excerpt_shows_control_characters_as_spaces() -> None:
    # A carriage return inside a comment must not move the terminal's cursor; each control
    # character becomes one space, so the caret still lines up.
    found = only_diagnostic(config({3: "  hidden = 0 # a\rb\x1bc"}))
    check(found, 3, 12, "`hidden` must be a positive integer, not `0`")
    assert found.render().splitlines()[1] == "    3 |   hidden = 0 # a b c"


# -- sections and settings (dagc/frontend/sema.py) -------------------------------------


def test_no_layers_statement() -> None:
    found = only_diagnostic(config(dict.fromkeys(range(15, 23), "")))
    check(
        found,
        1,
        1,
        "the file has no `layers` statement, so nothing runs anywhere",
        help="place the layers on a group, e.g. `layers 0..3 on all { attention; mlp }`",
    )


@pytest.mark.parametrize(
    ("lines", "keyword", "example"),
    [
        (range(1, 7), "model", "model NAME { layers = 4; hidden = 4096 }"),
        (range(7, 11), "workload", "workload { batch = 8; seq = 2048 }"),
    ],
)
def test_missing_section(lines: range, keyword: str, example: str) -> None:
    found = only_diagnostic(config(dict.fromkeys(lines, "")))
    check(found, 1, 1, f"the file has no `{keyword}` section", help=f"add one, e.g. `{example}`")


@pytest.mark.parametrize(
    "lines",
    [
        dict.fromkeys(range(1, 7), ""),  # no model
        dict.fromkeys(range(7, 11), ""),  # no workload
        dict.fromkeys(range(11, 15), ""),  # no devices
        dict.fromkeys(range(15, 23), ""),  # no layers
    ],
)
def test_examples_in_helps_parse(lines: dict[int, str]) -> None:
    # The example after "e.g." in the help is a statement one can paste into the file.
    found = diagnostics_of(config(lines))[0]
    assert found.help is not None
    example = found.help.split("e.g. `", 1)[1].removesuffix("`")
    parse_source(SourceFile("t.dag", config(lines, append=example + "\n")))


def test_missing_devices_section_leaves_groups_unknown() -> None:
    found = diagnostics_of(config(dict.fromkeys(range(11, 15), "")))
    assert len(found) == 3
    check(found[0], 1, 1, "the file has no `devices` section")
    declare = "declare it in `devices { group NAME = gpu[...] }`"
    check(found[1], 15, 16, "unknown group `g0`", help=declare)
    check(found[2], 19, 16, "unknown group `g1`", help=declare)


def test_duplicate_section() -> None:
    found = only_diagnostic(config(append="workload { batch = 8; seq = 128 }\n"))
    check(
        found,
        23,
        1,
        "duplicate `workload` section",
        help="a file describes one configuration: merge the two sections",
        width=8,
    )
    (note,) = found.notes
    assert note.message == "the first `workload` section is here"
    assert note.span is not None and (note.span.line, note.span.column) == (7, 1)


def test_duplicate_key() -> None:
    found = only_diagnostic(config({3: "  hidden = 1024; hidden = 2048"}))
    check(found, 3, 18, "duplicate key `hidden` in model", help="remove one of them", width=6)
    (note,) = found.notes
    assert note.message == "first set here"
    assert note.span is not None and (note.span.line, note.span.column) == (3, 3)


@pytest.mark.parametrize(
    ("lines", "line", "column", "message", "help"),
    [
        (  # a misspelt key gets a did-you-mean hint
            {5: "  ffn = 4096; vocabb = 32000"},
            5,
            15,
            "unknown model key `vocabb`",
            "did you mean `vocab`?",
        ),
        (
            {9: "  seq = 128; zzz = 1"},
            9,
            14,
            "unknown workload key `zzz`",
            "workload accepts `batch`, `context`, `dtype`, `input`, `microbatch_size`,"
            " `microbatches`, `mode`, `output` or `seq`",
        ),
        (
            {16: "  attention tp=4 fused_qvk"},
            16,
            18,
            "unknown `attention` block key `fused_qvk`",
            "did you mean `fused_qkv`?",
        ),
        (
            {16: "  embed x=1; attention tp=4"},
            16,
            9,
            "unknown `embed` block key `x`",
            "`embed` block accepts `dp`, `overlap` or `vocab_parallel`",
        ),
        (
            {15: "layers 0..1 on g0 tp=4 {"},
            15,
            19,
            "unknown `layers` statement key `tp`",
            "`layers` statement accepts `decode`, `overlap`, `pp` or `prefill`",
        ),
        (  # two blocks on one line without `;`: the second reads as a flag of the first
            {16: "  attention mlp", 17: ""},
            16,
            13,
            "unknown `attention` block key `mlp`",
            "`mlp` is a block of its own: put each block on its own line, or separate them"
            " with `;` (`attention; mlp`)",
        ),
        (  # a block kind written as `key=value` is an ordinary unknown key
            {16: "  attention mlp=4", 17: ""},
            16,
            13,
            "unknown `attention` block key `mlp`",
            "`attention` block accepts `dp`, `fused_qkv`, `kernel`, `mask`, `overlap` or `tp`",
        ),
    ],
)
def test_unknown_key(
    lines: dict[int, str], line: int, column: int, message: str, help: str
) -> None:
    check(only_diagnostic(config(lines)), line, column, message, help=help)


@pytest.mark.parametrize(
    ("lines", "line", "column", "where", "key", "help"),
    [
        (
            {5: "  ffn = 4096; num_nextn_predict_layers = 1"},
            5,
            15,
            "model",
            "num_nextn_predict_layers",
            "the multi-token-prediction module is not modelled (it is not part of the main"
            " model); remove the key",
        ),
        (
            {5: "  ffn = 4096; mlp_bias = true"},
            5,
            15,
            "model",
            "mlp_bias",
            "MLP and expert projections have no biases in dagc's models; remove the key",
        ),
        (
            {5: "  ffn = 4096; sliding_window = 4096"},
            5,
            15,
            "model",
            "sliding_window",
            "attention spans the whole sequence (`seq`); remove the key",
        ),
        (
            {15: "layers 0..1 on g0 dp=2 {"},
            15,
            19,
            "`layers` statement",
            "dp",
            "`dp` belongs to a block (`attention tp=1 dp=8`: attention data parallelism), or"
            " to the training section (replicas of the whole layout)",
        ),
        (
            {16: "  attention tp=4 sp"},
            16,
            18,
            "`attention` block",
            "sp",
            "sequence parallelism is not modelled: `tp` splits the block's weights and heads",
        ),
    ],
)
def test_key_not_supported_yet(
    lines: dict[int, str], line: int, column: int, where: str, key: str, help: str
) -> None:
    # Not "did you mean `experts`?": a known key spelt alike that means something else.
    found = only_diagnostic(config(lines))
    check(found, line, column, f"{where} key `{key}` is not supported yet", help=help)


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [
        ("hiden", ["hidden", "heads"], "hidden"),  # a letter left out
        ("mpl", ["mlp", "moe"], "mlp"),  # two letters swapped count as one edit
        ("microbatch", ["microbatches"], "microbatches"),  # two edits in ten letters
        ("sq", ["seq"], "seq"),
        ("shared_experts", ["experts", "top_k"], None),  # contains a key, means another
        ("tp", ["ep"], None),  # one edit, but half the word
        ("expert", ["expert_ffn"], None),
    ],
)
def test_closest_only_suggests_small_edits(
    word: str, choices: list[str], expected: str | None
) -> None:
    assert closest(word, choices) == expected


def test_unknown_key_far_from_every_key_lists_the_keys() -> None:
    # `dense_ffn` contains `ffn` but is four edits or more from every key: no guess.
    found = only_diagnostic(config({5: "  ffn = 4096; dense_ffn = 1"}))
    check(
        found,
        5,
        15,
        "unknown model key `dense_ffn`",
        help="model accepts 29 keys, listed in docs/language.md; the common ones are `layers`,"
        " `hidden`, `heads`, `head_dim`, `kv_heads`, `ffn`, `activation`, `experts`, `top_k`,"
        " `expert_ffn`, `capacity_factor`, `vocab`",
    )


def test_overlap_on_embed_means_nothing() -> None:
    text = config({16: "  embed overlap; attention tp=4"}, append="")
    text = text.replace("  ffn = 4096", "  ffn = 4096; vocab = 1000")
    check(
        only_diagnostic(text),
        16,
        9,
        "`overlap` means nothing on `embed`: it has no communication to overlap",
        help="remove it; `overlap` on the next block moves the transfer into that block"
        " (a `vocab_parallel` embed has an all-reduce to overlap)",
        width=7,
    )


def test_overlap_on_a_vocab_parallel_embed_is_allowed() -> None:
    text = config({16: "  embed vocab_parallel overlap; attention tp=4"}, append="")
    text = text.replace("  ffn = 4096", "  ffn = 4096; vocab = 1000")
    compiled = dagc.compile_text(text, "t.dag")
    assert not compiled.warnings
    embed = compiled.program.ranges[0].blocks[0]
    assert embed.vocab_parallel and embed.overlap


def test_overlap_is_a_flag() -> None:
    check(
        only_diagnostic(config({15: "layers 0..1 on g0 overlap=2 {"})),
        15,
        27,
        "`overlap` is a flag, not `2`",
        help="write `overlap` alone, or `overlap=true` / `overlap=false`",
    )


def test_flag_with_a_value() -> None:
    found = only_diagnostic(config({16: "  attention tp=4 fused_qkv=yes"}))
    check(
        found,
        16,
        28,
        "`fused_qkv` is a flag, not `yes`",
        help="write `fused_qkv` alone, or `fused_qkv=true` / `fused_qkv=false`",
    )


def test_option_needs_a_value() -> None:
    found = only_diagnostic(config({16: "  attention tp"}))
    check(found, 16, 13, "`tp` needs a value", help="write `tp=VALUE`", width=2)


@pytest.mark.parametrize(
    ("lines", "line", "column", "message", "help"),
    [
        (
            {9: "  seq = 128; dtype = bfloat16"},
            9,
            22,
            f"`dtype` must be {DTYPES}, not `bfloat16`",
            "did you mean `bf16`?",
        ),
        (
            {9: "  seq = 128; dtype = BF16"},
            9,
            22,
            f"`dtype` must be {DTYPES}, not `BF16`",
            "did you mean `bf16`?",
        ),
        (  # relu is another function, not a typo of gelu: say what stands in for it
            {5: "  ffn = 4096; activation = relu"},
            5,
            28,
            "`activation` must be `gelu` or `swiglu`, not `relu`",
            "`relu` is not supported yet, but `gelu` costs the same: write `activation = gelu`",
        ),
        (  # HuggingFace's `hidden_act = silu` is the gated MLP
            {5: "  ffn = 4096; activation = silu"},
            5,
            28,
            "`activation` must be `gelu` or `swiglu`, not `silu`",
            "did you mean `swiglu`?",
        ),
        (
            {9: "  seq = 128; dtype = bf61"},
            9,
            22,
            f"`dtype` must be {DTYPES}, not `bf61`",
            "did you mean `bf16`?",
        ),
        (
            {5: "  ffn = 4096; activation = tanh"},
            5,
            28,
            "`activation` must be `gelu` or `swiglu`, not `tanh`",
            "write `activation = gelu`",
        ),
        (
            {13: "  group g1 = gpu[4..7]; gpu = H100"},
            13,
            31,
            "`gpu` must be `a100`, `h100` or `h200`, not `H100`",
            "did you mean `h100`?",
        ),
    ],
)
def test_bad_choice(lines: dict[int, str], line: int, column: int, message: str, help: str) -> None:
    check(only_diagnostic(config(lines)), line, column, message, help=help)


GPU_HELP = (
    "for another GPU, start from a preset and give its figures in `devices`, e.g."
    " `gpu = h200; peak_flops = ...; hbm_bandwidth = ...; memory_bytes = ...`"
    " (docs/cost-models.md lists them)"
)


@pytest.mark.parametrize("gpu", ["b200", "tpu", "h20"])
def test_gpu_without_a_preset(gpu: str) -> None:
    # b200 and h20 are one letter from h200 but are other chips: no did-you-mean.
    found = only_diagnostic(config({13: f"  group g1 = gpu[4..7]; gpu = {gpu}"}))
    check(
        found,
        13,
        31,
        f"`gpu` must be `a100`, `h100` or `h200`, not `{gpu}`",
        help=GPU_HELP,
        width=len(gpu),
    )


def test_gpu_help_example_is_valid() -> None:
    # The help's example, with numbers for the dots, is a devices section that compiles.
    example = GPU_HELP.split("e.g. `", 1)[1].split("`", 1)[0].replace("...", "1e12")
    program = dagc.compile_text(config({13: f"  group g1 = gpu[4..7]; {example}"})).program
    assert program.hardware.gpu == "h200"
    assert set(program.hardware.overrides) == {"peak_flops", "hbm_bandwidth", "memory_bytes"}


@pytest.mark.parametrize(("written", "shown"), [("0", "0"), ("1e999", "inf"), ("fast", "fast")])
def test_not_a_positive_number(written: str, shown: str) -> None:
    found = only_diagnostic(config({5: f"  ffn = 4096; capacity_factor = {written}"}))
    check(
        found,
        5,
        33,
        f"`capacity_factor` must be a positive number, not `{shown}`",
        help="e.g. `capacity_factor = 1.25`",
    )


@pytest.mark.parametrize("value", ["0", "-4", "1.5", "big"])
def test_not_a_positive_integer(value: str) -> None:
    # Only one error: `hidden` is written, so it is not also reported as missing.
    found = only_diagnostic(config({3: f"  hidden = {value}"}))
    check(
        found,
        3,
        12,
        f"`hidden` must be a positive integer, not `{value}`",
        help="`hidden` is the hidden size",
        width=len(value),
    )


def test_not_a_positive_integer_option() -> None:
    found = only_diagnostic(config({16: "  attention tp=0"}))
    check(found, 16, 16, "`tp` must be a positive integer, not `0`")
    assert found.help is None


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        (2, "layers", "model has no `layers` (number of transformer layers)"),
        (3, "hidden", "model has no `hidden` (hidden size)"),
        (8, "batch", "workload has no `batch` (sequences in the batch)"),
        (9, "seq", "workload has no `seq` (tokens per sequence)"),
    ],
)
def test_missing_required_key(line: int, key: str, message: str) -> None:
    found = only_diagnostic(config({line: ""}))
    section, start = ("model", 1) if line < 7 else ("workload", 7)
    check(
        found,
        start,
        1,
        message,
        help=f"add `{key} = ...` to the {section} section",
        width=len(section),
    )


@pytest.mark.parametrize(
    ("line", "text", "message", "help"),
    [
        (3, "  hiden = 1024", "unknown model key `hiden`", "did you mean `hidden`?"),
        (9, "  sq = 128", "unknown workload key `sq`", "did you mean `seq`?"),
        (  # another tool's name for the key: far in spelling, the same setting
            3,
            "  hidden_size = 1024",
            "unknown model key `hidden_size`",
            "did you mean `hidden`? (dagc's key for the hidden size)",
        ),
        (
            9,
            "  seq_len = 128",
            "unknown workload key `seq_len`",
            "did you mean `seq`? (dagc's key for the tokens per sequence)",
        ),
    ],
)
def test_misspelt_required_key_is_not_also_missing(
    line: int, text: str, message: str, help: str
) -> None:
    check(only_diagnostic(config({line: text})), line, 3, message, help=help)


def test_empty_sections_report_their_required_keys() -> None:
    found = diagnostics_of(config({**dict.fromkeys(range(2, 6), ""), 8: "", 9: ""}))
    assert [(d.span.line, d.span.column, d.message) for d in found if d.span] == [
        (1, 1, "model has no `layers` (number of transformer layers)"),
        (1, 1, "model has no `hidden` (hidden size)"),
        (7, 1, "workload has no `batch` (sequences in the batch)"),
        (7, 1, "workload has no `seq` (tokens per sequence)"),
    ]


# -- model and workload checks --------------------------------------------------------


def test_head_dim_default_needs_divisible_hidden() -> None:
    found = only_diagnostic(config({3: "  hidden = 1000"}))
    check(
        found,
        4,
        11,
        "head_dim defaults to hidden/heads, but 1000 is not divisible by 16",
        help="set `head_dim` explicitly or choose heads dividing hidden",
    )


@pytest.mark.parametrize(
    ("lines", "column", "key", "needed", "help"),
    [
        (  # without heads (and so without attention blocks)
            {4: "  head_dim = 64", 16: "", 20: ""},
            14,
            "head_dim",
            "heads",
            "add `heads = ...` if the model has attention, or remove `head_dim`",
        ),
        (
            {4: "  kv_heads = 4", 16: "", 20: ""},
            14,
            "kv_heads",
            "heads",
            "add `heads = ...` if the model has attention, or remove `kv_heads`",
        ),
        (
            {5: "  ffn = 4096; top_k = 2"},
            23,
            "top_k",
            "experts",
            "add `experts = ...` if the model has MoE layers, or remove `top_k`",
        ),
        (
            {5: "  ffn = 4096; expert_ffn = 512"},
            28,
            "expert_ffn",
            "experts",
            "add `experts = ...` if the model has MoE layers, or remove `expert_ffn`",
        ),
        (
            {5: "  ffn = 4096; capacity_factor = 1.5"},
            33,
            "capacity_factor",
            "experts",
            "add `experts = ...` if the model has MoE layers, or remove `capacity_factor`",
        ),
        (
            {5: "  ffn = 4096; shared_experts = 2"},
            32,
            "shared_experts",
            "experts",
            "add `experts = ...` if the model has MoE layers, or remove `shared_experts`",
        ),
        (
            {5: "  ffn = 4096; router_bias = true"},
            29,
            "router_bias",
            "experts",
            "add `experts = ...` if the model has MoE layers, or remove `router_bias`",
        ),
    ],
)
def test_ignored_model_key_warning(
    lines: dict[int, str], column: int, key: str, needed: str, help: str
) -> None:
    line = next(iter(lines))
    result = dagc.compile_text(config(lines), path="t.dag")
    (warning,) = result.warnings
    message = f"`{key}` is ignored: the model has no `{needed}`"
    check(warning, line, column, message, severity=WARNING, help=help)
    assert getattr(result.program.model, key) in (None, 1.0, False)  # dropped, or the default


@pytest.mark.parametrize(
    ("text", "message"),
    [  # the needed key is misspelt: that error alone, no warning about what it leaves out
        ("  ffn = 4096; expert = 8; top_k = 2", "unknown model key `expert`"),
        ("  ffn = 4096; experts = 0; top_k = 2", "`experts` must be a positive integer, not `0`"),
    ],
)
def test_no_ignored_key_warning_when_the_needed_key_has_an_error(text: str, message: str) -> None:
    assert only_diagnostic(config({5: text})).message == message


@pytest.mark.parametrize("kv_heads", [6, 32])
def test_kv_heads_must_divide_heads(kv_heads: int) -> None:
    found = only_diagnostic(config({4: f"  heads = 16; kv_heads = {kv_heads}"}))
    check(
        found,
        4,
        26,
        f"kv_heads={kv_heads} must divide heads=16",
        help="each key/value head serves a whole group of query heads; choose a divisor of 16",
    )


def test_top_k_more_than_experts() -> None:
    found = only_diagnostic(config({5: "  ffn = 4096; experts = 8; top_k = 9"}))
    check(
        found,
        5,
        36,
        "top_k=9 is more than the 8 experts",
        help="a token visits at most every expert: use top_k <= 8",
    )


def test_batch_not_divisible_by_microbatches() -> None:
    found = only_diagnostic(config({9: "  seq = 128; microbatches = 3"}))
    check(
        found,
        9,
        29,
        "batch=8 is not divisible by microbatches=3",
        help="every micro-batch holds the same number of sequences: choose a divisor of 8",
    )


# Multi-head latent attention on lines 4-8 (heads, kv_lora_rank and its three head sizes);
# the base's lines after 4 shift down by 4.
MLA = (
    "  heads = 16\n  kv_lora_rank = 64\n  qk_nope_head_dim = 32\n  qk_rope_head_dim = 16\n"
    "  v_head_dim = 32"
)


def test_mla_key_without_kv_lora_rank() -> None:
    found = only_diagnostic(config({4: "  heads = 16\n  q_lora_rank = 64"}))
    check(
        found,
        5,
        17,  # the value: 2 spaces + `q_lora_rank = ` (14) before it
        "`q_lora_rank` belongs to multi-head latent attention, which `kv_lora_rank` turns on",
        help="add `kv_lora_rank = ...` (with qk_nope_head_dim, qk_rope_head_dim and"
        " v_head_dim), or remove `q_lora_rank`",
    )


def test_kv_lora_rank_needs_its_head_sizes() -> None:
    without_rope = MLA.replace("  qk_rope_head_dim = 16\n", "")
    found = only_diagnostic(config({4: without_rope}))
    check(
        found,
        5,
        18,  # kv_lora_rank's value: 2 spaces + `kv_lora_rank = ` (15) before it
        "multi-head latent attention needs `qk_rope_head_dim` (MLA query/key size per head"
        " with RoPE)",
        help="add `qk_rope_head_dim = ...` to the model (DeepSeek-V3: qk_nope_head_dim = 128,"
        " qk_rope_head_dim = 64, v_head_dim = 128)",
    )


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (
            "head_dim",
            "a head's sizes are qk_nope_head_dim + qk_rope_head_dim (queries and keys) and"
            " v_head_dim (values)",
        ),
        (
            "kv_heads",
            "every query head has its own key and value, decompressed from the shared latent",
        ),
    ],
)
def test_head_sizes_mean_nothing_with_mla(key: str, why: str) -> None:
    found = only_diagnostic(config({4: f"{MLA}\n  {key} = 4"}))
    check(
        found,
        9,
        len(f"  {key} = ") + 1,  # the value, on the line after MLA's five
        f"`{key}` means nothing with multi-head latent attention",
        help=f"remove it: {why}",
    )


@pytest.mark.parametrize(
    ("lines", "line", "column"),
    [
        # the model's default: `attention_kernel = fused` at its value, column 49
        # (`  heads = 4; ` 13, `head_dim = 320; ` 16, `attention_kernel = ` 19)
        ({4: "  heads = 4; head_dim = 320; attention_kernel = fused"}, 4, 49),
        # the block's option, at its value (`  attention tp=4 kernel=` is 24 characters)
        ({4: "  heads = 4; head_dim = 320", 16: "  attention tp=4 kernel=fused"}, 16, 25),
    ],
)
def test_fused_kernel_heads_too_wide(lines: dict[int, str], line: int, column: int) -> None:
    found = only_diagnostic(config(lines))
    check(
        found,
        line,
        column,
        "a fused attention kernel handles heads of at most 256, but this model's heads are"
        " 320 wide",
        help="write `kernel=explicit` on this block (products and softmax, with the scores in"
        " memory), or check `head_dim`",
    )


# -- device groups ---------------------------------------------------------------------


def test_duplicate_group() -> None:
    found = only_diagnostic(config({13: "  group g1 = gpu[4..7]; group g0 = gpu[8..9]"}))
    check(found, 13, 31, "duplicate group `g0`", help="give each group its own name", width=2)
    (note,) = found.notes
    assert note.message == "first defined here"
    assert note.span is not None and (note.span.line, note.span.column) == (12, 9)


def test_unknown_device_kind() -> None:
    found = only_diagnostic(config({13: "  group g1 = tpu[4..7]"}))
    check(
        found,
        13,
        14,
        "unknown device kind `tpu`",
        help="groups list GPU ids, e.g. `gpu[0..7]`",
    )


def test_group_without_gpus() -> None:
    found = only_diagnostic(config({13: "  group g1 = gpu[]"}))
    check(
        found,
        13,
        3,
        "group `g1` has no GPUs",
        help="list GPU ids, e.g. `gpu[0..7]` or `gpu[0, 2, 4]`",
        width=len("group g1 = gpu[]"),
    )


def test_reversed_gpu_range() -> None:
    found = only_diagnostic(config({13: "  group g1 = gpu[7..4]"}))
    check(
        found,
        13,
        18,
        "GPU range 7..4 is reversed, so it is empty",
        help="ranges go upwards: write `4..7`",
        width=4,
    )


@pytest.mark.parametrize(
    ("lines", "line", "column", "message", "first"),
    [
        ({13: "  group g1 = gpu[3..7]"}, 13, 18, "gpu 3 is also in group `g0`", (12, 18)),
        ({12: "  group g0 = gpu[0..3, 2]"}, 12, 24, "gpu 2 is twice in this group", (12, 18)),
    ],
)
def test_gpu_in_two_places(
    lines: dict[int, str], line: int, column: int, message: str, first: tuple[int, int]
) -> None:
    found = only_diagnostic(config(lines))
    check(
        found,
        line,
        column,
        message,
        help="a GPU belongs to one group: remove it from one of them",
    )
    (note,) = found.notes
    assert note.span is not None and (note.span.line, note.span.column) == first


# -- layer placement -------------------------------------------------------------------


def test_reversed_layer_range() -> None:
    # The range names layers 2 and 3, so they are not also reported as unplaced.
    found = only_diagnostic(config({19: "layers 3..2 on g1 {"}))
    check(
        found,
        19,
        8,
        "layer range 3..2 is reversed, so it is empty",
        help="ranges go upwards: write `2..3`",
        width=4,
    )


def test_layer_does_not_exist() -> None:
    # Layers 2 and 3 are named by the statement, so they are not also reported as unplaced.
    found = only_diagnostic(config({19: "layers 2..4 on g1 {"}))
    check(
        found,
        19,
        8,
        "layer 4 does not exist: the model has 4 layers (0..3)",
        help="layers are numbered from 0; fix the range or the model's `layers`",
        width=4,
    )


def test_layer_placed_twice() -> None:
    found = only_diagnostic(config({19: "layers 1..3 on g1 {"}))
    check(
        found,
        19,
        8,
        "layer 1 is already placed by the `layers` statement on line 15",
        help="each layer is placed once: split or shorten one of the ranges",
    )
    (note,) = found.notes
    assert note.message == "placed here first"
    assert note.span is not None and (note.span.line, note.span.column) == (15, 8)


def test_layers_placed_twice_by_two_statements() -> None:
    # Layers 0 and 2 are taken by two different statements; layer 1 is free.
    found = diagnostics_of(
        config(
            {15: "layers 0 on g0 {", 19: "layers 2 on g1 {"},
            append="layers 0..3 on g1 {\n  attention\n  mlp\n}\n",
        )
    )
    assert [(d.span.line, d.span.column, d.message) for d in found if d.span] == [
        (23, 8, "layer 0 is already placed by the `layers` statement on line 15"),
        (23, 8, "layer 2 is already placed by the `layers` statement on line 19"),
    ]


@pytest.mark.parametrize(
    ("lines", "message", "help"),
    [
        (
            dict.fromkeys(range(19, 23), ""),
            "layers 2..3 are not placed on any GPUs",
            "add `layers 2..3 on GROUP { ... }`",
        ),
        (
            {19: "layers 2..2 on g1 {"},
            "layer 3 is not placed on any GPUs",
            "add `layers 3 on GROUP { ... }`",
        ),
    ],
)
def test_layers_not_placed(lines: dict[int, str], message: str, help: str) -> None:
    check(only_diagnostic(config(lines)), 2, 12, message, help=help, width=1)


def test_group_listed_twice() -> None:
    found = only_diagnostic(config({15: "layers 0..1 on g0, g0 pp=2 {"}))
    check(
        found,
        15,
        20,
        "group `g0` is listed twice",
        help="a pipeline stage runs on one group; list each group once",
    )


@pytest.mark.parametrize(
    ("lines", "line", "column", "name", "help"),
    [
        ({15: "layers 0..1 on gg0 {"}, 15, 16, "gg0", "did you mean `g0`?"),
        ({15: "layers 0..1 on tp {"}, 15, 16, "tp", "declared groups: `g0` or `g1`"),
        ({16: "  attention on gg1 tp=4"}, 16, 16, "gg1", "did you mean `g1`?"),
    ],
)
def test_unknown_group(lines: dict[int, str], line: int, column: int, name: str, help: str) -> None:
    found = only_diagnostic(config(lines))
    check(found, line, column, f"unknown group `{name}`", help=help, width=len(name))


def test_several_groups_need_pp() -> None:
    found = only_diagnostic(config({15: "layers 0..1 on g0, g1 {"}))
    check(
        found,
        15,
        20,
        "2 groups after `on` make a 2-stage pipeline; say so with `pp=2`",
        help="write `on g0, g1 pp=2`",
    )


@pytest.mark.parametrize(
    ("line", "column", "message", "help"),
    [
        (
            "layers 0..1 on g0 pp=2 {",
            22,
            "pp=2 needs 2 groups after `on`, one per stage, but 1 is listed",
            "list 2 groups, e.g. `on stage0, stage1 pp=2`",
        ),
        (
            "layers 0..1 pp=3 {",
            16,
            "pp=3 needs 3 groups after `on`, one per stage, but 0 are listed",
            "list 3 groups, e.g. `on stage0, stage1, stage2 pp=3`",
        ),
    ],
)
def test_pp_does_not_match_the_groups(line: str, column: int, message: str, help: str) -> None:
    check(only_diagnostic(config({15: line})), 15, column, message, help=help)


def test_more_stages_than_layers() -> None:
    found = only_diagnostic(config({15: "layers 0 on g0, g1 pp=2 {", 19: "layers 1..3 on g1 {"}))
    check(
        found,
        15,
        23,
        "pp=2 stages cannot share 1 layer",
        help="each stage needs at least one layer: lower pp or widen the range",
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (  # 3 = 2 + 1
            {15: "layers 0..2 on g0, g1 pp=2 {", 19: "layers 3 on g1 {"},
            "3 layers do not split evenly over pp=2: stage 0 gets 2 layers, stage 1 gets 1",
        ),
        (  # 4 = 2 + 1 + 1
            {
                13: "  group g1 = gpu[4..7]; group g2 = gpu[8..11]",
                15: "layers 0..3 on g0, g1, g2 pp=3 {",
                **dict.fromkeys(range(19, 23), ""),
            },
            "4 layers do not split evenly over pp=3: stage 0 gets 2 layers, stages 1-2 get 1",
        ),
    ],
)
def test_uneven_pipeline_split_warning(lines: dict[int, str], message: str) -> None:
    column = lines[15].index("pp=") + 4  # the value of pp
    (warning,) = dagc.compile_text(config(lines), path="t.dag").warnings
    check(
        warning,
        15,
        column,
        message,
        severity=WARNING,
        help=f"the stages with the most layers set the pace; a pp dividing {message[0]} splits"
        " evenly, or write one `layers` statement per stage to choose the split",
        width=1,
    )


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            {19: "layers 2..3 on g1 { }", 20: "", 21: "", 22: ""},
            "this `layers` statement has no blocks, so layers 2..3 run nothing",
        ),
        (
            {19: "layers 2 on g1 {", 20: "}", 21: "layers 3 on g1 { attention; mlp }", 22: ""},
            "this `layers` statement has no blocks, so layer 2 runs nothing",
        ),
    ],
)
def test_layers_statement_without_blocks_warning(lines: dict[int, str], message: str) -> None:
    (warning,) = dagc.compile_text(config(lines), path="t.dag").warnings
    help = "list the blocks each layer runs, e.g. `{ attention; mlp }`"
    check(warning, 19, 8, message, severity=WARNING, help=help)


def test_pipeline_stage_without_blocks_warning() -> None:
    # `embed` stays in the first stage only, so stage 1 (layer 1, on g1) runs nothing.
    lines = {15: "layers 0..1 on g0, g1 pp=2 {", 16: "  embed", 17: ""}
    (warning,) = dagc.compile_text(config(lines), path="t.dag").warnings
    check(
        warning,
        15,
        20,
        "stage 1 of this pipeline (layer 1) runs no blocks",
        severity=WARNING,
        help="`embed` runs only in the first stage and `lm_head` only in the last: list the"
        " blocks each layer runs",
        width=2,
    )


# -- limits on counts (checked before any loop over the items) -------------------------


@pytest.mark.parametrize(
    ("lines", "line", "column", "message", "help", "width"),
    [
        (
            {13: "  group g1 = gpu[4..1000000000000]"},
            13,
            21,
            "GPU id 1000000000000 is out of range: ids go from 0 to 1048575",
            "dagc handles at most 1,048,576 GPUs; check the id",
            13,
        ),
        (  # the first id is the one out of range; numbers may be written with `_`
            {13: "  group g1 = gpu[4, 1_048_576 .. 2_000_000]"},
            13,
            21,
            "GPU id 1048576 is out of range: ids go from 0 to 1048575",
            "dagc handles at most 1,048,576 GPUs; check the id",
            9,
        ),
        (
            {2: "  layers = 1000000000000"},
            2,
            12,
            "`layers` must be at most 100,000, not `1000000000000`",
            "`layers` is the number of transformer layers; dagc handles at most 100,000",
            13,
        ),
        (
            {5: "  ffn = 4096; experts = 1000000000000; top_k = 2"},
            5,
            25,
            "`experts` must be at most 1,048,576, not `1000000000000`",
            "`experts` is the routed experts; dagc handles at most 1,048,576",
            13,
        ),
    ],
)
def test_count_beyond_the_limit(
    lines: dict[int, str], line: int, column: int, message: str, help: str, width: int
) -> None:
    check(only_diagnostic(config(lines)), line, column, message, help=help, width=width)


def test_layer_range_beyond_the_limit_while_the_model_is_invalid() -> None:
    found = diagnostics_of(config({2: "  layers = 0", 19: "layers 2..1000000000000 on g1 {"}))
    assert len(found) == 2
    check(found[0], 2, 12, "`layers` must be a positive integer, not `0`")
    check(
        found[1],
        19,
        8,
        "layer 1000000000000 does not exist: dagc handles at most 100,000 layers (0..99999)",
        help="layers are numbered from 0; fix the range",
    )


def test_counts_at_the_limit_are_accepted() -> None:
    text = config(
        {5: "  ffn = 4096; experts = 1_048_576; top_k = 2", 14: "  group spare = gpu[1048575]\n}"}
    )
    program = dagc.compile_text(text, path="t.dag").program
    assert program.model.experts == 1_048_576
    assert program.group("spare").gpus == (1_048_575,)


# -- blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "help"), [("mpl", "did you mean `mlp`?"), ("ffw", BLOCKS)])
def test_unknown_block_kind(kind: str, help: str) -> None:
    found = only_diagnostic(config({17: f"  {kind} tp=4"}))
    check(found, 17, 3, f"unknown block kind `{kind}`", help=help, width=3)


def test_duplicate_block() -> None:
    found = only_diagnostic(config({17: "  attention tp=4"}))
    check(
        found,
        17,
        3,
        "duplicate `attention` block in one layer",
        help="a layer runs each kind of block once; remove one",
    )
    (note,) = found.notes
    assert note.message == "first here"
    assert note.span is not None and (note.span.line, note.span.column) == (16, 3)


def test_mlp_and_moe_in_one_layer() -> None:
    found = only_diagnostic(
        config({5: "  ffn = 4096; experts = 4; top_k = 2", 17: "  mlp tp=4; moe ep=4"})
    )
    check(
        found,
        17,
        13,
        "a layer has either an `mlp` or a `moe` block, not both",
        help="remove one of them",
    )
    (note,) = found.notes
    assert note.message == "the mlp block is here"
    assert note.span is not None and (note.span.line, note.span.column) == (17, 3)


def test_embed_not_first() -> None:
    found = only_diagnostic(config({17: "  mlp tp=4; embed"}))
    check(
        found,
        17,
        13,
        "`embed` must be the first block",
        help="move it to the top of the block list",
    )


def test_embed_not_at_layer_0() -> None:
    found = only_diagnostic(config({20: "  embed; attention tp=4"}))
    check(
        found,
        20,
        3,
        "`embed` runs before layer 0, but this range starts at layer 2",
        help="move `embed` to the statement that places layer 0",
    )


def test_lm_head_not_last() -> None:
    found = only_diagnostic(
        config({5: "  ffn = 4096; vocab = 32000", 20: "  lm_head; attention tp=4"})
    )
    check(
        found,
        20,
        3,
        "`lm_head` must be the last block",
        help="move it to the end of the block list",
    )


def test_lm_head_not_at_the_last_layer() -> None:
    found = only_diagnostic(config({5: "  ffn = 4096; vocab = 32000", 17: "  mlp tp=4; lm_head"}))
    check(
        found,
        17,
        13,
        "`lm_head` runs after the last layer (3), but this range ends at layer 1",
        help="move `lm_head` to the statement that places the last layer",
    )


def test_invalid_layer_count_does_not_confuse_the_lm_head_check() -> None:
    found = only_diagnostic(config({2: "  layers = -1", 21: "  mlp tp=4; lm_head"}))
    check(found, 2, 12, "`layers` must be a positive integer, not `-1`")


def test_block_group_in_a_pipelined_statement() -> None:
    found = only_diagnostic(
        config({15: "layers 0..1 on g0, g1 pp=2 {", 16: "  attention on g0 tp=4"})
    )
    check(
        found,
        16,
        16,
        "a block of a pipelined `layers` statement runs on its stage's group",
        help="remove `on g0`, or place these layers with their own `layers` statement",
        width=2,
    )


@pytest.mark.parametrize(
    ("written", "fixed"),
    [
        ("layers 0..1 g0 {", "layers 0..1 on g0 {"),
        ("layers 0..1 g0 { # stage 0", "layers 0..1 on g0 {"),
    ],
)
def test_on_missing_before_the_group(written: str, fixed: str) -> None:
    # One error: the group is then read as the statement's, so the blocks have a group.
    found = only_diagnostic(config({15: written}))
    check(
        found,
        15,
        13,
        "`on` is missing before the group name `g0`",
        help=f"write `{fixed}`",
        width=2,
    )


@pytest.mark.parametrize(
    ("lines", "fixed"),
    [
        ({16: "  attention g0 tp=4"}, "attention on g0 tp=4"),
        (  # the statement has no group either: still one error, not "placed on no group"
            {15: "layers 0..1 {", 16: "  attention g0 tp=4", 17: "  mlp on g0 tp=4"},
            "attention on g0 tp=4",
        ),
    ],
)
def test_on_missing_before_a_block_group(lines: dict[int, str], fixed: str) -> None:
    found = only_diagnostic(config(lines))
    check(
        found,
        16,
        13,
        "`on` is missing before the group name `g0`",
        help=f"write `{fixed}`",
        width=2,
    )


def test_on_missing_before_an_unknown_group() -> None:
    # Two mistakes, two errors: the missing `on`, and the group name's typo.
    found = diagnostics_of(config({15: "layers 0..1 gg0 {"}))
    assert [(d.span.line, d.span.column, d.message, d.help) for d in found if d.span] == [
        (15, 13, "`on` is missing before the group name `gg0`", "write `layers 0..1 on gg0 {`"),
        (15, 13, "unknown group `gg0`", "did you mean `g0`?"),
    ]


def test_block_on_no_group() -> None:
    found = only_diagnostic(config({15: "layers 0..1 {", 16: "  attention on g0 tp=4"}))
    check(
        found,
        17,
        3,
        "`mlp` is placed on no group",
        help="write `mlp on GROUP`, or `layers 0..1 on GROUP { ... }`",
    )


@pytest.mark.parametrize(
    ("lines", "places", "message"),
    [
        (
            {4: ""},
            [(16, 3), (20, 3)],
            "`attention` needs `heads` (attention (query) heads) in the model",
        ),
        (
            {5: "  experts = 4; top_k = 2", 17: "  moe ep=4", 21: "  moe ep=4"},
            [(17, 3), (21, 3)],
            "`moe` needs `expert_ffn` (expert MLP inner size) in the model",
        ),
        (
            {21: "  mlp tp=4; lm_head"},
            [(21, 13)],
            "`lm_head` needs `vocab` (vocabulary size) in the model",
        ),
    ],
)
def test_block_needs_a_model_key(
    lines: dict[int, str], places: list[tuple[int, int]], message: str
) -> None:
    found = diagnostics_of(config(lines))
    assert len(found) == len(places)
    key = message.split("`")[3]
    for diagnostic, (line, column) in zip(found, places, strict=True):
        check(diagnostic, line, column, message, help=f"add `{key} = ...` to `model m`")
        (note,) = diagnostic.notes
        assert note.message == "the model is here"
        assert note.span is not None and (note.span.line, note.span.column) == (1, 1)


@pytest.mark.parametrize(
    ("lines", "column", "message", "help"),
    [
        (
            {16: "  attention tp=8"},
            16,
            "tp=8 is larger than group `g0` (4 GPUs)",
            "tp must equal the group's size: write `tp=4` or use a group of 8 GPUs",
        ),
        (
            {16: "  attention tp=2"},
            16,
            "tp=2 is smaller than group `g0` (4 GPUs)",
            "tp must equal the group's size: write `tp=4`, use a group of 2 GPUs, or make"
            " 4 data-parallel replicas: `tp=1 dp=4`",
        ),
        (
            {5: "  ffn = 4096; experts = 4; top_k = 1", 16: "  attention tp=4; moe ep=2"},
            26,
            "ep=2 is smaller than group `g0` (4 GPUs)",
            "ep must equal the group's size: write `ep=4` or use a group of 2 GPUs"
            " (a moe block splits its experts over its whole group)",
        ),
    ],
)
def test_degree_differs_from_the_group_size(
    lines: dict[int, str], column: int, message: str, help: str
) -> None:
    lines = {17: "", **lines}  # no mlp in layers 0..1 (the moe test adds a moe block)
    check(only_diagnostic(config(lines)), 16, column, message, help=help)


def test_ep_does_not_divide_the_experts() -> None:
    found = only_diagnostic(config({5: "  ffn = 4096; experts = 6; top_k = 2", 17: "  moe ep=4"}))
    check(
        found,
        17,
        10,
        "ep=4 does not divide the 6 experts",
        help="each GPU holds the same number of experts: use a group size in 1, 2, 3, 6",
    )


def test_tp_larger_than_the_work() -> None:
    found = diagnostics_of(config({5: "  ffn = 2"}))
    assert len(found) == 2
    for diagnostic, line in zip(found, (17, 21), strict=True):
        check(
            diagnostic,
            line,
            10,
            "tp=4 leaves GPUs without work: 2 ffn columns over 4 GPUs",
            help="use at most 2 GPUs for this block",
        )


# -- warnings --------------------------------------------------------------------------

# 32 heads over 12 GPUs: 32 = 2*12 + 8, so ranks 0-7 get 3 heads and ranks 8-11 get 2.
UNEVEN_HEADS = {
    4: "  heads = 32",  # head_dim = 1024 / 32 = 32
    5: "  ffn = 4104",  # 12 * 342, and 4 * 1026: even everywhere
    12: "  group g0 = gpu[0..11]",
    13: "  group g1 = gpu[12..15]",
    16: "  attention tp=12",
    17: "  mlp tp=12",
}
UNEVEN_HEADS_MESSAGE = "32 heads do not split evenly over tp=12: ranks 0-7 get 3, ranks 8-11 get 2"


def test_uneven_heads_warning() -> None:
    result = dagc.compile_text(config(UNEVEN_HEADS), path="t.dag")
    (warning,) = result.warnings
    check(
        warning,
        16,
        16,
        UNEVEN_HEADS_MESSAGE,
        severity=WARNING,
        help="the busiest rank sets the pace; a tp dividing 32 balances the work",
        width=2,
    )


@pytest.mark.parametrize(
    ("lines", "places", "message"),
    [
        (  # 4098 = 4*1024 + 2
            {5: "  ffn = 4098"},
            [(17, 10), (21, 10)],
            "4098 ffn columns do not split evenly over tp=4: ranks 0-1 get 1025,"
            " ranks 2-3 get 1024",
        ),
        (  # 50257 = 4*12564 + 1
            {5: "  ffn = 4096; vocab = 50257", 21: "  mlp tp=4; lm_head"},
            [(21, 13)],
            "50257 vocabulary rows do not split evenly over tp=4: rank 0 gets 12565,"
            " ranks 1-3 get 12564",
        ),
        (  # 7 = 4*1 + 3
            {4: "  heads = 7; head_dim = 64"},
            [(16, 16), (20, 16)],
            "7 heads do not split evenly over tp=4: ranks 0-2 get 2, rank 3 gets 1",
        ),
        (  # 12 heads split evenly over 4; 6 kv heads are 2, 2, 1, 1
            {4: "  heads = 12; kv_heads = 6; head_dim = 64"},
            [(16, 16), (20, 16)],
            "6 kv_heads do not split evenly over tp=4: ranks get 2 or 1",
        ),
    ],
)
def test_uneven_split_warning(
    lines: dict[int, str], places: list[tuple[int, int]], message: str
) -> None:
    warnings = dagc.compile_text(config(lines), path="t.dag").warnings
    assert len(warnings) == len(places)
    for warning, (line, column) in zip(warnings, places, strict=True):
        check(warning, line, column, message, severity=WARNING)


def test_werror_turns_warnings_into_errors() -> None:
    (found,) = diagnostics_of(config(UNEVEN_HEADS), werror=True)
    check(found, 16, 16, UNEVEN_HEADS_MESSAGE + " [--werror]", width=2)


def test_warnings_come_with_errors() -> None:
    found = diagnostics_of(config({**UNEVEN_HEADS, 21: "  mpl tp=4"}))
    assert [(d.severity, d.span.line) for d in found if d.span] == [
        (Severity.WARNING, 16),
        (Severity.ERROR, 21),
    ]


# -- several errors in one file --------------------------------------------------------


def test_errors_are_reported_together_in_file_order() -> None:
    # Found in the order workload, device settings, groups; reported in file order.
    lines = {
        9: "  seq = 0",
        12: "  group g0 = gpu[3..0]",
        13: "  group g1 = gpu[4..7]; node_size = 0",
    }
    with pytest.raises(dagc.DiagnosticError) as info:
        dagc.compile_text(config(lines), path="t.dag")
    found = info.value.diagnostics
    assert len(found) == 3
    check(found[0], 9, 9, "`seq` must be a positive integer, not `0`")
    check(found[1], 12, 18, "GPU range 3..0 is reversed, so it is empty")
    check(found[2], 13, 37, "`node_size` must be a positive integer, not `0`")
    rendered = info.value.render()
    assert rendered.count("t.dag:") == 3
    assert rendered.index("t.dag:9:9:") < rendered.index("t.dag:12:18:")
    assert rendered.index("t.dag:12:18:") < rendered.index("t.dag:13:37:")
    assert str(info.value) == found[0].render()


# -- reading files (dagc/compiler.py) --------------------------------------------------


def _read_error(path: Path) -> dagc.Diagnostic:
    with pytest.raises(dagc.DiagnosticError) as info:
        dagc.read_source(path)
    (found,) = info.value.diagnostics
    assert found.severity is Severity.ERROR
    return found


def test_directory(tmp_path: Path) -> None:
    found = _read_error(tmp_path)
    assert found.span is None
    assert found.render() == (
        f"{tmp_path}: error: is a directory, not a .dag file\n"
        "     = help: name a file, e.g. `model.dag`"
    )


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.dag"
    found = _read_error(path)
    assert found.render() == f"{path}: error: no such file\n     = help: check the path"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.dag"
    path.write_text(config())

    def refuse(*args: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("dagc.inputs.os.open", refuse)  # root may read a chmod-000 file
    found = _read_error(path)
    assert found.message == "cannot read the file: Permission denied"
    assert found.help == "check its permissions"
    assert found.render().startswith(f"{path}: error: cannot read the file")


@pytest.mark.parametrize(
    ("data", "line", "column", "message"),
    [
        # "model m {\n" is 10 bytes, "  layers = 4" 12 more: the bad byte is at offset 22.
        (b"model m {\n  layers = 4\xff\n}\n", 2, 13, "byte 0xff at offset 22"),
        # Columns count characters: "# \xc3\xa9" is 3 characters in 4 bytes.
        (b"# \xc3\xa9\xfe\n", 1, 4, "byte 0xfe at offset 4"),
    ],
)
def test_not_utf8(tmp_path: Path, data: bytes, line: int, column: int, message: str) -> None:
    path = tmp_path / "t.dag"
    path.write_bytes(data)
    found = _read_error(path)
    check(
        found,
        line,
        column,
        f"the file is not UTF-8 text ({message})",
        help="save it as UTF-8",
        path=str(path),
    )


@pytest.mark.parametrize("text", ["", " \n\t\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.dag"
    path.write_text(text)
    found = _read_error(path)
    check(
        found,
        1,
        1,
        "the file is empty",
        help="a .dag file declares a `model`, a `workload`, `devices` and `layers`",
        path=str(path),
    )


@pytest.mark.parametrize("text", ["", "  \n\t\n", "# only a comment\n\n   # and another\n"])
def test_empty_text(text: str) -> None:
    # compile_text says what read_source says about an empty file.
    found = only_diagnostic(text)
    check(
        found,
        1,
        1,
        "the file is empty",
        help="a .dag file declares a `model`, a `workload`, `devices` and `layers`",
    )


def test_file_of_comments_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "t.dag"
    path.write_text("# a plan, not written yet\n")
    check(_read_error(path), 1, 1, "the file is empty", path=str(path))


def test_byte_order_mark_is_not_part_of_the_text(tmp_path: Path) -> None:
    path = tmp_path / "t.dag"
    path.write_bytes(b"\xef\xbb\xbf" + config().encode())
    assert dagc.read_source(path).text == config()
    assert dagc.compile_file(path).program.model.name == "m"


def test_routed_dispatch_on_the_moe_blocks_own_gpus_changes_nothing() -> None:
    text = config(
        {16: "  attention tp=4", 17: "  moe ep=4 dispatch=routed", 21: "  moe ep=4"}
    ).replace("  ffn = 4096", "  ffn = 4096; experts = 8; top_k = 2")
    (warning,) = dagc.compile_text(text, "t.dag").warnings
    check(
        warning,
        17,
        12,
        "`dispatch=routed` changes nothing here: this moe block's tokens are on its own GPUs,"
        " and it already dispatches them by all-to-all",
        severity=WARNING,
        help="remove it; routed dispatch is for a moe block on another group than the block"
        " before it (attention/MoE separation)",
        width=15,
    )
    # on another group than the block before it, it is what the option is for
    routed = config(
        {13: "  group g1 = gpu[4..7]; group e = gpu[8..11]", 17: "  moe on e ep=4 dispatch=routed"}
    ).replace("  ffn = 4096", "  ffn = 4096; experts = 8; top_k = 2")
    assert not dagc.compile_text(routed, "t.dag").warnings


# -- training (dagc/frontend/sema.py: _training, _workload) ------------------------------------


def test_virtual_stages_need_the_interleaved_schedule() -> None:
    found = only_diagnostic(config(append="training { virtual_stages = 2 }\n"))
    check(
        found,
        23,
        29,  # the value
        "virtual_stages=2 needs the interleaved schedule, not `1f1b`",
        help="write `schedule = interleaved`, or remove `virtual_stages`",
    )


def test_batch_not_divisible_by_dp() -> None:
    found = only_diagnostic(config(append="training { dp = 3 }\n"))
    check(
        found,
        8,
        11,
        "batch=8 does not split over dp=3 replicas",
        help="the global batch is split evenly over the replicas: use a multiple of 3",
    )


def test_microbatch_size_not_dividing_the_batch() -> None:
    found = only_diagnostic(config({9: "  seq = 128; microbatch_size = 3"}))
    check(
        found,
        9,
        32,
        "microbatch_size=3 does not divide batch=8",
        help="micro-batches hold the same number of sequences: write one of"
        " `microbatches` and `microbatch_size`, dividing the batch",
    )


def test_duplicate_training_section() -> None:
    found = only_diagnostic(config(append="training { dp = 1 }\ntraining { dp = 2 }\n"))
    check(
        found,
        24,
        1,
        "duplicate `training` section",
        help="a file describes one configuration: merge the two sections",
        width=8,
    )
    (note,) = found.notes
    assert note.span is not None and (note.span.line, note.span.column) == (23, 1)
