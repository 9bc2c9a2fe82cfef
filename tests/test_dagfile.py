"""`program_to_dag`: a checked Program written back as a .dag file (`dagc lower --emit dag`).

The printed file compiles to an equal Program (the dataclasses' ==, which leaves out spans,
the source path and the roofline overrides, compared here too), for every example and for
generated programs that use every key and option; `dagc analyze` reports the same numbers
for it; and one printed example is a golden file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import mutated_examples
from typer.testing import CliRunner

import dagc
from dagc.backends.dagfile import HEADER, program_to_dag
from dagc.cli import app
from dagc.hardware import PARAMETER_RANGES, PRESETS
from dagc.ir.logical import Program, prefill_phase
from helpers import EXAMPLES, REPO, check_golden

ALL_EXAMPLES = sorted(EXAMPLES.rglob("*.dag"))


def _round_trip(program: Program) -> Program:
    """Print `program`, compile the text, check it is equal and prints alike; the copy."""
    text = program_to_dag(program)
    assert text.startswith(HEADER + "\n")
    try:
        again = dagc.compile_text(text, path="printed.dag").program
    except dagc.DiagnosticError as error:
        pytest.fail(f"the printed file does not compile:\n{error}\n\n{text}")
    assert again == program, text
    assert again.hardware.overrides == program.hardware.overrides, text  # compare=False
    assert program_to_dag(again) == text  # deterministic: equal programs print alike
    return again


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_round_trips(path: Path) -> None:
    _round_trip(dagc.compile_file(path).program)


def test_the_examples_are_all_there() -> None:
    # every folder of examples, the validation files included: nothing is skipped
    folders = {p.relative_to(EXAMPLES).parent.as_posix() for p in ALL_EXAMPLES}
    assert folders >= {"seed", "models", "serving", "training", "validation", "validation/serving"}
    assert len(ALL_EXAMPLES) >= 37


# `dagc analyze --format json` of the printed file equals the original's but for the path.
# One example of each kind of program: analysing all of them twice takes minutes (the
# validation files reach 3,072 GPUs); the Programs of all of them are compared above, and
# the analysis reads nothing else (the spans only place warnings).
ANALYZED = (
    "seed/baseline_tp8_pp2.dag",  # prefill, two stages
    "seed/ma_separation.dag",  # attention/MoE separation, an uneven split (a warning)
    "ma_separation_mb4.dag",  # micro-batches
    "models/llama_3_1_8b.dag",  # GQA, swiglu, fused causal attention, vocab
    "serving/ma_separation_decode.dag",  # decode
    "validation/serving/trtllm_llama_2_70b_ttft_b1_2048.dag",  # serve
    "validation/gpt_1_7b.dag",  # training
)


def _analyze_json(runner: CliRunner, path: Path) -> dict[str, object]:
    result = runner.invoke(app, ["analyze", "--format", "json", str(path)])
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("name", ANALYZED)
def test_analyze_reports_the_same_numbers(name: str, tmp_path: Path) -> None:
    runner = CliRunner()
    original = EXAMPLES / name
    printed = tmp_path / original.name
    lowered = runner.invoke(app, ["lower", str(original), "--emit", "dag", "-o", str(printed)])
    assert lowered.exit_code == 0, lowered.output
    before = json.dumps(_analyze_json(runner, original), sort_keys=True)
    after = json.dumps(_analyze_json(runner, printed), sort_keys=True)
    assert after == before.replace(json.dumps(str(original))[1:-1], str(printed))


def test_golden_printed_example() -> None:
    program = dagc.compile_file(EXAMPLES / "training" / "llama_3_1_70b_train.dag").program
    check_golden(
        REPO / "tests" / "golden" / "dagfile" / "llama_3_1_70b_train.dag",
        program_to_dag(program),
        "the output of `dagc lower examples/training/llama_3_1_70b_train.dag --emit dag`,"
        " line by line",
    )


def test_cli_refuses_a_phase() -> None:
    path = str(EXAMPLES / "serving" / "llama_3_1_70b_disaggregated.dag")
    result = CliRunner().invoke(app, ["lower", path, "--emit", "dag", "--phase", "prefill"])
    assert result.exit_code == 2
    assert "--phase does nothing with --emit dag" in result.output


def test_a_prefill_phase_has_no_file() -> None:
    path = EXAMPLES / "serving" / "llama_3_1_70b_disaggregated.dag"
    with pytest.raises(ValueError, match="disaggregated"):
        program_to_dag(prefill_phase(dagc.compile_file(path).program))


def test_floats_are_written_exactly() -> None:
    from dagc.backends.dagfile import _number

    for value in (
        1.0,
        0.85,
        2.2e15,
        1e-5,
        989e12,
        0.1 + 0.2,
        1 / 3,
        5e-324,
        1.7976931348623157e308,
    ):
        text = _number(value)
        assert float(text) == value
        assert "." in text or "e" in text  # a number, not an integer
    assert _number(2.2e15) == "2.2e15" and _number(1e-5) == "1e-5" and _number(2.0) == "2.0"


# -- generated programs -----------------------------------------------------------------------

PROPERTY = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# group names, keywords among them (they are names wherever the grammar expects one)
GROUP_NAMES = ("g0", "stage1", "attn", "experts", "model", "group", "on", "pp", "x_1", "decode")
T = TypeVar("T")


class _Draw:
    """Shorthands for drawing the parts of a file."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def int(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def bool(self, p: float = 0.5) -> bool:
        return self.draw(st.floats(0, 1)) < p

    def pick(self, *choices: T) -> T:
        return self.draw(st.sampled_from(choices))

    def number(self, low: float, high: float) -> str:
        """A float as Python writes it (`1e-05`, `0.30000000000000004`)."""
        return repr(abs(self.draw(st.floats(low, high))))

    def subset(self, items: list[str]) -> list[str]:
        return [item for item in items if self.bool()]

    def shuffled(self, items: list[str]) -> list[str]:
        return list(self.draw(st.permutations(items)))

    def section(self, header: str, items: list[str]) -> str:
        return f"{header} {{\n  " + "\n  ".join(self.shuffled(items)) + "\n}"


