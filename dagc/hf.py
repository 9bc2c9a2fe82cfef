"""A `.dag` file from a Hugging Face `config.json` (`dagc new --hf`).

`new_from_hf(path, layout)` reads the config of one of the architectures in `ARCHITECTURES`
and writes the text of a commented `.dag` file: the model keys that the config's fields
mean (docs/language.md), the workload and the GPUs of the layout, and one `layers`
statement per run of dense or MoE layers.

The promise is that the `.dag` file is the released model or nothing: every field that
changes the work or the parameters is honoured or refused with an error that points at it
in the JSON text; fields that change neither (positions, norms' epsilon, token ids, the
router's scoring) are left out and named in a comment. A field dagc does not know gets a
warning and a comment. Nothing is read from the network.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagc.diagnostics import Diagnostic, DiagnosticBag, DiagnosticError, option_error
from dagc.inputs import HF_CONFIG, read_input
from dagc.source import SourceFile, Span

# Architecture (the config's `architectures[0]`) -> family, which decides how fields read.
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV2ForCausalLM": "deepseek",
    "DeepseekV3ForCausalLM": "deepseek",
}
GPU_PRESETS = ("a100", "h100", "h200")
DTYPES = ("bf16", "fp16", "fp32", "fp8")
DEFAULT_GPUS = 8
LARGEST_DEFAULT_TP = 8  # one node of NVLink

# Fields that change neither the work nor the parameters of the forward pass dagc models.
IGNORED: dict[str, str] = {
    **dict.fromkeys(
        (
            "rope_theta",
            "rope_scaling",
            "max_position_embeddings",
            "rope_interleave",
            "partial_rotary_factor",
            "original_max_position_embeddings",
        ),
        "positions",
    ),
    **dict.fromkeys(("rms_norm_eps", "layer_norm_eps", "initializer_range"), "numerics"),
    **dict.fromkeys(
        (
            "torch_dtype",
            "dtype",
            "transformers_version",
            "_name_or_path",
            "model_type",
            "auto_map",
            "use_cache",
            "bos_token_id",
            "eos_token_id",
            "pad_token_id",
            "pretraining_tp",
            "attention_dropout",
            "output_router_logits",
            "router_aux_loss_coef",
            "router_jitter_noise",
            "aux_loss_alpha",
            "seq_aux",
            "ep_size",
            "quantization_config",
        ),
        "bookkeeping",
    ),
    **dict.fromkeys(
        (
            "norm_topk_prob",
            "scoring_func",
            "n_group",
            "topk_group",
            "routed_scaling_factor",
            "topk_method",
        ),
        "routing",
    ),
    "max_window_layers": "sliding window (off)",
    "sliding_window": "sliding window (off)",
    "use_sliding_window": "sliding window (off)",
    "layer_types": "every layer full attention",
    "num_nextn_predict_layers": "multi-token prediction",
}


@dataclass(frozen=True)
class Layout:
    """How the generated file places the model; None: the default (see `resolve`)."""

    gpus: int = DEFAULT_GPUS
    tp: int | None = None
    pp: int | None = None
    ep: int | None = None
    gpu: str = "h100"
    batch: int = 8
    seq: int = 4096
    microbatches: int | None = None
    dtype: str = "bf16"
    name: str | None = None
    # the workload's mode (docs/serving.md): prefill (seq), decode (context), serve
    # (input, output); None takes the default of its mode
    mode: str = "prefill"
    context: int | None = None
    input: int | None = None
    output: int | None = None
    # attention data parallelism: every GPU of a stage its own attention (and dense mlp,
    # embed, lm_head) replica, tp = 1, the experts split over the stage
    attention_dp: bool = False


MODES = ("prefill", "decode", "serve")
DEFAULT_OUTPUT = 256


@dataclass(frozen=True)
class NewResult:
    """The `.dag` text and the warnings found on the way (unknown fields, uneven splits)."""

    text: str
    warnings: tuple[Diagnostic, ...]


def new_from_hf(path: str | os.PathLike[str], layout: Layout | None = None) -> NewResult:
    """The `.dag` text for the config at `path` under `layout`; DiagnosticError if the
    config cannot be read or modelled exactly, or the layout does not fit it."""
    source = read_input(path, HF_CONFIG)
    config = _Config.parse(source)
    spec = _read_model(config)
    config.bag.raise_if_errors()
    text = _write(spec, config, layout or Layout(), _model_name(path, layout))
    config.bag.raise_if_errors()
    return NewResult(text, tuple(config.bag.warnings) + _compile_warnings(text))


def _compile_warnings(text: str) -> tuple[Diagnostic, ...]:
    """Compile the text written (it must compile: an error here is a limit of the language
    that the config's values cross, reported at the generated line)."""
    from dagc.compiler import compile_text

    return compile_text(text, path="<dagc new>").warnings


# -- the JSON text ------------------------------------------------------------------------


@dataclass
class _Config:
    """The config's fields, where each top-level key sits in the text, and its diagnostics."""

    source: SourceFile
    fields: dict[str, Any]
    spans: dict[str, Span]
    bag: DiagnosticBag
    used: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)  # comment lines for the output

    @classmethod
    def parse(cls, source: SourceFile) -> _Config:
        bag = DiagnosticBag(source)
        try:
            data = json.loads(source.text)
        except json.JSONDecodeError as error:
            bag.error(
                Span.point(error.lineno, error.colno),
                f"the config is not valid JSON: {error.msg}",
                help="a Hugging Face config.json is one JSON object",
            )
            raise DiagnosticError(bag.diagnostics) from None
        if not isinstance(data, dict):
            bag.error(
                _first_character(source.text),
                f"the config is a JSON {_json_kind(data)}, not an object",
                help='a Hugging Face config.json is one JSON object: {"architectures": ...}',
            )
            raise DiagnosticError(bag.diagnostics)
        return cls(source, data, _top_level_keys(source.text), bag)

    def span(self, key: str) -> Span:
        """Where `key` is written, or the opening brace when it is not."""
        return self.spans.get(key) or _first_character(self.source.text)

    def has(self, key: str) -> bool:
        return self.fields.get(key) is not None

    def error(self, key: str, message: str, help: str) -> None:
        self.bag.error(self.span(key), message, help=help)

    def positive_int(self, key: str, *, default: int | None = None) -> int:
        """A positive integer field; without one (and no default), an error."""
        self.used.add(key)
        value = self.fields.get(key)
        if value is None:
            if default is not None:
                return default
            self.error(
                key,
                f"the config has no `{key}`",
                help=f"dagc needs `{key}` to write the model; add it as the released config has it",
            )
            return 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(
                key,
                f"`{key}` must be a positive integer, not {json.dumps(value)}",
                help="check the value against the released config",
            )
            return 1
        return value

    def optional_int(self, key: str) -> int | None:
        """A positive integer field that may be absent or null."""
        if self.has(key):
            return self.positive_int(key)
        self.used.add(key)
        return None

    def flag(self, key: str, default: bool = False) -> bool:
        self.used.add(key)
        value = self.fields.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(
                key, f"`{key}` must be true or false, not {json.dumps(value)}", help="fix it"
            )
            return default
        return value

    def text(self, key: str, default: str) -> str:
        self.used.add(key)
        value = self.fields.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(key, f"`{key}` must be a string, not {json.dumps(value)}", help="fix it")
            return default
        return value

    def int_list(self, key: str) -> list[int]:
        self.used.add(key)
        value = self.fields.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        ):
            self.error(key, f"`{key}` must be a list of layer numbers", help="fix it")
            return []
        return value

    def refuse_if(self, key: str, active: bool, why: str, help: str) -> None:
        """An error at `key` when the field turns on something dagc cannot model."""
        self.used.add(key)
        if active:
            self.error(key, f"`{key} = {json.dumps(self.fields[key])}`: {why}", help=help)


