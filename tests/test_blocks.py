"""The block-kind modules (dagc/blocks/): one place says what each kind is.

These tests pin the registry's contract; the shapes each module produces are checked against
the semantics in tests/test_expansion.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dagc
from dagc.blocks import MODULES, module, weight_products
from dagc.frontend.sema import BLOCK_NEEDS, BLOCK_OPTIONS
from dagc.ir.logical import BlockKind
from dagc.passes.manager import lower_to_steps
from helpers import REPO

DAGC = REPO / "dagc"


def test_every_block_kind_has_exactly_one_module() -> None:
    assert set(MODULES) == set(BlockKind)
    for kind, block_module in MODULES.items():
        assert block_module.kind is kind
        assert module(kind.value) is block_module
        assert block_module.summary


def test_the_front_end_takes_options_and_needs_from_the_modules() -> None:
    # Written out by hand from docs/language.md's block table; `overlap` is the front end's
    # own flag of every block (on embed, only a vocab_parallel one communicates; the front
    # end refuses it on any other), `dp` its own option of every block but moe.
    assert {k: set(v) for k, v in BLOCK_OPTIONS.items()} == {
        BlockKind.EMBED: {"vocab_parallel", "overlap", "dp"},
        BlockKind.ATTENTION: {"tp", "fused_qkv", "kernel", "mask", "overlap", "dp"},
        BlockKind.MLP: {"tp", "overlap", "dp"},
        BlockKind.MOE: {"ep", "dispatch", "overlap"},
        BlockKind.LM_HEAD: {"tp", "overlap", "dp"},
    }
    assert BLOCK_NEEDS == {
        BlockKind.EMBED: (),
        BlockKind.ATTENTION: ("heads",),
        BlockKind.MLP: ("ffn",),
        BlockKind.MOE: ("experts", "top_k", "expert_ffn"),
        BlockKind.LM_HEAD: ("vocab",),
    }


def test_weight_products_are_the_products_that_read_a_weight() -> None:
    assert weight_products() == {
        "qkv", "o_proj", "mlp_up", "mlp_gate", "mlp_down", "gate", "expert", "shared_expert",
        "lm_head",
    }  # fmt: skip


@pytest.mark.parametrize("kind", list(BlockKind), ids=lambda k: k.value)
def test_each_module_makes_the_steps_it_declares(kind: BlockKind) -> None:
    # A small model every kind can run on, with swiglu so that mlp_gate exists, and a
    # shared expert.
    text = (
        "model m { layers = 2; hidden = 64; heads = 4; ffn = 128; activation = swiglu;"
        " experts = 4; top_k = 2; shared_experts = 1; vocab = 100 }\n"
        "workload { batch = 2; seq = 8 }\ndevices { group g = gpu[0..1] }\n"
        "layers 0..1 on g { embed; attention; moe; lm_head }\n"
        "\n"
    )
    if kind is BlockKind.MLP:
        text = text.replace("moe;", "mlp;")
    steps = lower_to_steps(dagc.compile_text(text, "t.dag").program)
    blocks = [b for b in steps.blocks if b.kind == kind.value]
    assert blocks, kind
    bases = {step.base for block in blocks for step in block.steps}
    products = {
        step.base
        for block in blocks
        for step in block.steps
        if not step.joint and step.terms[0].kind.value == "Get_Time"
    }
    assert products <= weight_products() | {"attn_scores", "attn_out"}
    assert MODULES[kind].weight_products <= bases


# Names of steps that only one block kind makes: outside dagc/blocks/, nothing may depend on
# them, so that a new kind needs no edit elsewhere. (transfers.py knows that a moe block
# ends in res2, the one exception, for attention/MoE separation. The verifier restates what
# it checks without asking the modules, by design: it may name them.)
KIND_SPECIFIC = ("o_proj", "mlp_down", "mlp_up", "expert_agg", "attn_scores", "qkv")


@pytest.mark.parametrize(
    "path",
    sorted(p for p in DAGC.rglob("*.py") if "blocks" not in p.parts and "verify" not in p.parts),
    ids=lambda p: str(p.relative_to(DAGC)),
)
def test_no_module_outside_blocks_names_a_kind_specific_step(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not strings & set(KIND_SPECIFIC), path