@dataclass(frozen=True)
class _Facts:
    """What the model and workload allow the layers statements to place."""

    layers: int
    experts: bool
    vocab: bool
    ffn: bool
    attention_dp: bool  # blocks as one-GPU replicas (`tp=1 dp=N`) over one group
    sugar: bool  # `pp=2` may be used (not with virtual stages, which need more layers)


@st.composite
def dag_files(draw: st.DrawFn) -> str:
    """A valid .dag file setting a random selection of every key and option."""
    d = _Draw(draw)
    layers = d.int(1, 6)
    model, experts, vocab, ffn = _model(d, layers)
    mode = d.pick("prefill", "prefill", "decode", "serve")
    training = mode == "prefill" and d.bool()
    dp = d.pick(1, 2) if training else 1
    microbatches, per_microbatch = d.pick(1, 2, 4), d.pick(1, 2, 4)
    batch = dp * microbatches * per_microbatch
    workload = [f"batch = {batch}", f"microbatches = {microbatches}"]
    workload += d.subset([f"dtype = {d.pick('bf16', 'fp16', 'fp32', 'fp8')}"])
    workload += {
        "prefill": [f"seq = {d.pick(16, 128, 1000)}"],
        "decode": ["mode = decode", f"context = {d.pick(1, 100, 4096)}"],
        "serve": ["mode = serve", f"input = {d.pick(1, 64)}", f"output = {d.pick(1, 2, 50)}"],
    }[mode]
    sections = [model, d.section("workload", workload)]
    virtual = False
    if training:
        schedule = d.pick("gpipe", "1f1b", "interleaved", "interleaved", "zb_h1")
        virtual = schedule == "interleaved" and d.bool()
        keys = [f"dp = {dp}", f"schedule = {schedule}"]
        keys += [f"recompute = {d.pick('none', 'selective', 'full')}", f"zero = {d.pick(0, 1, 3)}"]
        keys += [f"{k} = {d.pick('true', 'false')}" for k in ("sequence_parallel", "grad_overlap")]
        keys = d.subset(keys)  # virtual stages need their schedule
        keys += [f"schedule = {schedule}", "virtual_stages = 2"] if virtual else []
        sections.append(d.section("training", sorted(set(keys))))
    disaggregated = mode == "serve" and d.bool(0.3)
    attention_dp = not training and d.bool(0.25)
    count = d.int(2 if disaggregated else 1, 4)
    sizes = [d.pick(1, 2, 4) for _ in range(count)]
    if attention_dp:  # each replica needs a sequence of every micro-batch
        sizes = [min(size, per_microbatch) for size in sizes]
    ids = draw(st.permutations(range(16)))  # any order: rank i is the i-th GPU listed
    groups: dict[str, list[int]] = {}
    for name, size in zip(draw(st.permutations(GROUP_NAMES)), sizes, strict=False):
        taken = sum(len(g) for g in groups.values())
        groups[name] = list(ids[taken : taken + size])
    devices = [f"group {name} = gpu[{', '.join(map(str, gpus))}]" for name, gpus in groups.items()]
    devices += d.subset(
        [
            f"gpu = {d.pick(*sorted(PRESETS))}",
            f"node_size = {d.int(1, 8)}",
            f"split_sends = {d.pick('true', 'false')}",
            *(f"{key} = {d.number(r.low, r.high)}" for key, r in PARAMETER_RANGES.items()),
        ]
    )
    sections.append(d.section("devices", devices))
    facts = _Facts(layers, experts, vocab, ffn, attention_dp, sugar=not virtual)
    names = list(groups)
    layouts = [("", names)]
    if disaggregated:
        cut = d.int(1, len(names) - 1)
        layouts = [(" prefill", names[:cut]), (" decode", names[cut:])]
    for flag, layout in layouts:
        sections += _statements(d, facts, {name: len(groups[name]) for name in layout}, flag)
    return "\n".join(d.shuffled(sections)) + "\n"