def _first_character(text: str) -> Span:
    """The first non-blank character (the object's `{`), else 1:1."""
    stripped = text.lstrip()
    offset = len(text) - len(stripped)
    return _span_at(text, offset, 1) if stripped else Span.point(1, 1)


def _span_at(text: str, offset: int, width: int) -> Span:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Span.point(line, column, width)


def _top_level_keys(text: str) -> dict[str, Span]:
    """Where each key of the top-level object is written (the quoted name), first one wins.

    A small scanner over the already-valid JSON: it tracks strings and nesting depth, and
    records a string at depth 1 that a `:` follows.
    """
    spans: dict[str, Span] = {}
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            k = j + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            if depth == 1 and k < n and text[k] == ":":
                key = json.loads(text[i : j + 1])
                if isinstance(key, str) and key not in spans:
                    spans[key] = _span_at(text, i, j + 1 - i)
            i = j + 1
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        i += 1
    return spans


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "boolean" if isinstance(value, bool) else "number"


# -- the model ----------------------------------------------------------------------------


@dataclass
class _Spec:
    """What the config says, in dagc's terms."""

    architecture: str
    family: str
    layers: int
    keys: list[tuple[str, str, str]]  # (model key, value as written, comment)
    moe_layers: list[bool]  # per layer: moe (True) or mlp
    heads: int
    experts: int | None


