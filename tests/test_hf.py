"""`dagc new --hf`: Hugging Face configs to .dag files, and the examples under examples/models.

The parameter counts are closed forms written here from the config's fields (not dagc's
code), checked against the released counts and then against dagc's totals of the written
file.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dagc
from dagc.cli import app
from dagc.hf import Layout, new_from_hf
from helpers import EXAMPLES

runner = CliRunner()
MODELS = EXAMPLES / "models"

# name -> (released total parameters, released active parameters, relative tolerance of the
# active count). Totals are checked within 0.5 %.
RELEASED: dict[str, tuple[float, float | None, float]] = {
    "llama_3_1_8b": (8.03e9, None, 0),
    "llama_3_1_70b": (70.55e9, None, 0),
    "llama_3_1_405b": (405.85e9, None, 0),
    "mixtral_8x7b_v0_1": (46.70e9, 12.9e9, 0.005),
    # Qwen's "3.3 B activated" is rounded down from 3.35 B (embeddings and all)
    "qwen3_30b_a3b": (30.5e9, 3.3e9, 0.02),
    "qwen3_235b_a22b": (235.1e9, 22.2e9, 0.005),
    "deepseek_v3": (671.0e9, 37.5e9, 0.005),
}


def _config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / f"{name}.config.json").read_text())
    return data


def closed_form(c: dict[str, Any]) -> tuple[int, int]:
    """Total and active parameters of a config, from its fields."""
    arch = c["architectures"][0]
    H, L, V, nh = (
        c["hidden_size"],
        c["num_hidden_layers"],
        c["vocab_size"],
        c["num_attention_heads"],
    )
    embed = V * H
    lm_head = 0 if c.get("tie_word_embeddings", False) else V * H
    total = active = embed + lm_head + H  # + the final norm
    deepseek = arch.startswith("Deepseek")
    if deepseek:
        ql, kvl = c.get("q_lora_rank"), c["kv_lora_rank"]
        nope, rope, v = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        q = H * ql + ql + ql * nh * (nope + rope) if ql else H * nh * (nope + rope)
        attention = q + H * (kvl + rope) + kvl + kvl * nh * (nope + v) + nh * v * H
    else:
        d = c.get("head_dim") or H // nh
        nkv = c.get("num_key_value_heads") or nh
        attention = H * nh * d + 2 * H * nkv * d + nh * d * H
        if arch.startswith("Qwen2"):
            attention += nh * d + 2 * nkv * d
        elif c.get("attention_bias"):
            attention += nh * d + 2 * nkv * d + H
        if arch.startswith("Qwen3"):
            attention += 2 * d
    for layer in range(L):
        per_layer = 2 * H + attention
        if arch == "MixtralForCausalLM":
            moe, E, Fe = True, c["num_local_experts"], c["intermediate_size"]
        elif deepseek:
            E = c.get("n_routed_experts")
            moe = (
                E is not None
                and layer >= c.get("first_k_dense_replace", 0)
                and layer % c.get("moe_layer_freq", 1) == 0
            )
            Fe = c.get("moe_intermediate_size")
        elif "Moe" in arch:
            E, Fe = c["num_experts"], c["moe_intermediate_size"]
            moe = (
                layer not in c.get("mlp_only_layers", [])
                and (layer + 1) % c.get("decoder_sparse_step", 1) == 0
            )
        else:
            moe = False
        if not moe:
            total += per_layer + 3 * H * c["intermediate_size"]
            active += per_layer + 3 * H * c["intermediate_size"]
            continue
        k = c["num_experts_per_tok"]
        router = H * E + (E if c.get("topk_method") == "noaux_tc" else 0)
        shared = 0
        if deepseek and c.get("n_shared_experts"):
            shared = c["n_shared_experts"] * 3 * H * Fe
        if arch == "Qwen2MoeForCausalLM" and c["shared_expert_intermediate_size"]:
            shared = 3 * H * c["shared_expert_intermediate_size"] + H  # + the sigmoid gate
        total += per_layer + router + shared + E * 3 * H * Fe
        active += per_layer + router + shared + k * 3 * H * Fe
    return total, active


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_closed_form_matches_the_released_counts(name: str) -> None:
    total, active = closed_form(_config(name))
    released, released_active, tolerance = RELEASED[name]
    assert total == pytest.approx(released, rel=0.005)
    if released_active is not None:
        assert active == pytest.approx(released_active, rel=tolerance)


def test_closed_form_by_hand_deepseek_v3() -> None:
    # MLA 187,107,328 per layer; dense MLP 396,361,728; MoE (256 experts, router with its
    # bias, one shared expert) 11,320,164,352 + 256; embed and lm_head 926,679,040 each.
    attention = (
        7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256
        + 128 * 128 * 7168
    )  # fmt: skip
    assert attention == 187_107_328
    norms = 2 * 7168
    dense = 3 * 7168 * 18432
    moe = 7168 * 256 + 256 + 257 * 3 * 7168 * 2048
    total = 61 * (attention + norms) + 3 * dense + 58 * moe + 2 * 129280 * 7168 + 7168
    assert closed_form(_config("deepseek_v3"))[0] == total == 671_026_419_200


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_dagc_totals_equal_the_closed_form(name: str) -> None:
    totals = pytest.importorskip("dagc.analysis.totals")
    program = dagc.compile_file(MODELS / f"{name}.dag").program
    counted = totals.model_totals(program)
    assert (counted.params, counted.active_params) == closed_form(_config(name))


# -- the examples are what `dagc new` writes ------------------------------------------------


def _layout_of(dag: Path) -> list[str]:
    """The options recorded on the file's `# Layout:` line."""
    for line in dag.read_text().splitlines():
        if line.startswith("# Layout: "):
            return shlex.split(line.removeprefix("# Layout: "))
    raise AssertionError(f"{dag} has no layout line")


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_examples_are_what_dagc_new_writes(name: str, tmp_path: Path) -> None:
    dag = MODELS / f"{name}.dag"
    config = MODELS / f"{name}.config.json"
    result = runner.invoke(app, ["new", "--hf", str(config), *_layout_of(dag)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == dag.read_text()
    dagc.compile_file(dag)


def test_the_deepseek_example_is_the_real_model() -> None:
    assert (EXAMPLES / "deepseek_v3_128gpu.dag").read_text() == (
        MODELS / "deepseek_v3.dag"
    ).read_text()


# -- every architecture ---------------------------------------------------------------------

BASE = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 8,
    "num_hidden_layers": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
SMALL: dict[str, dict[str, Any]] = {
    "LlamaForCausalLM": {"attention_bias": True, "mlp_bias": False},
    "MistralForCausalLM": {"sliding_window": None, "head_dim": 64},
    "MixtralForCausalLM": {"num_local_experts": 8, "num_experts_per_tok": 2},
    "Qwen2ForCausalLM": {"use_sliding_window": False, "sliding_window": 4096,
                         "tie_word_embeddings": True},
    "Qwen2MoeForCausalLM": {
        "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 512, "decoder_sparse_step": 1,
        "mlp_only_layers": [1], "use_sliding_window": False,
    },
    "Qwen3ForCausalLM": {"head_dim": 64, "attention_bias": False},
    "Qwen3MoeForCausalLM": {
        "num_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 128,
        "decoder_sparse_step": 2, "mlp_only_layers": [], "head_dim": 64,
    },
    "DeepseekV2ForCausalLM": {  # V2-Lite-like: no query compression, 2 shared experts
        "q_lora_rank": None, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16, "v_head_dim": 32, "n_routed_experts": 8,
        "n_shared_experts": 2, "moe_intermediate_size": 128, "num_experts_per_tok": 2,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "topk_method": "greedy",
    },
    "DeepseekV3ForCausalLM": {
        "q_lora_rank": 96, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
        "qk_rope_head_dim": 16, "v_head_dim": 32, "n_routed_experts": 8,
        "n_shared_experts": 1, "moe_intermediate_size": 128, "num_experts_per_tok": 2,
        "first_k_dense_replace": 2, "topk_method": "noaux_tc", "num_nextn_predict_layers": 1,
    },
}  # fmt: skip
# What the written model section must say for each (beside layers, hidden, heads, vocab).
EXPECTED_KEYS = {
    "LlamaForCausalLM": ["kv_heads = 2", "qkv_bias = true", "o_bias = true", "ffn = 512"],
    "MistralForCausalLM": ["head_dim = 64", "kv_heads = 2"],
    "MixtralForCausalLM": ["experts = 8", "top_k = 2", "expert_ffn = 512"],
    "Qwen2ForCausalLM": ["qkv_bias = true", "tied_embeddings = true"],
    "Qwen2MoeForCausalLM": ["qkv_bias = true", "shared_experts = 1", "shared_expert_ffn = 512",
                            "shared_expert_gate = true", "ffn = 512"],
    "Qwen3ForCausalLM": ["qk_norm = true", "head_dim = 64"],
    "Qwen3MoeForCausalLM": ["qk_norm = true", "experts = 16", "ffn = 512"],
    "DeepseekV2ForCausalLM": ["kv_lora_rank = 64", "shared_experts = 2", "ffn = 512"],
    "DeepseekV3ForCausalLM": ["q_lora_rank = 96", "router_bias = true", "shared_experts = 1"],
}  # fmt: skip


def _write_config(tmp_path: Path, config: dict[str, Any], name: str = "t.config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def _small(architecture: str, **changes: Any) -> dict[str, Any]:
    config = {"architectures": [architecture], **BASE, **SMALL[architecture], **changes}
    return {k: v for k, v in config.items() if v is not _DROP}


_DROP = object()


def _model_keys(text: str) -> list[str]:
    """The model section's `key = value` lines, without comments or alignment."""
    body = text.split("model ", 1)[1].split("}", 1)[0].splitlines()[1:]
    return [" = ".join(p.strip() for p in line.split("#")[0].split("=")) for line in body]


@pytest.mark.parametrize("architecture", sorted(SMALL))
def test_every_architecture_compiles_deterministically(architecture: str, tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small(architecture))
    layout = Layout(gpus=4, tp=2, pp=2, batch=4)
    first = new_from_hf(path, layout)
    assert new_from_hf(path, layout).text == first.text
    assert not first.warnings
    keys = _model_keys(first.text)
    for expected in [*EXPECTED_KEYS[architecture], "attention_kernel = fused"]:
        assert expected in keys, first.text
    assert "attention_mask = causal" in keys
    assert "embed vocab_parallel" in first.text and "split_sends = true" in first.text
    program = dagc.compile_text(first.text).program
    assert program.model.layers == 4 and program.workload.microbatches == 2
    # The dense layers are placed as such: Qwen2-MoE's mlp_only_layers [1], Qwen3-MoE's
    # decoder_sparse_step 2 (layers 0 and 2), DeepSeek's first_k_dense_replace.
    dense = {
        "Qwen2MoeForCausalLM": [1],
        "Qwen3MoeForCausalLM": [0, 2],
        "DeepseekV2ForCausalLM": [0],
        "DeepseekV3ForCausalLM": [0, 1],
        "MixtralForCausalLM": [],
    }.get(architecture, [0, 1, 2, 3])
    placed = [
        layer
        for r in program.ranges
        for layer in range(r.first, r.last + 1)
        if any(b.kind.value == "mlp" for b in r.blocks)
    ]
    assert placed == dense


def test_closed_form_of_the_small_configs_agrees_with_dagc(tmp_path: Path) -> None:
    totals = pytest.importorskip("dagc.analysis.totals")
    for architecture in sorted(SMALL):
        config = _small(architecture)
        path = _write_config(tmp_path, config)
        program = dagc.compile_text(new_from_hf(path, Layout(gpus=2)).text).program
        counted = totals.model_totals(program)
        assert (counted.params, counted.active_params) == closed_form(config), architecture


def test_defaults_of_the_layout(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("MixtralForCausalLM"))
    text = new_from_hf(path).text
    assert "# Layout: --gpus 8 --tp 8 --pp 1 --ep 8 --gpu h100 --batch 8 --seq 4096" in text
    assert "dtype = bf16; microbatches = 1" in text and "moe ep=8" in text
    assert "split_sends" not in text
    sixteen = new_from_hf(path, Layout(gpus=16)).text
    assert "--tp 8 --pp 2 --ep 8" in sixteen and "microbatches = 2" in sixteen


def test_ignored_fields_are_named_in_a_comment(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("DeepseekV3ForCausalLM"))
    text = new_from_hf(path, Layout(gpus=2)).text
    assert "multi-token-prediction module (num_nextn_predict_layers = 1)" in text
    assert "rms_norm_eps" in text and "rope_theta" in text.split("model ")[0]


def test_model_name_from_the_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "Llama-3.1-8B"
    folder.mkdir()
    path = _write_config(folder, _small("LlamaForCausalLM"), "config.json")
    assert "model llama_3_1_8b {" in new_from_hf(path).text
    assert "model mine {" in new_from_hf(path, Layout(name="mine")).text


# -- errors ----------------------------------------------------------------------------------


def _fails(args: list[str]) -> str:
    result = runner.invoke(app, ["new", *args])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return result.stderr


def _line_of(path: Path, key: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(f'"{key}"'))


def test_unknown_architecture(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("LlamaForCausalLM", architectures=["GPT2LMHeadModel"]))
    err = _fails(["--hf", str(path)])
    assert f'{path}:2:3: error: unknown architecture "GPT2LMHeadModel"' in err
    assert "LlamaForCausalLM" in err  # the help lists what dagc reads


@pytest.mark.parametrize(
    ("architecture", "key", "value"),
    [
        ("MistralForCausalLM", "sliding_window", 4096),
        ("MixtralForCausalLM", "sliding_window", 4096),
        ("Qwen2ForCausalLM", "use_sliding_window", True),
        ("Qwen3MoeForCausalLM", "use_sliding_window", True),
    ],
)
def test_sliding_window(architecture: str, key: str, value: object, tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small(architecture, **{key: value}))
    err = _fails(["--hf", str(path)])
    assert f"{path}:{_line_of(path, key)}:3: error: `{key} = {json.dumps(value)}`:" in err
    assert "sliding attention window is not modelled" in err


def test_mlp_bias(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("LlamaForCausalLM", mlp_bias=True))
    err = _fails(["--hf", str(path)])
    assert f"{path}:{_line_of(path, 'mlp_bias')}:3: error: `mlp_bias = true`:" in err


def test_missing_field(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("LlamaForCausalLM", intermediate_size=_DROP))
    err = _fails(["--hf", str(path)])
    assert f"{path}:1:1: error: the config has no `intermediate_size`" in err


def test_a_bad_value_points_at_its_field(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("Qwen3ForCausalLM", num_attention_heads="8"))
    err = _fails(["--hf", str(path)])
    line = _line_of(path, "num_attention_heads")
    assert (
        f'{path}:{line}:3: error: `num_attention_heads` must be a positive integer, not "8"' in err
    )


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "architectures": ["LlamaForCausalLM"],\n  "hidden_size": 4096,\n}\n')
    err = _fails(["--hf", str(path)])
    assert f"{path}:4:1: error: the config is not valid JSON" in err


def test_missing_config(tmp_path: Path) -> None:
    err = _fails(["--hf", str(tmp_path / "none.json")])
    assert "error: no such config" in err and "--hf" in err


@pytest.mark.parametrize(
    ("architecture", "options", "message"),
    [
        ("LlamaForCausalLM", ["--gpus", "8", "--tp", "3"], "--tp 3 does not divide --gpus 8"),
        ("LlamaForCausalLM", ["--gpus", "8", "--tp", "2", "--pp", "2"],
         "--tp 2 × --pp 2 is 4 GPUs, not --gpus 8"),
        ("LlamaForCausalLM", ["--gpus", "8", "--tp", "1"],
         "--pp 8 is more pipeline stages than the model's 4 layers"),
        ("LlamaForCausalLM", ["--gpus", "16", "--tp", "16", "--pp", "1"],
         "--tp 16 is more than the model's 8 attention heads"),
        ("MixtralForCausalLM", ["--gpus", "2", "--ep", "4"], "--ep 4 differs from the 2 GPUs"),
        ("Qwen3MoeForCausalLM", ["--gpus", "3", "--tp", "3"],
         "--ep 3 does not divide the model's 16 experts"),
        ("LlamaForCausalLM", ["--gpus", "2", "--batch", "3", "--microbatches", "2"],
         "--batch 3 is not divisible by --microbatches 2"),
        ("LlamaForCausalLM", ["--gpu", "b200"], "unknown GPU preset `b200`"),
        ("LlamaForCausalLM", ["--dtype", "int4"], "unknown dtype `int4`"),
    ],
)  # fmt: skip
def test_bad_layout(architecture: str, options: list[str], message: str, tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small(architecture))
    err = _fails(["--hf", str(path), *options])
    assert err.startswith(f"dagc: error: {message}")


def test_unknown_field_warns_and_werror_stops(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("LlamaForCausalLM", new_feature=3))
    result = runner.invoke(app, ["new", "--hf", str(path)])
    assert result.exit_code == 0
    line = _line_of(path, "new_feature")
    assert f"{path}:{line}:3: warning: dagc does not know the config field `new_feature`" in (
        result.stderr
    )
    assert "new_feature." in result.stdout  # named in the file's comment
    err = _fails(["--hf", str(path), "--werror"])
    assert "warnings are errors" in err


def test_output_is_written_atomically(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("Qwen2ForCausalLM"))
    out = tmp_path / "out" / "m.dag"
    out.parent.mkdir()
    stdout = runner.invoke(app, ["new", "--hf", str(path)]).stdout
    result = runner.invoke(app, ["new", "--hf", str(path), "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert out.read_text() == stdout
    # A failing run leaves the file as it was and no temporary file beside it.
    _fails(["--hf", str(path), "--tp", "3", "-o", str(out)])
    assert out.read_text() == stdout
    assert os.listdir(out.parent) == ["m.dag"]
    err = _fails(["--hf", str(path), "-o", str(tmp_path)])
    assert "-o names a file, not a folder" in err


def test_attention_dropout_is_written_only_when_set(tmp_path: Path) -> None:
    zero = _write_config(tmp_path, _small("LlamaForCausalLM", attention_dropout=0.0))
    assert "attention_dropout" not in _model_keys(new_from_hf(zero).text)
    path = _write_config(tmp_path, _small("LlamaForCausalLM", attention_dropout=0.1), "d.json")
    result = new_from_hf(path)
    assert "attention_dropout = 0.1" in _model_keys(result.text)
    assert not result.warnings
    assert dagc.compile_text(result.text).program.model.attention_dropout == 0.1


# -- serving layouts -------------------------------------------------------------------------


def test_decode_with_attention_data_parallelism(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("Qwen3MoeForCausalLM"))
    layout = Layout(gpus=4, mode="decode", context=1000, batch=8, attention_dp=True)
    text = new_from_hf(path, layout).text
    assert "workload { mode = decode; batch = 8; context = 1000;" in text
    assert "attention tp=1 dp=4" in text and "embed dp=4" in text and "moe ep=4" in text
    assert "--mode decode --context 1000 --attention-dp" in text
    program = dagc.compile_text(text).program
    assert (program.workload.seq, program.workload.context) == (1, 1000)


def test_serve_writes_input_and_output(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("LlamaForCausalLM"))
    text = new_from_hf(path, Layout(gpus=2, mode="serve", input=512, output=64)).text
    assert "mode = serve; batch = 8; input = 512; output = 64;" in text
    assert "--mode serve --input 512 --output-tokens 64" in text
    workload = dagc.compile_text(text).program.workload
    assert (workload.seq, workload.output) == (512, 64)


def test_serving_layout_line_reproduces_the_file(tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("LlamaForCausalLM"))
    first = runner.invoke(app, ["new", "--hf", str(path), "--mode", "serve", "--input", "300"])
    assert first.exit_code == 0, first.stderr
    again = runner.invoke(app, ["new", "--hf", str(path), *_layout_of_text(first.stdout)])
    assert again.stdout == first.stdout


def _layout_of_text(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("# Layout: "))
    return shlex.split(line.removeprefix("# Layout: "))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "5"], "--context belongs to --mode decode, not --mode prefill"),
        (["--mode", "decode", "--input", "5"], "--input belongs to --mode serve"),
        (["--mode", "fast"], "unknown mode `fast`"),
        (["--gpus", "16", "--pp", "2", "--attention-dp"], "cannot be pipeline stages"),
    ],
)
def test_serving_option_errors(args: list[str], message: str, tmp_path: Path) -> None:
    path = _write_config(tmp_path, _small("LlamaForCausalLM"))
    assert message in _fails(["--hf", str(path), *args])


def test_attention_dp_takes_every_gpu_as_one_stage_by_default(tmp_path: Path) -> None:
    # more GPUs than heads and than the default tp of 8: the stage is all 16 GPUs
    path = _write_config(tmp_path, _small("Qwen3MoeForCausalLM"))
    text = new_from_hf(path, Layout(gpus=16, mode="decode", batch=16, attention_dp=True)).text
    assert "--gpus 16 --tp 16 --pp 1 --ep 16" in text and "attention tp=1 dp=16" in text