def _model(d: _Draw, layers: int) -> tuple[str, bool, bool, bool]:
    """The model section; whether it has experts, a vocabulary and an ffn."""
    keys = [f"layers = {layers}", f"hidden = {d.pick(256, 384, 512)}", "heads = 4"]
    if d.bool(0.3):  # multi-head latent attention
        keys += ["kv_lora_rank = 64", "qk_nope_head_dim = 32", "qk_rope_head_dim = 16"]
        keys += [f"v_head_dim = {d.pick(16, 32)}", *d.subset(["q_lora_rank = 96"])]
    else:  # hidden/heads, or not (384/4 = 96 is no head_dim here)
        keys += d.subset([f"head_dim = {d.pick(32, 48, 96)}", f"kv_heads = {d.pick(1, 2, 4)}"])
    keys += d.subset(
        [
            f"attention_kernel = {d.pick('explicit', 'fused')}",
            f"attention_mask = {d.pick('full', 'causal')}",
            *(f"{k} = {d.pick('true', 'false')}" for k in ("qkv_bias", "o_bias", "qk_norm")),
            f"activation = {d.pick('gelu', 'swiglu')}",
            f"tied_embeddings = {d.pick('true', 'false')}",
            f"attention_dropout = {d.number(0, 0.999)}",
            f"hidden_dropout = {d.number(0, 0.999)}",
        ]
    )
    ffn = d.bool(0.8)
    if ffn:
        keys.append(f"ffn = {d.pick(512, 1000, 12_288)}")
    experts = d.bool()
    if experts:
        count = d.pick(4, 8)
        keys += [f"experts = {count}", f"top_k = {d.int(1, count)}"]
        keys += d.subset(["expert_ffn = 512"]) if ffn else [f"expert_ffn = {d.pick(256, 512)}"]
        keys += d.subset(
            [
                f"capacity_factor = {d.number(0.01, 1000)}",
                f"router_bias = {d.pick('true', 'false')}",
            ]
        )
        if d.bool():
            keys.append(f"shared_experts = {d.int(1, 2)}")
            keys += d.subset(["shared_expert_ffn = 1024", "shared_expert_gate = true"])
    vocab = d.bool()
    if vocab:
        keys.append(f"vocab = {d.pick(1000, 32_000)}")
    return d.section("model m", keys), experts, vocab, ffn