def _read_model(config: _Config) -> _Spec:
    """The model keys of the config, or errors at the fields that cannot be modelled."""
    architecture = _architecture(config)
    family = ARCHITECTURES[architecture]
    keys: list[tuple[str, str, str]] = []

    def key(name: str, value: object, comment: str = "") -> None:
        if isinstance(value, bool):
            written = "true" if value else "false"
        elif isinstance(value, int):
            written = f"{value:_}" if value >= 10_000 else str(value)
        else:
            written = str(value)
        keys.append((name, written, comment))

    layers = config.positive_int("num_hidden_layers")
    hidden = config.positive_int("hidden_size")
    heads = config.positive_int("num_attention_heads")
    vocab = config.positive_int("vocab_size")
    key("layers", layers, "num_hidden_layers")
    key("hidden", hidden, "hidden_size")
    key("heads", heads, "num_attention_heads")
    deepseek = family == "deepseek"
    if deepseek:
        _latent_attention(config, key)
    else:
        _plain_attention(config, family, hidden, heads, key)
    _refuse_windows(config, family)
    act = config.text("hidden_act", "silu")
    if act != "silu":
        config.error(
            "hidden_act",
            f'`hidden_act = "{act}"`: dagc\'s gated MLP is SwiGLU (silu)',
            help='this architecture is written with hidden_act = "silu"; dagc cannot model'
            " another activation of a gated MLP",
        )
    config.refuse_if(
        "mlp_bias",
        config.fields.get("mlp_bias") is True,
        "dagc's MLP and expert projections have no biases",
        help="remove the field or set it to false only if the released model has none",
    )
    moe_layers, experts = _moe(config, family, layers, key)
    key("activation", "swiglu", "hidden_act = silu: gate, up and down projections")
    key("vocab", vocab, "vocab_size")
    tied = config.flag("tie_word_embeddings")
    if tied:
        key("tied_embeddings", True, "tie_word_embeddings: embed and lm_head share a table")
    dropout = config.fields.get("attention_dropout")
    if isinstance(dropout, (int, float)) and not isinstance(dropout, bool) and 0 < dropout < 1:
        key("attention_dropout", float(dropout), "attention_dropout (applied in training only)")
        config.used.add("attention_dropout")
    key("attention_kernel", "fused", "FlashAttention-style, as served")
    key("attention_mask", "causal", "a decoder's mask")
    return _Spec(architecture, family, layers, keys, moe_layers, heads, experts)


