"""Lowering to the logical IR: pipeline sugar, the split of layers into stages, defaults."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import dagc
from dagc.frontend import parser
from dagc.ir.logical import (
    Activation,
    Block,
    BlockKind,
    DeviceGroup,
    DType,
    Hardware,
    LayerRange,
    Model,
    Program,
    Workload,
)
from helpers import REPO

ATTENTION, MLP, MOE = BlockKind.ATTENTION, BlockKind.MLP, BlockKind.MOE

HEADER = """\
model m { layers = 4; hidden = 1024; heads = 16; ffn = 4096 }
workload { batch = 8; seq = 128 }
devices {
  group s0 = gpu[0..3]
  group s1 = gpu[4..7]
}
"""


def program_of(text: str) -> Program:
    return dagc.compile_text(text, path="t.dag").program


def placement(program: Program) -> list[tuple[int, int, tuple[str, ...]]]:
    """(first, last, groups of the blocks) for every range."""
    return [(r.first, r.last, tuple(b.group for b in r.blocks)) for r in program.ranges]


def test_pipeline_sugar_is_two_explicit_statements() -> None:
    sugar = program_of(HEADER + "layers 0..3 on s0, s1 pp=2 {\n  attention tp=4\n  mlp tp=4\n}\n")
    explicit = program_of(
        HEADER
        + "layers 0..1 on s0 { attention tp=4; mlp tp=4 }\n"
        + "layers 2..3 on s1 { attention tp=4; mlp tp=4 }\n"
    )
    assert sugar == explicit
    assert str(sugar) == str(explicit)
    assert placement(sugar) == [(0, 1, ("s0", "s0")), (2, 3, ("s1", "s1"))]


EMBED_HEADER = """\
model m { layers = 10; hidden = 1024; heads = 8; ffn = 4096; vocab = 32000 }
workload { batch = 8; seq = 128 }
devices { group a = gpu[0..1]; group b = gpu[2..3]; group c = gpu[4..7] }
"""


def test_pipeline_sugar_keeps_embed_and_lm_head_at_the_ends() -> None:
    # 10 layers over 3 stages: 4, 3, 3. `embed` runs before layer 0 and `lm_head` after
    # layer 9, so only the first stage has `embed` and only the last has `lm_head`.
    sugar = dagc.compile_text(
        EMBED_HEADER + "layers 0..9 on a, b, c pp=3 { embed; attention; mlp; lm_head }\n",
        path="t.dag",
    )
    explicit = dagc.compile_text(
        EMBED_HEADER
        + "layers 0..3 on a { embed; attention; mlp }\n"
        + "layers 4..6 on b { attention; mlp }\n"
        + "layers 7..9 on c { attention; mlp; lm_head }\n",
        path="t.dag",
    )
    assert sugar.program == explicit.program
    assert str(sugar.program) == str(explicit.program)
    kinds = [tuple(b.kind for b in r.blocks) for r in sugar.program.ranges]
    assert kinds == [
        (BlockKind.EMBED, ATTENTION, MLP),
        (ATTENTION, MLP),
        (ATTENTION, MLP, BlockKind.LM_HEAD),
    ]
    # lm_head's tp is the last stage's group size (4), not checked against a or b.
    assert sugar.program.ranges[-1].blocks[-1].degree == 4
    assert explicit.warnings == ()
    assert [w.message for w in sugar.warnings] == [
        "10 layers do not split evenly over pp=3: stage 0 gets 4 layers, stages 1-2 get 3"
    ]


@pytest.mark.parametrize(
    ("first", "last", "pp", "expected"),
    [
        (0, 3, 1, [(0, 3)]),
        (0, 2, 2, [(0, 1), (2, 2)]),  # 3 layers = 2 + 1
        (0, 4, 2, [(0, 2), (3, 4)]),  # 5 = 3 + 2
        (0, 3, 3, [(0, 1), (2, 2), (3, 3)]),  # 4 = 2 + 1 + 1
        (1, 3, 3, [(1, 1), (2, 2), (3, 3)]),  # layer 0 is placed by its own statement
    ],
)
def test_pipeline_stages_are_contiguous_and_as_equal_as_possible(
    first: int, last: int, pp: int, expected: list[tuple[int, int]]
) -> None:
    groups = "\n".join(f"  group s{i} = gpu[{i}]" for i in range(3))
    text = (
        f"model m {{ layers = {last + 1}; hidden = 1024; heads = 16; ffn = 4096 }}\n"
        "workload { batch = 8; seq = 128 }\n"
        f"devices {{\n{groups}\n}}\n"
        + ("layers 0 on s2 { attention }\n" if first else "")
        + f"layers {first}..{last} on {', '.join(f's{i}' for i in range(pp))} pp={pp} {{ mlp }}\n"
    )
    stages = [r for r in program_of(text).ranges if r.blocks[0].kind is MLP]
    assert [(r.first, r.last) for r in stages] == expected
    assert [r.blocks[0].group for r in stages] == [f"s{i}" for i in range(pp)]


def test_61_layers_over_16_stages() -> None:
    # 61 = 16 * 3 + 13: stages 0-12 get 4 layers, stages 13-15 get 3.
    groups = "\n".join(f"  group s{i} = gpu[{i}]" for i in range(16))
    names = ", ".join(f"s{i}" for i in range(16))
    text = (
        "model deep { layers = 61; hidden = 256; heads = 4; ffn = 1024 }\n"
        "workload { batch = 1; seq = 8 }\n"
        f"devices {{\n{groups}\n}}\n"
        f"layers 0..60 on {names} pp=16 {{\n  attention\n  mlp\n}}\n"
    )
    expected = [(4 * s, 4 * s + 3, f"s{s}") for s in range(13)]
    expected += [(52, 54, "s13"), (55, 57, "s14"), (58, 60, "s15")]
    result = dagc.compile_text(text, path="t.dag")
    program = result.program
    assert [(r.first, r.last, r.blocks[0].group) for r in program.ranges] == expected
    assert all(b.degree == 1 for r in program.ranges for b in r.blocks)
    (warning,) = result.warnings  # the uneven split is said, never silently rounded
    assert warning.message == (
        "61 layers do not split evenly over pp=16: stages 0-12 get 4 layers, stages 13-15 get 3"
    )


DEFAULTS_TEXT = """\
model m { layers = 2; hidden = 64; heads = 4; ffn = 256 }
workload { batch = 2; seq = 16 }
devices { group g = gpu[0..1] }
layers 0..1 on g { attention; mlp }
"""


def test_defaults() -> None:
    expected = Program(
        model=Model(
            name="m",
            layers=2,
            hidden=64,
            heads=4,
            head_dim=16,  # hidden / heads
            kv_heads=4,  # = heads
            ffn=256,
            activation=Activation.GELU,
            capacity_factor=1.0,
        ),
        workload=Workload(batch=2, seq=16, dtype=DType.BF16, microbatches=1),
        hardware=Hardware(gpu="h100", node_size=8),
        groups=(DeviceGroup("g", (0, 1)),),
        ranges=(LayerRange(0, 1, (Block(ATTENTION, "g", 2), Block(MLP, "g", 2))),),
    )
    program = program_of(DEFAULTS_TEXT)
    assert program == expected
    assert program.model.expert_ffn is None  # no experts, no expert size
    assert program.ranges[0].blocks[0].fused_qkv is False


def test_moe_defaults() -> None:
    text = DEFAULTS_TEXT.replace("ffn = 256", "ffn = 256; experts = 4; top_k = 2").replace(
        "mlp", "moe"
    )
    program = program_of(text)
    assert program.model.expert_ffn == 256  # = ffn
    assert program.model.capacity_factor == 1.0
    assert program.ranges[0].blocks[1] == Block(MOE, "g", 2)


def test_explicit_values_override_defaults() -> None:
    text = (
        DEFAULTS_TEXT.replace("ffn = 256", "ffn = 256; head_dim = 32; kv_heads = 2")
        .replace("seq = 16", "seq = 16; dtype = fp8; microbatches = 2")
        .replace("devices {", "devices { gpu = a100; node_size = 4;")
        .replace("attention;", "attention fused_qkv;")
    )
    program = program_of(text)
    assert (program.model.head_dim, program.model.kv_heads) == (32, 2)
    assert program.workload == Workload(2, 16, DType.FP8, 2)
    assert program.workload.microbatch_size == 1  # Bm = B / m
    assert program.workload.tokens_per_microbatch == 16  # T = Bm * S
    assert program.workload.dtype.bytes == 1
    assert program.hardware == Hardware("a100", 4)
    assert program.ranges[0].blocks[0].fused_qkv is True


@pytest.mark.parametrize(("flag", "value"), [("", True), ("=true", True), ("=false", False)])
def test_fused_qkv_flag(flag: str, value: bool) -> None:
    program = program_of(DEFAULTS_TEXT.replace("attention;", f"attention fused_qkv{flag};"))
    assert program.ranges[0].blocks[0].fused_qkv is value


def test_block_group_overrides_the_statement_group() -> None:
    text = DEFAULTS_TEXT.replace(
        "devices { group g = gpu[0..1] }", "devices { group g = gpu[0..1]; group h = gpu[2, 4] }"
    ).replace("mlp }", "mlp on h }")
    program = program_of(text)
    assert placement(program) == [(0, 1, ("g", "h"))]
    assert program.group("h") == DeviceGroup("h", (2, 4))


def test_gpu_lists_keep_their_order_and_print_as_runs() -> None:
    text = DEFAULTS_TEXT.replace("gpu[0..1]", "gpu[0, 2, 4..6]").replace(
        "attention;", "attention tp=5;"
    )
    text = text.replace("heads = 4", "heads = 5; head_dim = 16").replace("mlp", "mlp tp=5")
    program = program_of(text)
    assert program.group("g").gpus == (0, 2, 4, 5, 6)
    assert "  group @g = gpu[0, 2, 4..6]" in str(program).splitlines()


def test_ranges_are_sorted_by_first_layer() -> None:
    text = HEADER + "layers 2..3 on s1 { attention }\nlayers 0..1 on s0 { attention }\n"
    assert [(r.first, r.last) for r in program_of(text).ranges] == [(0, 1), (2, 3)]


def test_numbers_with_underscores_and_single_layers() -> None:
    text = HEADER.replace("ffn = 4096", "ffn = 4_096; vocab = 32_000") + (
        "layers 0 on s0 { attention }\nlayers 1..3 on s1 { attention }\n"
    )
    program = program_of(text)
    assert (program.model.ffn, program.model.vocab) == (4096, 32000)
    assert [(r.first, r.last) for r in program.ranges] == [(0, 0), (1, 3)]


def test_compile_result_keeps_the_source_path() -> None:
    assert program_of(DEFAULTS_TEXT).source_path == "t.dag"


# -- the grammar file ------------------------------------------------------------------


def test_grammar_text_is_the_grammar_file() -> None:
    assert parser.grammar_text() == (REPO / "grammar" / "dag.lark").read_text(encoding="utf-8")


def test_installed_grammar_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed wheel holds dagc/grammar/dag.lark beside dagc/frontend/parser.py;
    # grammar_text() must read that copy, not look for a source checkout.
    package = tmp_path / "dagc"
    (package / "grammar").mkdir(parents=True)
    (package / "frontend").mkdir()
    (package / "grammar" / "dag.lark").write_text("// installed copy\n", encoding="utf-8")
    monkeypatch.setattr(parser, "__file__", str(package / "frontend" / "parser.py"))
    assert parser.grammar_text() == "// installed copy\n"


def test_wheel_ships_the_grammar() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["force-include"]["grammar/dag.lark"] == "dagc/grammar/dag.lark"