def _statements(d: _Draw, facts: _Facts, sizes: dict[str, int], flag: str) -> list[str]:
    """`layers` statements placing every layer once on the groups of one layout."""
    names = list(sizes)[:1] if facts.attention_dp else list(sizes)  # no stage boundaries
    last_layer = facts.layers - 1
    cuts = (
        sorted(set(d.draw(st.lists(st.integers(1, last_layer), max_size=2)))) if last_layer else []
    )
    out = []
    for first, end in zip([0, *cuts], [*cuts, facts.layers], strict=True):
        group = d.pick(*names)
        pipelined = facts.sugar and len(names) > 1 and end - first >= 2 and d.bool()
        empty = d.bool(0.05)  # runs nothing (a warning)
        blocks = [] if empty else _blocks(d, facts, first, end - 1, group, sizes, pipelined)
        on = f" on {names[0]}, {names[1]} pp=2" if pipelined else f" on {group}"
        options = flag + (" overlap" if d.bool(0.2) else "")
        span = f"{first}..{end - 1}" if first != end - 1 or d.bool() else str(first)
        out.append(f"layers {span}{on}{options} {{\n  " + "\n  ".join(blocks) + "\n}")
    return out


def _blocks(
    d: _Draw, facts: _Facts, first: int, last: int, group: str, sizes: dict[str, int], pp: bool
) -> list[str]:
    """The blocks of one statement (on `group`, or on each stage's with `pp`)."""
    size = sizes[group]
    replicas = f" tp=1 dp={size}" if facts.attention_dp else ""
    degree = "" if pp or facts.attention_dp else d.pick("", f" tp={size}")
    blocks = []
    if first == 0 and d.bool():
        vocab_parallel = facts.vocab and not facts.attention_dp and d.bool()
        options = [" vocab_parallel", d.pick("", " overlap")] if vocab_parallel else []
        blocks.append("".join(["embed", f" dp={size}" if facts.attention_dp else "", *options]))
    if d.bool(0.9):
        mask = d.pick("mask=causal", "mask=full")
        options = d.subset(["fused_qkv", "kernel=explicit", "kernel=fused", mask, "overlap=true"])
        if "kernel=explicit" in options and "kernel=fused" in options:
            options.remove("kernel=explicit")
        blocks.append(" ".join([f"attention{replicas or degree}", *options]))
    if facts.experts and (not facts.ffn or d.bool()):
        others = [name for name in sizes if name != group]
        away = not pp and not facts.attention_dp and others and d.bool()
        where = f" on {d.pick(*others)}" if away else ""
        options = d.subset(["overlap", "dispatch=routed" if away else "dispatch=broadcast"])
        blocks.append(" ".join([f"moe{where}", *options]))
    elif facts.ffn:
        blocks.append(" ".join([f"mlp{replicas or degree}", *d.subset(["overlap"])]))
    if last == facts.layers - 1 and facts.vocab and d.bool():
        blocks.append(f"lm_head{replicas or degree}" + d.pick("", " overlap"))
    return blocks


@PROPERTY
@given(dag_files())
def test_generated_programs_round_trip(text: str) -> None:
    try:
        program = dagc.compile_text(text, path="generated.dag").program
    except dagc.DiagnosticError as error:  # the generator's fault: say what it wrote
        pytest.fail(f"a generated file does not compile:\n{error}\n\n{text}")
    _round_trip(program)


@PROPERTY
@given(mutated_examples())
def test_mutated_examples_round_trip(text: str) -> None:
    try:
        program = dagc.compile_text(text, path="mutated.dag").program
    except dagc.DiagnosticError:
        return  # most mutations break the file
    _round_trip(program)