def _architecture(config: _Config) -> str:
    config.used.add("architectures")
    value = config.fields.get("architectures")
    supported = ", ".join(ARCHITECTURES)
    if value is None:
        config.error(
            "architectures",
            "the config has no `architectures`",
            help=f'add the model class, e.g. "architectures": ["LlamaForCausalLM"]; dagc'
            f" reads {supported}",
        )
        raise DiagnosticError(config.bag.diagnostics)
    names = value if isinstance(value, list) else [value]
    known = [name for name in names if isinstance(name, str) and name in ARCHITECTURES]
    if len(names) != 1 or not known:
        shown = ", ".join(json.dumps(n) for n in names) or "nothing"
        config.error(
            "architectures",
            f"unknown architecture {shown}: dagc cannot write this model",
            help=f"dagc reads the configs of {supported}",
        )
        raise DiagnosticError(config.bag.diagnostics)
    return known[0]


KeyFn = Callable[..., None]


def _plain_attention(config: _Config, family: str, hidden: int, heads: int, key: KeyFn) -> None:
    """Grouped-query attention: kv heads, a head size given apart, biases, QK-norm."""
    kv_heads = config.positive_int("num_key_value_heads", default=heads)
    head_dim = config.optional_int("head_dim")
    if head_dim is not None and (hidden % heads or head_dim != hidden // heads):
        key("head_dim", head_dim, "head_dim, not hidden / heads")
    if kv_heads != heads:
        key("kv_heads", kv_heads, "num_key_value_heads: grouped-query attention")
    if family in ("qwen2", "qwen2_moe"):
        key("qkv_bias", True, "Qwen2 has biases on q, k and v")
        if config.fields.get("attention_bias") is not None:
            config.used.add("attention_bias")
            config.notes.append("attention_bias is not read by Qwen2 (q, k, v always have biases)")
    elif config.flag("attention_bias"):
        key("qkv_bias", True, "attention_bias")
        key("o_bias", True, "attention_bias")
    if family in ("qwen3", "qwen3_moe"):
        key("qk_norm", True, "Qwen3 normalises each query and key head")


def _latent_attention(config: _Config, key: KeyFn) -> None:
    """DeepSeek's multi-head latent attention (MLA)."""
    q_lora = config.optional_int("q_lora_rank")
    if q_lora is not None:
        key("q_lora_rank", q_lora, "q_lora_rank: queries compressed")
    else:
        config.notes.append("q_lora_rank = null: queries are not compressed")
    key("kv_lora_rank", config.positive_int("kv_lora_rank"), "kv_lora_rank")
    key("qk_nope_head_dim", config.positive_int("qk_nope_head_dim"), "qk_nope_head_dim")
    key("qk_rope_head_dim", config.positive_int("qk_rope_head_dim"), "qk_rope_head_dim")
    key("v_head_dim", config.positive_int("v_head_dim"), "v_head_dim")
    for name in ("num_key_value_heads", "head_dim"):
        if name in config.fields:
            config.used.add(name)
            config.notes.append(
                f"{name} is not written: under MLA every head has its own key and value,"
                " of the sizes above"
            )
    config.refuse_if(
        "attention_bias",
        config.fields.get("attention_bias") is True,
        "dagc's latent attention has no biases on its projections",
        help="dagc models DeepSeek's attention without biases, as released",
    )


def _refuse_windows(config: _Config, family: str) -> None:
    """An active sliding window is attention dagc does not model."""
    help = "dagc's attention spans the whole sequence; it cannot write a windowed model"
    if family in ("mistral", "mixtral", "llama"):
        config.refuse_if(
            "sliding_window",
            config.has("sliding_window"),
            "a sliding attention window is not modelled",
            help=help,
        )
    else:
        config.refuse_if(
            "use_sliding_window",
            config.fields.get("use_sliding_window") is True,
            "a sliding attention window is not modelled",
            help=help,
        )
    types = config.fields.get("layer_types")
    if isinstance(types, list) and any(t != "full_attention" for t in types):
        config.refuse_if("layer_types", True, "layers other than full attention", help=help)


def _moe(config: _Config, family: str, layers: int, key: KeyFn) -> tuple[list[bool], int | None]:
    """The MoE keys and which layers are MoE (the others run the dense MLP)."""
    if family in ("llama", "mistral", "qwen2", "qwen3"):
        key("ffn", config.positive_int("intermediate_size"), "intermediate_size")
        return [False] * layers, None
    if family == "mixtral":
        experts = config.positive_int("num_local_experts")
        key("experts", experts, "num_local_experts")
        key("top_k", config.positive_int("num_experts_per_tok"), "num_experts_per_tok")
        key("expert_ffn", config.positive_int("intermediate_size"), "intermediate_size")
        return [True] * layers, experts
    if family == "deepseek":
        experts_or_none = config.optional_int("n_routed_experts")
        first_dense = _non_negative(config, "first_k_dense_replace")
        freq = config.positive_int("moe_layer_freq", default=1)
        if experts_or_none is None:
            moe = [False] * layers
        else:
            moe = [i >= first_dense and i % freq == 0 for i in range(layers)]
    else:  # qwen2_moe, qwen3_moe
        experts_or_none = config.positive_int("num_experts")
        step = config.positive_int("decoder_sparse_step", default=1)
        dense = set(config.int_list("mlp_only_layers"))
        moe = [i not in dense and (i + 1) % step == 0 for i in range(layers)]
    if any(not m for m in moe):
        key("ffn", config.positive_int("intermediate_size"), "intermediate_size: dense layers")
    elif "intermediate_size" in config.fields:
        config.used.add("intermediate_size")
        config.notes.append("intermediate_size is not written: every layer is MoE")
    if experts_or_none is None or not any(moe):
        return [False] * layers, None
    experts = experts_or_none
    key("experts", experts, "routed experts")
    key("top_k", config.positive_int("num_experts_per_tok"), "num_experts_per_tok")
    expert_ffn = config.positive_int("moe_intermediate_size")
    key("expert_ffn", expert_ffn, "moe_intermediate_size")
    if family == "deepseek":
        shared = _non_negative(config, "n_shared_experts")
        if shared:
            key("shared_experts", shared, "n_shared_experts")
            key("shared_expert_ffn", expert_ffn, "moe_intermediate_size")
        method = config.text("topk_method", "greedy")
        if method == "noaux_tc":
            key("router_bias", True, "topk_method = noaux_tc: e_score_correction_bias")
        elif method not in ("greedy", "group_limited_greedy"):
            config.error(
                "topk_method",
                f'unknown `topk_method = "{method}"`',
                help="dagc reads greedy, group_limited_greedy and noaux_tc",
            )
    elif family == "qwen2_moe":
        shared_ffn = _non_negative(config, "shared_expert_intermediate_size", required=True)
        if shared_ffn:
            key("shared_experts", 1, "one shared expert")
            key("shared_expert_ffn", shared_ffn, "shared_expert_intermediate_size")
            key("shared_expert_gate", True, "Qwen2-MoE's sigmoid gate on the shared expert")
    return moe, experts


def _non_negative(config: _Config, key: str, *, required: bool = False) -> int:
    """A field that may be 0 (first_k_dense_replace, a shared size of 0 = none)."""
    config.used.add(key)
    value = config.fields.get(key)
    if value is None:
        if required:
            config.error(
                key, f"the config has no `{key}`", help=f"add `{key}` as the released config has it"
            )
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        config.error(key, f"`{key}` must be a whole number, not {json.dumps(value)}", help="fix it")
        return 0
    return value


# -- the layout and the text --------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    tp: int
    pp: int
    ep: int | None
    microbatches: int


def _resolve(layout: Layout, spec: _Spec) -> _Placed:
    """The layout with its defaults, checked against the model (errors name the option)."""
    if layout.gpus < 1:
        raise option_error(f"--gpus must be at least 1, not {layout.gpus}", "e.g. --gpus 8")
    if layout.gpu not in GPU_PRESETS:
        raise option_error(
            f"unknown GPU preset `{layout.gpu}`", f"use one of {', '.join(GPU_PRESETS)}"
        )
    if layout.dtype not in DTYPES:
        raise option_error(f"unknown dtype `{layout.dtype}`", f"use one of {', '.join(DTYPES)}")
    # with attention dp a stage is every GPU of it (its attention replicas, the experts
    # over all of them)
    stage = layout.gpus // (layout.pp or 1)
    tp = layout.tp or (stage if layout.attention_dp else min(layout.gpus, LARGEST_DEFAULT_TP))
    if layout.gpus % tp:
        raise option_error(
            f"--tp {tp} does not divide --gpus {layout.gpus}",
            "each pipeline stage is one tensor-parallel group: choose a tp dividing the GPUs",
        )
    pp = layout.pp or layout.gpus // tp
    if tp * pp != layout.gpus:
        raise option_error(
            f"--tp {tp} × --pp {pp} is {tp * pp} GPUs, not --gpus {layout.gpus}",
            "every GPU runs one pipeline stage's tensor-parallel rank (for data-parallel"
            " attention replicas use --attention-dp): make tp × pp equal the GPUs",
        )
    if pp > spec.layers:
        raise option_error(
            f"--pp {pp} is more pipeline stages than the model's {spec.layers} layers",
            f"use at most --pp {spec.layers}",
        )
    if tp > spec.heads and not layout.attention_dp:
        raise option_error(
            f"--tp {tp} is more than the model's {spec.heads} attention heads",
            "tensor parallelism splits the heads: use a smaller --tp and more --pp",
        )
    ep = None
    if spec.experts is not None:
        ep = layout.ep or tp
        if ep != tp:
            raise option_error(
                f"--ep {ep} differs from the {tp} GPUs of a stage",
                "dagc new puts the experts on the attention GPUs of each stage: --ep must"
                f" equal --tp ({tp})",
            )
        if spec.experts % ep:
            raise option_error(
                f"--ep {ep} does not divide the model's {spec.experts} experts",
                "every GPU of the moe group holds the same number of experts",
            )
    if layout.batch < 1 or layout.seq < 1:
        raise option_error("--batch and --seq must be at least 1", "e.g. --batch 8 --seq 4096")
    _check_mode(layout, pp)
    microbatches = layout.microbatches or math.gcd(layout.batch, pp)
    if layout.batch % microbatches:
        raise option_error(
            f"--batch {layout.batch} is not divisible by --microbatches {microbatches}",
            "each micro-batch holds the same number of sequences",
        )
    return _Placed(tp, pp, ep, microbatches)


def _check_mode(layout: Layout, pp: int) -> None:
    """The serving options: each belongs to its mode; attention dp needs one stage."""
    if layout.mode not in MODES:
        raise option_error(f"unknown mode `{layout.mode}`", f"use one of {', '.join(MODES)}")
    misplaced = [
        (option, mode)
        for option, value, mode in (
            ("--context", layout.context, "decode"),
            ("--input", layout.input, "serve"),
            ("--output-tokens", layout.output, "serve"),
        )
        if value is not None and layout.mode != mode
    ]
    if misplaced:
        option, mode = misplaced[0]
        raise option_error(
            f"{option} belongs to --mode {mode}, not --mode {layout.mode}",
            f"add --mode {mode}, or leave {option} out",
        )
    if layout.attention_dp and pp > 1:
        raise option_error(
            f"--attention-dp with --pp {pp}: data-parallel attention groups cannot be"
            " pipeline stages",
            "use --pp 1 (every GPU one attention replica, the experts over all of them)",
        )


def _workload(layout: Layout, placed: _Placed) -> str:
    """The workload line of the mode."""
    if layout.mode == "decode":
        shape = f"mode = decode; batch = {layout.batch}; context = {layout.context or layout.seq}"
    elif layout.mode == "serve":
        shape = (
            f"mode = serve; batch = {layout.batch}; input = {layout.input or layout.seq};"
            f" output = {layout.output or DEFAULT_OUTPUT}"
        )
    else:
        shape = f"batch = {layout.batch}; seq = {layout.seq}"
    return f"workload {{ {shape}; dtype = {layout.dtype}; microbatches = {placed.microbatches} }}"


def _mode_options(layout: Layout) -> str:
    """The serving options of the layout line (nothing for prefill)."""
    if layout.mode == "decode":
        return f" --mode decode --context {layout.context or layout.seq}"
    if layout.mode == "serve":
        return (
            f" --mode serve --input {layout.input or layout.seq}"
            f" --output-tokens {layout.output or DEFAULT_OUTPUT}"
        )
    return ""


def _model_name(path: str | os.PathLike[str], layout: Layout | None) -> str:
    """The model's name: --name, else the config's file name (NAME.config.json, NAME.json,
    or the folder of NAME/config.json) as a .dag name."""
    if layout is not None and layout.name:
        raw = layout.name
    else:
        file = Path(os.fspath(path))
        stem = file.name.removesuffix(".json").removesuffix(".config")
        raw = file.resolve().parent.name if stem == "config" else stem
    name = re.sub(r"[^A-Za-z0-9_]+", "_", raw).strip("_").lower()[:128] or "model"
    return name if not name[0].isdigit() else f"m_{name}"[:128]


def _write(spec: _Spec, config: _Config, layout: Layout, name: str) -> str:
    placed = _resolve(layout, spec)
    _unknown_fields(config)
    lines = _header(spec, config, layout, placed)
    width = max(len(k) for k, _, _ in spec.keys)
    value_width = max(len(v) for _, v, _ in spec.keys)
    lines.append(f"model {name} {{")
    for key, value, comment in spec.keys:
        text = f"  {key:<{width}} = {value}"
        lines.append(f"{text:<{width + value_width + 6}}  # {comment}" if comment else text)
    lines += ["}", ""]
    lines.append(_workload(layout, placed))
    lines += ["", "devices {", f"  gpu = {layout.gpu}"]
    if placed.pp > 1 and placed.tp > 1:
        lines.append("  split_sends = true  # pipeline sends split over the tp ranks' links")
    groups = _group_names(placed.pp)
    for s, group in enumerate(groups):
        first = s * placed.tp
        last = first + placed.tp - 1
        members = f"{first}..{last}" if last > first else f"{first}"
        lines.append(f"  group {group} = gpu[{members}]")
    lines += ["}", ""]
    lines += _statements(spec, placed, groups, layout.attention_dp)
    return "\n".join(lines) + "\n"


def _header(spec: _Spec, config: _Config, layout: Layout, placed: _Placed) -> list[str]:
    source = os.path.basename(config.source.path)
    ep = f" --ep {placed.ep}" if placed.ep is not None else ""
    lines = [
        f"# {spec.architecture} from {source}, written by `dagc new --hf`.",
        f"# Layout: --gpus {layout.gpus} --tp {placed.tp} --pp {placed.pp}{ep}"
        f" --gpu {layout.gpu} --batch {layout.batch} --seq {layout.seq}"
        f" --microbatches {placed.microbatches} --dtype {layout.dtype}"
        + _mode_options(layout)
        + (" --attention-dp" if layout.attention_dp else ""),
    ]
    config.used.update(("num_nextn_predict_layers", "quantization_config"))
    if "num_nextn_predict_layers" in config.fields:
        lines.append(
            f"# The multi-token-prediction module (num_nextn_predict_layers ="
            f" {json.dumps(config.fields['num_nextn_predict_layers'])}) is not part of the"
            " main model: left out."
        )
    if "quantization_config" in config.fields:
        lines.append(
            f"# quantization_config is not read: the element type is --dtype ({layout.dtype})."
        )
    lines += [f"# {note}." for note in config.notes]
    ignored = sorted(k for k in config.fields if k in IGNORED and k not in config.used)
    if ignored:
        lines += _wrapped(
            "Not written, as they change neither the work nor the parameters: ", ignored
        )
    unknown = sorted(k for k in config.fields if k not in IGNORED and k not in config.used)
    if unknown:
        lines += _wrapped("Fields dagc does not know, not read (see the warnings): ", unknown)
    return [*lines, ""]


def _wrapped(lead: str, names: list[str], width: int = 92) -> list[str]:
    lines, current = [], "# " + lead
    for i, name in enumerate(names):
        word = name + ("." if i == len(names) - 1 else ",")
        if len(current) + 1 + len(word) > width:
            lines.append(current)
            current = "#  "
        current += ("" if current.endswith(": ") else " ") + word
    return [*lines, current]


def _unknown_fields(config: _Config) -> None:
    for key in sorted(config.fields):
        if key not in IGNORED and key not in config.used:
            config.bag.warning(
                config.span(key),
                f"dagc does not know the config field `{key}`: it is not read",
                help="check that it changes neither the work nor the parameters; the .dag"
                " file lists it in a comment",
            )


def _group_names(pp: int) -> list[str]:
    return ["gpus"] if pp == 1 else [f"stage{s}" for s in range(pp)]


def _stages(layers: int, pp: int) -> Iterator[tuple[int, int]]:
    """Each stage's first and last layer (the splitting rule: the first stages get more)."""
    first = 0
    for s in range(pp):
        count = layers // pp + (1 if s < layers % pp else 0)
        yield first, first + count - 1
        first += count


def _statements(
    spec: _Spec, placed: _Placed, groups: list[str], attention_dp: bool = False
) -> list[str]:
    """The `layers` statements: one with `pp=` when every layer is alike, else one per run
    of dense or MoE layers within each stage. With `attention_dp` every block but moe runs
    as tp replicas of one GPU each (`dp=`)."""
    tp = placed.tp
    if attention_dp and tp > 1:
        embed, degree = f"embed dp={tp}", f"tp=1 dp={tp}"
    else:
        embed, degree = ("embed vocab_parallel" if tp > 1 else "embed"), f"tp={tp}"

    def body(moe: bool, first: bool, last: bool) -> list[str]:
        blocks = [embed] if first else []
        blocks.append(f"attention {degree}")
        blocks.append(f"moe ep={placed.ep}" if moe else f"mlp {degree}")
        if last:
            blocks.append(f"lm_head {degree}")
        return [f"  {b}" for b in blocks]

    def span(a: int, b: int) -> str:
        return f"{a}..{b}" if b > a else f"{a}"

    last_layer = spec.layers - 1
    if len(set(spec.moe_layers)) == 1:
        where = ", ".join(groups) + (f" pp={placed.pp}" if placed.pp > 1 else "")
        return [
            f"layers {span(0, last_layer)} on {where} {{",
            *body(spec.moe_layers[0], True, True),
            "}",
        ]
    out: list[str] = []
    for group, (a, b) in zip(groups, _stages(spec.layers, placed.pp), strict=True):
        start = a
        while start <= b:
            end = start
            while end < b and spec.moe_layers[end + 1] == spec.moe_layers[start]:
                end += 1
            kind = "MoE" if spec.moe_layers[start] else "dense"
            out.append(f"# {kind} layers {span(start, end)} on {group}")
            out.append(f"layers {span(start, end)} on {group} {{")
            out += body(spec.moe_layers[start], start == 0, end == last_layer)
            out += ["}", ""]
            start = end + 1
    return out[:-1]
