"""Semantic checks and lowering of the AST to the logical IR.

Every problem is recorded in the DiagnosticBag and checking goes on, so a file's errors are
reported together. The pipeline sugar (`layers A..B on G1, G2 pp=2`) is lowered here to one
explicit LayerRange per stage (`embed` in the first stage only, `lm_head` in the last only);
with the training section's `virtual_stages = v`, one per chunk: pp·v chunks, chunk c on
stage c mod pp (`embed` in chunk 0, `lm_head` in the last).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dagc.blocks import MODULES as BLOCK_MODULES
from dagc.diagnostics import DiagnosticBag, Note, closest, did_you_mean, one_of
from dagc.frontend import ast
from dagc.hardware import (
    DEFAULT_GPU,
    DEFAULT_NODE_SIZE,
    PARAMETER_RANGES,
    PRESETS,
    format_magnitude,
)
from dagc.ir.logical import (
    Activation,
    AttentionKernel,
    AttentionMask,
    Block,
    BlockKind,
    DeviceGroup,
    DType,
    Hardware,
    LayerRange,
    Mode,
    Model,
    MoeDispatch,
    Program,
    Recompute,
    Schedule,
    Training,
    Workload,
)
from dagc.source import SourceFile, Span
from dagc.split import split_evenly


@dataclass(frozen=True)
class KeySpec:
    """What one key of a section accepts."""

    kind: str  # "int" (positive integer), "number" (positive), "probability" ([0, 1)),
    # "choice", "bool"
    required: bool = False
    choices: tuple[str, ...] = ()
    meaning: str = ""
    maximum: float | None = None  # the largest value accepted (bounds loops and arithmetic)


# Limits that keep a typo such as `layers = 1000000000000` from running for minutes: each is
# checked before any loop over the items it counts.
MAX_GPUS = 1_048_576  # GPU ids 0 .. MAX_GPUS - 1
MAX_LAYERS = 100_000
MAX_EXPERTS = 1_048_576
# Dimensions: far above any model, far below what overflows the arithmetic after them (with
# these, the largest term, Bm·h·S·S elements of a softmax, stays below 2^90, and every time
# and byte count a finite float).
MAX_WIDTH = 1_048_576  # hidden size, heads, head_dim
MAX_INNER = 16_777_216  # ffn, expert_ffn, vocab
MAX_TOKENS = 16_777_216  # batch, seq
MAX_CAPACITY_FACTOR = 1_000.0
MAX_NAME_LENGTH = 128  # model and group names, printed in reports and drawn by graphviz

MODEL_KEYS: dict[str, KeySpec] = {
    "layers": KeySpec("int", True, meaning="number of transformer layers", maximum=MAX_LAYERS),
    "hidden": KeySpec("int", True, meaning="hidden size", maximum=MAX_WIDTH),
    "heads": KeySpec("int", meaning="attention (query) heads", maximum=MAX_WIDTH),
    "head_dim": KeySpec("int", meaning="size of one head", maximum=MAX_WIDTH),
    "kv_heads": KeySpec("int", meaning="key/value heads", maximum=MAX_WIDTH),
    "ffn": KeySpec("int", meaning="dense MLP inner size", maximum=MAX_INNER),
    "activation": KeySpec("choice", choices=tuple(a.value for a in Activation)),
    "experts": KeySpec("int", meaning="routed experts", maximum=MAX_EXPERTS),
    "top_k": KeySpec("int", meaning="experts per token", maximum=MAX_EXPERTS),
    "expert_ffn": KeySpec("int", meaning="expert MLP inner size", maximum=MAX_INNER),
    "capacity_factor": KeySpec(
        "number", meaning="expert capacity factor", maximum=MAX_CAPACITY_FACTOR
    ),
    "vocab": KeySpec("int", meaning="vocabulary size", maximum=MAX_INNER),
    "tied_embeddings": KeySpec("bool", meaning="embed and lm_head share one table"),
    "attention_kernel": KeySpec(
        "choice", choices=tuple(k.value for k in AttentionKernel), meaning="attention kernel"
    ),
    "attention_mask": KeySpec(
        "choice", choices=tuple(k.value for k in AttentionMask), meaning="attention mask"
    ),
    "qkv_bias": KeySpec("bool", meaning="biases on the q, k and v projections"),
    "o_bias": KeySpec("bool", meaning="a bias on the output projection"),
    "qk_norm": KeySpec("bool", meaning="RMSNorm of each query and key head"),
    "q_lora_rank": KeySpec("int", meaning="MLA query compression rank", maximum=MAX_INNER),
    "kv_lora_rank": KeySpec("int", meaning="MLA key/value compression rank", maximum=MAX_INNER),
    "qk_nope_head_dim": KeySpec(
        "int", meaning="MLA query/key size per head without RoPE", maximum=MAX_WIDTH
    ),
    "qk_rope_head_dim": KeySpec(
        "int", meaning="MLA query/key size per head with RoPE", maximum=MAX_WIDTH
    ),
    "v_head_dim": KeySpec("int", meaning="MLA value size per head", maximum=MAX_WIDTH),
    "shared_experts": KeySpec("int", meaning="shared experts per MoE layer", maximum=MAX_EXPERTS),
    "shared_expert_ffn": KeySpec(
        "int", meaning="inner size of one shared expert", maximum=MAX_INNER
    ),
    "shared_expert_gate": KeySpec("bool", meaning="a sigmoid gate on the shared experts"),
    "router_bias": KeySpec("bool", meaning="a per-expert bias in the router"),
    "attention_dropout": KeySpec(
        "probability", meaning="dropout probability of the attention probabilities (training)"
    ),
    "hidden_dropout": KeySpec(
        "probability", meaning="dropout probability of attention's and the MLP's outputs (training)"
    ),
}
# A help that lists more keys than this names the common ones and points at the docs.
MAX_KEYS_LISTED = 12
# The largest head size FlashAttention-style kernels handle (FlashAttention-2 and -3).
MAX_FUSED_HEAD_DIM = 256
# Keys of multi-head latent attention, which only mean something with `kv_lora_rank`.
MLA_KEYS = ("q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
WORKLOAD_KEYS: dict[str, KeySpec] = {
    "batch": KeySpec("int", True, meaning="sequences in the batch", maximum=MAX_TOKENS),
    # required in prefill mode only (`_workload` checks each mode's keys)
    "seq": KeySpec("int", True, meaning="tokens per sequence", maximum=MAX_TOKENS),
    "dtype": KeySpec("choice", choices=tuple(d.value for d in DType)),
    "microbatches": KeySpec("int", meaning="micro-batches", maximum=MAX_TOKENS),
    "microbatch_size": KeySpec("int", meaning="sequences per micro-batch", maximum=MAX_TOKENS),
    "mode": KeySpec(
        "choice", choices=tuple(m.value for m in Mode), meaning="what the workload runs"
    ),
    "context": KeySpec(
        "int",
        meaning="keys each new token attends over, itself included",
        maximum=MAX_TOKENS,
    ),
    "input": KeySpec("int", meaning="prompt tokens per sequence", maximum=MAX_TOKENS),
    "output": KeySpec("int", meaning="tokens generated per sequence", maximum=MAX_TOKENS),
}
# The keys each mode requires, and the keys that belong to one mode only.
MODE_REQUIRED: dict[Mode, tuple[str, ...]] = {
    Mode.PREFILL: ("batch", "seq"),
    Mode.DECODE: ("batch", "context"),
    Mode.SERVE: ("batch", "input", "output"),
}
MODE_ONLY_KEYS: dict[str, Mode] = {
    "context": Mode.DECODE,
    "input": Mode.SERVE,
    "output": Mode.SERVE,
}
MODE_ONLY_MEANING: dict[str, str] = {
    "context": "the context length of a decode step",
    "input": "the prompt length of a serve workload",
    "output": "the output length of a serve workload",
}
TRAINING_KEYS: dict[str, KeySpec] = {
    "dp": KeySpec("int", meaning="data-parallel replicas of the layout", maximum=MAX_GPUS),
    "schedule": KeySpec(
        "choice", choices=tuple(s.value for s in Schedule), meaning="pipeline schedule"
    ),
    "virtual_stages": KeySpec(
        "int", meaning="model chunks per GPU (interleaved schedule)", maximum=MAX_LAYERS
    ),
    "recompute": KeySpec(
        "choice", choices=tuple(r.value for r in Recompute), meaning="activation recomputation"
    ),
    "sequence_parallel": KeySpec("bool", meaning="Megatron's sequence parallelism"),
    "zero": KeySpec("choice", choices=("0", "1", "3"), meaning="ZeRO stage"),
    "grad_overlap": KeySpec("bool", meaning="gradient reduction overlapping the backward"),
}
# Roofline parameters a file may set (the same names as `--set`; docs/cost-models.md).
ROOFLINE_KEYS: dict[str, str] = {
    "peak_flops": "dense tensor-core FLOP/s",
    "hbm_bandwidth": "HBM bytes/s",
    "nvlink_bandwidth": "NVLink bytes/s per direction",
    "network_bandwidth": "inter-node bytes/s per GPU",
    "memory_bytes": "memory per GPU in bytes",
    "matmul_efficiency": "fraction of the peak products reach",
    "memory_efficiency": "fraction of HBM bandwidth streaming reaches",
    "link_efficiency": "fraction of link bandwidth collectives reach",
    "nvlink_latency": "seconds per collective inside a node",
    "network_latency": "seconds per collective across nodes",
}
DEVICES_KEYS: dict[str, KeySpec] = {
    "gpu": KeySpec("choice", choices=tuple(sorted(PRESETS))),
    "node_size": KeySpec("int", meaning="GPUs per node", maximum=MAX_GPUS),
    "split_sends": KeySpec(
        "bool", meaning="pipeline sends split over the tensor-parallel ranks' links"
    ),
    **{key: KeySpec("number", meaning=meaning) for key, meaning in ROOFLINE_KEYS.items()},
}
# `overlap` puts communication on the communication stream: a flag of every block (it is
# about where a block's transfers and collectives run, not about its compute) and of a
# `layers` statement, where it sets every block of the statement.
OVERLAP = "overlap"
# `prefill` and `decode` put a serve program's statement in one layout only (disaggregated
# serving); a statement with neither is in both.
PREFILL, DECODE = Mode.PREFILL.value, Mode.DECODE.value
LAYERS_OPTIONS: dict[str, KeySpec] = {
    "pp": KeySpec("int", meaning="pipeline stages"),
    OVERLAP: KeySpec("bool"),
    PREFILL: KeySpec("bool"),
    DECODE: KeySpec("bool"),
}
# `dp` (attention data parallelism: replicas of the block over its group) is the front end's
# option of the blocks that can be replicated; a moe block splits its experts instead.
DP = "dp"
DP_KINDS = (BlockKind.EMBED, BlockKind.ATTENTION, BlockKind.MLP, BlockKind.LM_HEAD)


def _option_spec(value_kind: str | tuple[str, ...]) -> KeySpec:
    """A block module's option (`"bool"`, `"int"`, or a tuple of choices) as a KeySpec."""
    if isinstance(value_kind, tuple):
        return KeySpec("choice", choices=value_kind)
    return KeySpec(value_kind)


# What each block kind takes and needs comes from its module (dagc/blocks/).
BLOCK_OPTIONS: dict[BlockKind, dict[str, KeySpec]] = {
    kind: {
        **({m.degree_key: KeySpec("int")} if m.degree_key else {}),
        **{name: _option_spec(value_kind) for name, value_kind in m.options.items()},
        # `embed` communicates only when vocab_parallel (its all-reduce): `overlap` on any
        # other embed is refused in `_block_overlap`
        OVERLAP: KeySpec("bool"),
        **(
            {DP: KeySpec("int", meaning="data-parallel replicas of the block", maximum=MAX_GPUS)}
            if kind in DP_KINDS
            else {}
        ),
    }
    for kind, m in BLOCK_MODULES.items()
}
# Model keys each block kind needs.
BLOCK_NEEDS: dict[BlockKind, tuple[str, ...]] = {kind: m.needs for kind, m in BLOCK_MODULES.items()}
BLOCK_KINDS = {kind.value: kind for kind in BlockKind}

# Other tools' names for dagc's keys (HuggingFace's config.json, Megatron's arguments): the
# same setting, so the help names dagc's key even though the spelling is far from it.
KEY_ALIASES: dict[str, str] = {
    "num_hidden_layers": "layers",
    "num_layers": "layers",
    "n_layers": "layers",
    "hidden_size": "hidden",
    "d_model": "hidden",
    "num_attention_heads": "heads",
    "n_heads": "heads",
    "num_key_value_heads": "kv_heads",
    "n_kv_heads": "kv_heads",
    "intermediate_size": "ffn",
    "ffn_hidden_size": "ffn",
    "vocab_size": "vocab",
    "num_experts": "experts",
    "n_routed_experts": "experts",
    "num_local_experts": "experts",
    "num_experts_per_tok": "top_k",
    "moe_intermediate_size": "expert_ffn",
    "n_shared_experts": "shared_experts",
    "num_shared_experts": "shared_experts",
    "shared_expert_intermediate_size": "shared_expert_ffn",
    "tie_word_embeddings": "tied_embeddings",
    "hidden_act": "activation",
    "batch_size": "batch",
    "global_batch_size": "batch",
    "seq_len": "seq",
    "seq_length": "seq",
    "sequence_length": "seq",
    "micro_batches": "microbatches",
    "num_microbatches": "microbatches",
}
_NOT_COSTED = "dagc does not model it, as it barely changes time or memory; remove the key"
# Keys people write for features dagc does not model yet. Saying so beats suggesting a key
# that is spelt alike but means something else (`shared_experts` is not `experts`).
UNSUPPORTED_KEYS: dict[str, str] = {
    "sliding_window": "attention spans the whole sequence (`seq`); remove the key",
    "num_nextn_predict_layers": "the multi-token-prediction module is not modelled (it is"
    " not part of the main model); remove the key",
    "mlp_bias": "MLP and expert projections have no biases in dagc's models; remove the key",
    "rope_theta": _NOT_COSTED,
    "rope_scaling": _NOT_COSTED,
    "max_position_embeddings": _NOT_COSTED,
    "rms_norm_eps": _NOT_COSTED,
    "norm_eps": _NOT_COSTED,
    "dropout": "dropout is two keys: `attention_dropout` and `hidden_dropout` (probabilities"
    " in [0, 1), applied in training)",
    "dp": "`dp` belongs to a block (`attention tp=1 dp=8`: attention data parallelism), or"
    " to the training section (replicas of the whole layout)",
    "sp": "sequence parallelism is not modelled: `tp` splits the block's weights and heads",
    "cp": "context parallelism is not modelled: each GPU of a block sees the whole sequence",
    "etp": "tensor parallelism inside an expert is not modelled: `ep` places whole experts",
}
# Choice values that other tools spell differently but that mean the same.
VALUE_ALIASES: dict[str, dict[str, str]] = {
    "dtype": {
        "bfloat16": "bf16",
        "float16": "fp16",
        "half": "fp16",
        "float32": "fp32",
        "float": "fp32",
        "float8": "fp8",
    },
    "activation": {"silu": "swiglu", "swish": "swiglu"},  # HF's `silu` is the gated MLP
}
# Choice values dagc does not have, and the value that costs the same.
VALUE_STAND_INS: dict[str, dict[str, str]] = {
    "activation": {"relu": "gelu", "geglu": "swiglu", "reglu": "swiglu"},
}


@dataclass
class _Entry:
    """A checked setting: its converted value and where it was written."""

    value: Any
    setting: ast.Setting | None

    @property
    def span(self) -> Span | None:
        if self.setting is None:
            return None
        return self.setting.value.span if self.setting.value else self.setting.key.span


Settings = dict[str, _Entry]


def lower_to_logical(tree: ast.File, source: SourceFile, bag: DiagnosticBag) -> Program | None:
    """Check `tree` and lower it to the logical IR; None if any error was found."""
    return _Lowering(source, bag).run(tree)


class _Lowering:
    def __init__(self, source: SourceFile, bag: DiagnosticBag) -> None:
        self.source = source
        self.bag = bag
        self.model_section: ast.Section | None = None
        self.virtual_stages = 1  # the training section's, for the `pp=` sugar
        self.microbatches: int | None = None
        self.microbatch_size: int | None = None  # Bm, for the replicas of `dp`
        self.training: Training | None = None
        self.training_span: Span | None = None
        self.mode: Mode | None = Mode.PREFILL  # None: the workload's `mode` is invalid
        # where each block's `dp` option is written, by the block's span
        self.dp_spans: dict[Span, Span | None] = {}
        # groups whose replicas were warned about an uneven split of the micro-batch
        self.dp_uneven: set[str] = set()

    # -- the file ---------------------------------------------------------------------

    def run(self, tree: ast.File) -> Program | None:
        self._check_name_lengths(tree)
        model = self._single(tree.models, "model", "model NAME { layers = 4; hidden = 4096 }")
        workload = self._single(tree.workloads, "workload", "workload { batch = 8; seq = 2048 }")
        devices = self._single(tree.devices, "devices", "devices { group all = gpu[0..7] }")
        if not tree.layers:
            self.bag.error(
                self._file_start(),
                "the file has no `layers` statement, so nothing runs anywhere",
                help="place the layers on a group, e.g. `layers 0..3 on all { attention; mlp }`",
            )
        self.model_section = model
        model_settings = self._settings(model.settings, MODEL_KEYS, "model") if model else None
        workload_settings = (
            self._settings(workload.settings, WORKLOAD_KEYS, "workload") if workload else None
        )
        device_settings = (
            self._settings(devices.settings, DEVICES_KEYS, "devices") if devices else None
        )
        training = self._training(tree.trainings)
        self.training = training
        self.training_span = tree.trainings[0].span if tree.trainings else None
        self.mode = self._written_mode(workload_settings, workload)
        self.virtual_stages = training.virtual_stages if training else 1
        groups = self._groups(devices.groups) if devices else {}
        # `is not None`: an empty section has no settings but must still be checked
        built_model = (
            self._model(model, model_settings) if model and model_settings is not None else None
        )
        built_workload = (
            self._workload(workload, workload_settings, training)
            if workload and workload_settings is not None
            else None
        )
        hardware = self._hardware(device_settings) if device_settings is not None else None
        self.microbatches = built_workload.microbatches if built_workload else None
        self.microbatch_size = built_workload.microbatch_size if built_workload else None
        ranges, decode_ranges = self._layer_ranges(tree.layers, groups, built_model, model_settings)
        if self.bag.errors or not (built_model and built_workload and hardware):
            return None
        return Program(
            built_model,
            built_workload,
            hardware,
            tuple(groups.values()),
            tuple(ranges),
            self.source.path,
            training,
            decode_ranges=tuple(decode_ranges),
        )

    @staticmethod
    def _written_mode(settings: Settings | None, section: ast.Section | None) -> Mode | None:
        """The workload's `mode` as written (prefill when absent); None when it is invalid
        or there is no workload section (both reported)."""
        if section is None or settings is None:
            return None
        if "mode" in settings:
            return Mode(settings["mode"].value)
        if any(s.key.text == "mode" for s in section.settings):
            return None
        return Mode.PREFILL

    def _file_start(self) -> Span:
        return Span.point(1, 1)

    def _single(self, sections: tuple[Any, ...], keyword: str, example: str) -> Any:
        if not sections:
            self.bag.error(
                self._file_start(),
                f"the file has no `{keyword}` section",
                help=f"add one, e.g. `{example}`",
            )
            return None
        for extra in sections[1:]:
            self.bag.error(
                Span.point(extra.span.line, extra.span.column, len(keyword)),
                f"duplicate `{keyword}` section",
                help="a file describes one configuration: merge the two sections",
                notes=[Note(f"the first `{keyword}` section is here", sections[0].span)],
            )
        return sections[0]

    # -- key = value settings -----------------------------------------------------------

    def _settings(
        self,
        settings: Iterable[ast.Setting],
        schema: dict[str, KeySpec],
        where: str,
        block: BlockKind | None = None,
    ) -> Settings:
        """Check each setting against `schema`; unknown, duplicate and bad values are errors."""
        seen: Settings = {}
        for setting in settings:
            key = setting.key.text
            spec = schema.get(key)
            if spec is None:
                self._unknown_key(setting, schema, where, block)
                continue
            if key in seen:
                first = seen[key].setting
                self.bag.error(
                    setting.key.span,
                    f"duplicate key `{key}` in {where}",
                    help="remove one of them",
                    notes=[Note("first set here", first.key.span)] if first else [],
                )
                continue
            value = self._convert(setting, spec, where)
            if value is not None:
                seen[key] = _Entry(value, setting)
        return seen

    def _unknown_key(
        self,
        setting: ast.Setting,
        schema: dict[str, KeySpec],
        where: str,
        block: BlockKind | None = None,
    ) -> None:
        key = setting.key
        if key.text in UNSUPPORTED_KEYS and key.text not in schema:
            self.bag.error(
                key.span,
                f"{where} key `{key.text}` is not supported yet",
                help=UNSUPPORTED_KEYS[key.text],
            )
            return
        meant = _meant_key(key.text, schema)
        hint = f"did you mean `{meant}`?" if meant else None
        if meant and key.text in KEY_ALIASES and schema[meant].meaning:
            hint = f"did you mean `{meant}`? (dagc's key for the {schema[meant].meaning})"
        if block is not None and key.text in BLOCK_KINDS and setting.value is None:
            # `attention mlp` is the block `attention` with a flag called `mlp`
            hint = (
                f"`{key.text}` is a block of its own: put each block on its own line, or"
                f" separate them with `;` (`{block.value}; {key.text}`)"
            )
        if hint is None and len(schema) > MAX_KEYS_LISTED:
            common = list(schema)[:MAX_KEYS_LISTED]  # in the order the schema declares them
            hint = (
                f"{where} accepts {len(schema)} keys, listed in docs/language.md; the common"
                f" ones are {', '.join(f'`{k}`' for k in common)}"
            )
        if hint is None:
            hint = f"{where} accepts {one_of(schema)}" if schema else f"{where} takes no options"
        self.bag.error(key.span, f"unknown {where} key `{key.text}`", help=hint)

    def _convert(self, setting: ast.Setting, spec: KeySpec, where: str) -> Any:
        key, value = setting.key.text, setting.value
        if spec.kind == "bool":
            if value is None:
                return True
            if value.value in ("true", "false"):
                return value.value == "true"
            self.bag.error(
                value.span,
                f"`{key}` is a flag, not `{value.value}`",
                help=f"write `{key}` alone, or `{key}=true` / `{key}=false`",
            )
            return None
        if value is None:
            self.bag.error(
                setting.key.span,
                f"`{key}` needs a value",
                help=f"write `{key}=VALUE`",
            )
            return None
        if spec.kind == "choice":
            # a choice among numbers (`zero = 1`) is written as an integer
            chosen = str(value.value) if isinstance(value.value, int) else value.value
            if isinstance(chosen, str) and chosen in spec.choices:
                return chosen
            self.bag.error(
                value.span,
                f"`{key}` must be {one_of(spec.choices)}, not `{value.value}`",
                help=_choice_help(key, str(value.value), spec.choices),
            )
            return None
        if spec.kind == "probability":
            number = value.value
            if isinstance(number, (int, float)) and 0 <= number < 1:
                return float(number)
            self.bag.error(
                value.span,
                f"`{key}` must be a probability in [0, 1), not `{value.value}`",
                help=f"`{key}` is the {spec.meaning}; e.g. `{key} = 0.1`",
            )
            return None
        if spec.kind == "number":
            number = value.value
            if isinstance(number, (int, float)) and 0 < number <= sys.float_info.max:
                if spec.maximum is None or number <= spec.maximum:
                    return float(number)
                self.bag.error(
                    value.span,
                    f"`{key}` must be at most {spec.maximum:g}, not `{_shown(number)}`",
                    help=f"`{key}` is the {spec.meaning or key}",
                )
                return None
            self.bag.error(
                value.span,
                f"`{key}` must be a positive number, not `{value.value}`",
                help=f"e.g. `{key} = 1.25`",
            )
            return None
        if isinstance(value.value, int) and value.value > 0:
            if spec.maximum is not None and value.value > spec.maximum:
                self.bag.error(
                    value.span,
                    f"`{key}` must be at most {spec.maximum:,.0f}, not `{_shown(value.value)}`",
                    help=f"`{key}` is the {spec.meaning or key}; dagc handles at most"
                    f" {spec.maximum:,.0f}",
                )
                return None
            return value.value
        self.bag.error(
            value.span,
            f"`{key}` must be a positive integer, not `{value.value}`",
            help=f"`{key}` is the {spec.meaning or key}" if spec.meaning else None,
        )
        return None

    def _missing_required(
        self,
        settings: Settings,
        schema: dict[str, KeySpec],
        section: ast.Section,
        required: tuple[str, ...] | None = None,
    ) -> bool:
        """Report required keys that are not written; True if any is missing or invalid.

        `required` defaults to the schema's required keys. A key that is written but
        invalid, or misspelt (`hiden` when `hidden` is missing), is reported already, so it
        is not reported as missing too.
        """
        written = {setting.key.text for setting in section.settings}
        misspelt = {
            _meant_key(setting.key.text, schema)
            for setting in section.settings
            if setting.key.text not in schema
        }
        if required is None:
            required = tuple(key for key, spec in schema.items() if spec.required)
        for key in required:
            if key not in written and key not in misspelt:
                self.bag.error(
                    Span.point(section.span.line, section.span.column, len(section.keyword)),
                    f"{section.keyword} has no `{key}` ({schema[key].meaning})",
                    help=f"add `{key} = ...` to the {section.keyword} section",
                )
        return any(key not in settings for key in required)

    # -- sections -----------------------------------------------------------------------

    def _model(self, section: ast.Section, s: Settings) -> Model | None:
        self._ignored_keys(section, s, ("head_dim", "kv_heads"), "heads", "attention")
        moe_keys = ("top_k", "expert_ffn", "capacity_factor", "shared_experts", "router_bias")
        self._ignored_keys(section, s, moe_keys, "experts", "MoE layers")
        if self._missing_required(s, MODEL_KEYS, section):
            return None
        get = _getter(s)
        hidden, heads, head_dim = get("hidden"), get("heads"), get("head_dim")
        ok = True
        # under MLA a head's size is qk_nope_head_dim + qk_rope_head_dim, not hidden/heads
        if heads is not None and head_dim is None and "kv_lora_rank" not in s:
            if hidden % heads:
                ok = False
                self.bag.error(
                    s["heads"].span,
                    f"head_dim defaults to hidden/heads, but {hidden} is not divisible by {heads}",
                    help="set `head_dim` explicitly or choose heads dividing hidden",
                )
            else:
                head_dim = hidden // heads
        kv_heads = get("kv_heads") if heads is not None else None  # else ignored (a warning)
        if kv_heads is not None:
            if kv_heads > heads or heads % kv_heads:
                ok = False
                self.bag.error(
                    s["kv_heads"].span,
                    f"kv_heads={kv_heads} must divide heads={heads}",
                    help="each key/value head serves a whole group of query heads;"
                    f" choose a divisor of {heads}",
                )
        elif heads is not None:
            kv_heads = heads
        experts = get("experts")
        top_k = get("top_k") if experts is not None else None  # else ignored (a warning)
        if experts is not None and top_k is not None and top_k > experts:
            ok = False
            self.bag.error(
                s["top_k"].span,
                f"top_k={top_k} is more than the {experts} experts",
                help=f"a token visits at most every expert: use top_k <= {experts}",
            )
        ok = self._check_latent_attention(section, s) and ok
        shared = get("shared_experts") if experts is not None else None
        if shared is None:
            self._ignored_keys(
                section, s, ("shared_expert_ffn", "shared_expert_gate"), "shared_experts",
                "shared experts",
            )  # fmt: skip
        if not ok:
            return None
        latent = get("kv_lora_rank") is not None
        if latent:
            head_dim = get("qk_nope_head_dim") + get("qk_rope_head_dim")
            kv_heads = heads
        expert_ffn = get("expert_ffn") or get("ffn") if experts is not None else None
        return Model(
            name=section.name.text if section.name else "model",
            layers=get("layers"),
            hidden=hidden,
            heads=heads,
            head_dim=head_dim if heads is not None else None,
            kv_heads=kv_heads,
            ffn=get("ffn"),
            activation=Activation(get("activation") or "gelu"),
            experts=experts,
            top_k=top_k,
            expert_ffn=expert_ffn,
            capacity_factor=(get("capacity_factor") if experts is not None else None) or 1.0,
            vocab=get("vocab"),
            attention_kernel=AttentionKernel(get("attention_kernel") or "explicit"),
            attention_mask=AttentionMask(get("attention_mask") or "full"),
            qkv_bias=bool(get("qkv_bias")),
            o_bias=bool(get("o_bias")),
            qk_norm=bool(get("qk_norm")),
            q_lora_rank=get("q_lora_rank") if latent else None,
            kv_lora_rank=get("kv_lora_rank") if latent else None,
            qk_nope_head_dim=get("qk_nope_head_dim") if latent else None,
            qk_rope_head_dim=get("qk_rope_head_dim") if latent else None,
            v_head_dim=get("v_head_dim") if latent else None,
            shared_experts=shared,
            shared_expert_ffn=(get("shared_expert_ffn") or expert_ffn) if shared else None,
            shared_expert_gate=bool(get("shared_expert_gate")) if shared else False,
            router_bias=bool(get("router_bias")) if experts is not None else False,
            tied_embeddings=bool(get("tied_embeddings")),
            attention_dropout=get("attention_dropout") or 0.0,
            hidden_dropout=get("hidden_dropout") or 0.0,
        )

    def _check_latent_attention(self, section: ast.Section, s: Settings) -> bool:
        """MLA's keys: `kv_lora_rank` turns it on and needs its head sizes; the other MLA
        keys need it; `head_dim` and `kv_heads` have no meaning beside it."""
        if "kv_lora_rank" not in s:
            for key in MLA_KEYS:
                if key in s:
                    self.bag.error(
                        s[key].span,
                        f"`{key}` belongs to multi-head latent attention, which `kv_lora_rank`"
                        " turns on",
                        help="add `kv_lora_rank = ...` (with qk_nope_head_dim,"
                        f" qk_rope_head_dim and v_head_dim), or remove `{key}`",
                    )
            return not any(key in s for key in MLA_KEYS)
        ok = True
        if "heads" not in s:
            ok = False
            self.bag.error(
                s["kv_lora_rank"].span,
                "multi-head latent attention needs `heads`",
                help="add `heads = ...` (DeepSeek-V3 has 128)",
            )
        for key in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if key not in s:
                ok = False
                self.bag.error(
                    s["kv_lora_rank"].span,
                    f"multi-head latent attention needs `{key}` ({MODEL_KEYS[key].meaning})",
                    help=f"add `{key} = ...` to the model (DeepSeek-V3:"
                    " qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128)",
                )
        for key, why in (
            ("head_dim", "a head's sizes are qk_nope_head_dim + qk_rope_head_dim (queries"
             " and keys) and v_head_dim (values)"),
            ("kv_heads", "every query head has its own key and value, decompressed from"
             " the shared latent"),
        ):  # fmt: skip
            if key in s:
                ok = False
                self.bag.error(
                    s[key].span,
                    f"`{key}` means nothing with multi-head latent attention",
                    help=f"remove it: {why}",
                )
        return ok

    def _ignored_keys(
        self,
        section: ast.Section,
        s: Settings,
        keys: tuple[str, ...],
        needed: str,
        needed_by: str,
    ) -> None:
        """Warn about `keys` that mean nothing without the model key `needed`."""
        for setting in section.settings:
            key = setting.key.text
            if key == needed or (key not in MODEL_KEYS and _meant_key(key, MODEL_KEYS) == needed):
                return  # set, or written with a bad value or misspelt (an error already)
        for key in keys:
            if key in s:
                self.bag.warning(
                    s[key].span,
                    f"`{key}` is ignored: the model has no `{needed}`",
                    help=f"add `{needed} = ...` if the model has {needed_by}, or remove `{key}`",
                )

    def _training(self, sections: tuple[ast.Section, ...]) -> Training | None:
        """The `training` section, if the file has one (then it plans a training step)."""
        if not sections:
            return None
        section = self._single(sections, "training", "training { dp = 8 }")
        s = self._settings(section.settings, TRAINING_KEYS, "training")
        get = _getter(s)
        schedule = Schedule(get("schedule") or "1f1b")
        virtual = get("virtual_stages") or 1
        if virtual > 1 and schedule is not Schedule.INTERLEAVED:
            self.bag.error(
                s["virtual_stages"].span,
                f"virtual_stages={virtual} needs the interleaved schedule, not `{schedule.value}`",
                help="write `schedule = interleaved`, or remove `virtual_stages`",
            )
            return None
        return Training(
            dp=get("dp") or 1,
            schedule=schedule,
            virtual_stages=virtual,
            recompute=Recompute(get("recompute") or "none"),
            sequence_parallel=bool(get("sequence_parallel")),
            zero=int(get("zero") or 0),
            grad_overlap=bool(get("grad_overlap")),
        )

    def _workload(
        self, section: ast.Section, s: Settings, training: Training | None
    ) -> Workload | None:
        mode = self._mode(section, s, training)
        if mode is None:
            return None
        if self._missing_required(s, WORKLOAD_KEYS, section, MODE_REQUIRED[mode]):
            return None
        get = _getter(s)
        batch, dp = get("batch"), training.dp if training else 1
        per_replica, size = batch // dp, get("microbatch_size")
        if batch % dp:
            self.bag.error(
                s["batch"].span,
                f"batch={batch} does not split over dp={dp} replicas",
                help=f"the global batch is split evenly over the replicas: use a multiple of {dp}",
            )
            return None
        microbatches = get("microbatches")
        if size is not None:
            if per_replica % size or (microbatches and microbatches * size != per_replica):
                where = f"{per_replica} sequences per replica" if dp > 1 else f"batch={batch}"
                self.bag.error(
                    s["microbatch_size"].span,
                    f"microbatch_size={size} does not divide {where}"
                    + (f" into microbatches={microbatches}" if microbatches else ""),
                    help="micro-batches hold the same number of sequences: write one of"
                    " `microbatches` and `microbatch_size`, dividing the batch",
                )
                return None
            microbatches = per_replica // size
        microbatches = microbatches or 1
        if per_replica % microbatches:
            self.bag.error(
                s["microbatches"].span,
                f"batch={batch} is not divisible by microbatches={microbatches}"
                + (f" × dp={dp}" if dp > 1 else ""),
                help="every micro-batch holds the same number of sequences: choose a divisor"
                f" of {per_replica}",
            )
            return None
        dtype = DType(get("dtype") or "bf16")
        if mode is Mode.DECODE:
            return Workload(
                batch, 1, dtype, microbatches, replicas=dp, mode=mode, context=get("context")
            )
        if mode is Mode.SERVE:
            return Workload(
                batch, get("input"), dtype, microbatches, replicas=dp, mode=mode,
                output=get("output"),
            )  # fmt: skip
        return Workload(batch, get("seq"), dtype, microbatches, replicas=dp)

    def _mode(self, section: ast.Section, s: Settings, training: Training | None) -> Mode | None:
        """The workload's mode (prefill when not written), after checking that the keys of
        other modes are absent; None if anything is wrong (reported)."""
        written = {setting.key.text for setting in section.settings}
        if "mode" in written and "mode" not in s:
            return None  # an invalid value, reported already
        mode = Mode(s["mode"].value) if "mode" in s else Mode.PREFILL
        ok = True
        if mode is not Mode.PREFILL and training is not None:
            ok = False
            self.bag.error(
                s["mode"].span,
                f"a training step runs forward and backward passes over whole sequences, not"
                f" `mode = {mode.value}`",
                help="remove `mode` (training takes `seq`), or remove the `training` section",
                notes=[Note("the training section is here", self.training_span)]
                if self.training_span
                else [],
            )
        if mode is not Mode.PREFILL and "seq" in s:
            ok = False
            seq = s["seq"].value
            fix = (
                f"a decode step runs one new token per sequence: write the keys it attends"
                f" over as `context = {seq}`"
                if mode is Mode.DECODE
                else f"write the prompt length as `input = {seq}` (and the tokens generated"
                " per sequence as `output = N`)"
            )
            self.bag.error(
                _key_span(s["seq"]),
                f"`seq` means nothing in a {mode.value} workload",
                help=fix,
            )
        for key, owner in MODE_ONLY_KEYS.items():
            if key in s and mode is not owner:
                ok = False
                self.bag.error(
                    _key_span(s[key]),
                    f"`{key}` is {MODE_ONLY_MEANING[key]}, but this workload is in"
                    f" {mode.value} mode",
                    help=_mode_key_help(key, owner, mode),
                )
        return mode if ok else None

    def _hardware(self, s: Settings) -> Hardware:
        get = _getter(s)
        overrides = {key: float(s[key].value) for key in ROOFLINE_KEYS if key in s}
        for key in list(overrides):
            allowed = PARAMETER_RANGES[key]
            if not allowed.admits(overrides[key]):
                self.bag.error(
                    s[key].span,
                    f"`{key}` must be {allowed.describe()}, not {format_magnitude(overrides[key])}",
                    help=f"`{key}` is the {ROOFLINE_KEYS[key]}, e.g."
                    f" `{key} = {format_magnitude(allowed.typical)}`",
                )
                del overrides[key]
        gpu, node_size = get("gpu") or DEFAULT_GPU, get("node_size") or DEFAULT_NODE_SIZE
        return Hardware(gpu, node_size, overrides, split_sends=bool(get("split_sends")))

    def _check_name_lengths(self, tree: ast.File) -> None:
        """Model and group names end up in reports and pictures: keep them printable."""
        names = [m.name for m in tree.models if m.name is not None]
        names += [decl.name for devices in tree.devices for decl in devices.groups]
        for name in names:
            if len(name.text) > MAX_NAME_LENGTH:
                self.bag.error(
                    Span.point(name.span.line, name.span.column, 1),
                    f"this name is {len(name.text):,} characters long; names are at most"
                    f" {MAX_NAME_LENGTH}",
                    help="use a short name; describe the model in a `#` comment",
                )

    # -- device groups ------------------------------------------------------------------

    def _groups(self, decls: tuple[ast.GroupDecl, ...]) -> dict[str, DeviceGroup]:
        groups: dict[str, DeviceGroup] = {}
        first_decl: dict[str, ast.GroupDecl] = {}
        owner: dict[int, tuple[str, Span]] = {}
        for decl in decls:
            name = decl.name.text
            if name in first_decl:
                self.bag.error(
                    decl.name.span,
                    f"duplicate group `{name}`",
                    help="give each group its own name",
                    notes=[Note("first defined here", first_decl[name].name.span)],
                )
                continue
            first_decl[name] = decl
            gpus = self._group_gpus(decl, owner)
            if gpus:
                groups[name] = DeviceGroup(name, tuple(gpus))
        self.group_decls = first_decl
        return groups

    def _group_gpus(self, decl: ast.GroupDecl, owner: dict[int, tuple[str, Span]]) -> list[int]:
        name = decl.name.text
        if decl.device_kind.text != "gpu":
            self.bag.error(
                decl.device_kind.span,
                f"unknown device kind `{decl.device_kind.text}`",
                help="groups list GPU ids, e.g. `gpu[0..7]`",
            )
            return []
        if not decl.members:
            self.bag.error(
                decl.span,
                f"group `{name}` has no GPUs",
                help="list GPU ids, e.g. `gpu[0..7]` or `gpu[0, 2, 4]`",
            )
            return []
        gpus: list[int] = []
        ok = True
        for member in decl.members:
            if member.first > member.last:
                ok = False
                self.bag.error(
                    member.span,
                    f"GPU range {member.first}..{member.last} is reversed, so it is empty",
                    help=f"ranges go upwards: write `{member.last}..{member.first}`",
                )
                continue
            if member.last >= MAX_GPUS:  # before the loop below, which would take minutes
                ok = False
                big_first = member.first >= MAX_GPUS
                self.bag.error(
                    self._member_number_span(member, last=not big_first),
                    f"GPU id {member.first if big_first else member.last} is out of range:"
                    f" ids go from 0 to {MAX_GPUS - 1}",
                    help=f"dagc handles at most {MAX_GPUS:,} GPUs; check the id",
                )
                continue
            for gpu in range(member.first, member.last + 1):
                if gpu in owner:
                    ok = False
                    other, other_span = owner[gpu]
                    where = "twice in this group" if other == name else f"also in group `{other}`"
                    self.bag.error(
                        member.span,
                        f"gpu {gpu} is {where}",
                        help="a GPU belongs to one group: remove it from one of them",
                        notes=[Note(f"gpu {gpu} is first listed here", other_span)],
                    )
                    break
                owner[gpu] = (name, member.span)
                gpus.append(gpu)
        return gpus if ok else []

    def _member_number_span(self, member: ast.Member, *, last: bool) -> Span:
        """The span of the first or the last number of a GPU list entry (`0` or `7` of `0..7`)."""
        span = member.span
        if span.end_line != span.line:
            return span
        text = self.source.line_text(span.line)[span.column - 1 : span.end_column - 1]
        match = re.search(r"[0-9_]+$" if last else r"^[0-9_]+", text)
        if match is None:
            return span
        return Span.point(span.line, span.column + match.start(), len(match.group()))

    # -- layer placement ----------------------------------------------------------------

    def _layer_ranges(
        self,
        decls: tuple[ast.LayersDecl, ...],
        groups: dict[str, DeviceGroup],
        model: Model | None,
        model_settings: Settings | None,
    ) -> tuple[list[LayerRange], list[LayerRange]]:
        """The prefill (or only) layout's ranges and the decode layout's (empty unless a
        statement has the `prefill` or `decode` flag), each in layer order."""
        num_layers = model.layers if model else None
        decls = tuple(map(self._missing_on, decls))
        phases = [self._statement_layouts(decl) for decl in decls]
        # "": the one layout; with `prefill`/`decode` flags, two layouts
        layouts = (PREFILL, DECODE) if any(len(p) == 1 for p in phases) else ("",)
        placed_by: dict[str, dict[int, ast.LayersDecl]] = {name: {} for name in layouts}
        # layers named by any statement, even a rejected one
        written: dict[str, set[int]] = {name: set() for name in layouts}
        ranges: dict[str, list[LayerRange]] = {name: [] for name in layouts}
        for decl, phase in zip(decls, phases, strict=True):
            mine = [name for name in layouts if not name or name in phase]
            if num_layers is not None:  # a reversed range names its layers too: no cascade
                low, high = sorted((decl.first, decl.last))
                for name in mine:
                    written[name].update(range(low, min(high, num_layers - 1) + 1))
            if not self._check_range(decl, num_layers, {name: placed_by[name] for name in mine}):
                continue
            lowered = self._lower_layers(decl, groups, model)
            for name in mine:
                ranges[name] += lowered
        if num_layers is not None and model_settings is not None and decls:
            for name in layouts:
                self._check_unplaced(num_layers, written[name], model_settings, name)
        for name in layouts:
            ranges[name].sort(key=lambda r: r.first)
            self._check_layout(ranges[name])
        if len(layouts) == 2:
            self._check_disjoint_layouts(ranges[PREFILL], ranges[DECODE], groups)
        return ranges[layouts[0]], ranges[DECODE] if len(layouts) == 2 else []

    def _check_layout(self, ranges: list[LayerRange]) -> None:
        """A layout's data-parallel groups: every block but moe on a group has one `dp`, and
        a group with dp > 1 is no pipeline stage boundary (a moe excursion to another group
        and back is not one)."""
        group_dp: dict[str, Block] = {}  # a group's first non-moe block
        for block in (b for r in ranges for b in r.blocks if b.kind is not BlockKind.MOE):
            first = group_dp.setdefault(block.group, block)
            if first.dp != block.dp:
                self.bag.error(
                    (self.dp_spans.get(block.span) if block.span else None) or _kind_span(block),
                    f"`{block.kind.value}` on group `{block.group}` runs dp={block.dp}, but"
                    f" `{first.kind.value}` on the same group runs dp={first.dp}",
                    help="the blocks on one group (but moe) run as the same replicas: give them"
                    " the same `dp`",
                    notes=[Note(f"dp={first.dp} here", _kind_span(first))],
                )
        dp = {name: block.dp for name, block in group_dp.items()}
        reported: set[tuple[str, str]] = set()
        for before, block in _stage_boundaries(ranges, self._model_layers()):
            if max(dp.get(before.group, 1), dp.get(block.group, 1)) == 1:
                continue
            if (before.group, block.group) in reported:
                continue
            reported.add((before.group, block.group))
            replicated = before if dp.get(before.group, 1) > 1 else block
            self.bag.error(
                _kind_span(block),
                f"`{block.kind.value}` on group `{block.group}` starts a pipeline stage after"
                f" `{before.kind.value}` on group `{before.group}`, and group"
                f" `{replicated.group}` runs dp={dp[replicated.group]} replicas",
                help="pipeline stages between dp groups are not modelled; keep the dp blocks on"
                " one group",
                notes=[Note("the stage before ends here", _kind_span(before))],
            )

    def _check_disjoint_layouts(
        self, prefill: list[LayerRange], decode: list[LayerRange], groups: dict[str, DeviceGroup]
    ) -> None:
        """Disaggregated serving: the prefill and the decode layout use disjoint GPUs (as
        groups do not share GPUs, disjoint groups)."""
        first_use: dict[str, tuple[Block, LayerRange]] = {}
        for layer_range in prefill:
            for block in layer_range.blocks:
                first_use.setdefault(block.group, (block, layer_range))
        reported: set[str] = set()
        for layer_range in decode:
            for block in layer_range.blocks:
                if block.group not in first_use or block.group in reported:
                    continue
                reported.add(block.group)
                other, other_range = first_use[block.group]
                # a statement without a flag is in both layouts: its range is in both lists
                unflagged = any(r is layer_range for r in prefill) or any(
                    r is other_range for r in decode
                )
                self.bag.error(
                    _kind_span(block),
                    f"gpu {groups[block.group].gpus[0]} runs both prefill and decode: group"
                    f" `{block.group}` is in both layouts",
                    help="disaggregated serving runs prefill and decode on disjoint GPUs: place"
                    " the `decode` statements on other groups than the `prefill` ones"
                    + (
                        "; a statement without `prefill` or `decode` is in both layouts"
                        if unflagged
                        else ""
                    ),
                    notes=[Note("the prefill layout uses it here", _kind_span(other))],
                )

    def _statement_layouts(self, decl: ast.LayersDecl) -> frozenset[str]:
        """The layouts a statement places its layers in: `prefill`, `decode`, or both (no
        flag). The flags are a serve program's (disaggregated serving); elsewhere, and both
        on one statement, they are errors (the statement then counts as in both)."""
        both = frozenset((PREFILL, DECODE))
        flags = [
            option
            for option in decl.options
            if option.key.text in both
            and (option.value is None or option.value.value == "true")  # a bad value: reported
        ]
        if not flags:
            return both
        mode = self.mode
        if mode is None:
            return both  # an invalid `mode`, reported already
        if mode is not Mode.SERVE:
            for option in flags:
                flag = option.key.text
                self.bag.error(
                    option.key.span,
                    f"`{flag}` places layers in the {flag} layout of a serve workload, but this"
                    f" workload is in {mode.value} mode",
                    help=f"add `mode = serve` to the workload (with `input` and `output`), or"
                    f" remove `{flag}`",
                )
            return both
        if len(flags) > 1:
            self.bag.error(
                flags[1].key.span,
                f"a statement is in the prefill layout or in the decode layout, not both: it"
                f" has `{flags[0].key.text}` and `{flags[1].key.text}`",
                help="keep one of the flags; a statement with neither is in both layouts (when"
                " no statement has a flag, prefill and decode share the GPUs)",
            )
            return both
        return frozenset((flags[0].key.text,))

    def _missing_on(self, decl: ast.LayersDecl) -> ast.LayersDecl:
        """`layers 0..3 g { ... }`: report the missing `on`, then read `g` as the group.

        The parser takes `g` for an option written as a flag; checking it as one would give
        an unknown option and a block "placed on no group" per block, all for one word.
        Blocks get the same treatment (`attention g tp=4`), for a declared group's name.
        """
        decl = dataclasses.replace(decl, blocks=tuple(map(self._block_missing_on, decl.blocks)))
        if decl.groups or not decl.options:
            return decl
        name, value = decl.options[0].key, decl.options[0].value
        if value is not None or name.text in LAYERS_OPTIONS or name.text in BLOCK_KINDS:
            return decl
        self._report_missing_on(name)
        return dataclasses.replace(decl, groups=(name,), options=decl.options[1:])

    def _block_missing_on(self, block: ast.BlockDecl) -> ast.BlockDecl:
        """`attention g tp=4`, `g` a declared group: the block's missing `on` (one error)."""
        if block.group is not None or not block.options:
            return block
        name, value = block.options[0].key, block.options[0].value
        if value is not None or name.text not in getattr(self, "group_decls", {}):
            return block  # an unknown flag may be a misspelt option: checked as one
        if any(name.text in options for options in BLOCK_OPTIONS.values()):
            return block  # a group named like an option (`fused_qkv`): the option wins
        self._report_missing_on(name)
        return dataclasses.replace(block, group=name, options=block.options[1:])

    def _report_missing_on(self, name: ast.Ident) -> None:
        line = self.source.line_text(name.span.line).split("#", 1)[0]
        column = name.span.column - 1
        fixed = (line[:column] + "on " + line[column:]).strip()
        self.bag.error(
            name.span,
            f"`on` is missing before the group name `{name.text}`",
            help=f"write `{fixed}`",
        )

    def _check_range(
        self,
        decl: ast.LayersDecl,
        num_layers: int | None,
        layouts: dict[str, dict[int, ast.LayersDecl]],
    ) -> bool:
        """Check a statement's range, and that no earlier statement of a layout it is in
        (`layouts`: the layers each has placed, by layout name) has placed its layers."""
        text = f"{decl.first}..{decl.last}"
        if decl.first > decl.last:
            self.bag.error(
                decl.range_span,
                f"layer range {text} is reversed, so it is empty",
                help=f"ranges go upwards: write `{decl.last}..{decl.first}`",
            )
            return False
        if num_layers is not None and decl.last >= num_layers:
            self.bag.error(
                decl.range_span,
                f"layer {decl.last} does not exist: the model has {num_layers} layers"
                f" (0..{num_layers - 1})",
                help="layers are numbered from 0; fix the range or the model's `layers`",
            )
            return False
        if decl.last >= MAX_LAYERS:  # the model is invalid, so its count is unknown
            self.bag.error(
                decl.range_span,
                f"layer {decl.last} does not exist: dagc handles at most {MAX_LAYERS:,} layers"
                f" (0..{MAX_LAYERS - 1})",
                help="layers are numbered from 0; fix the range",
            )
            return False
        reported: set[int] = set()  # an unflagged statement meets an earlier one once
        for layout, placed_by in layouts.items():
            overlap = [layer for layer in range(decl.first, decl.last + 1) if layer in placed_by]
            for other in dict.fromkeys(placed_by[layer] for layer in overlap):
                if id(other) in reported:
                    continue
                reported.add(id(other))
                self.bag.error(
                    decl.range_span,
                    f"{_layer_list([n for n in overlap if placed_by[n] is other])} already placed"
                    f" by the `layers` statement on line {other.span.line}"
                    + (f" in the {layout} layout" if layout else ""),
                    help="each layer is placed once"
                    + (" in each layout" if layout else "")
                    + ": split or shorten one of the ranges",
                    notes=[Note("placed here first", other.range_span)],
                )
        if reported:
            return False
        for placed_by in layouts.values():
            for layer in range(decl.first, decl.last + 1):
                placed_by[layer] = decl
        return True

    def _check_unplaced(
        self, num_layers: int, written: set[int], settings: Settings, layout: str = ""
    ) -> None:
        """Layers no statement places (in `layout`, when the program has two)."""
        missing = [layer for layer in range(num_layers) if layer not in written]
        if not missing:
            return
        for run in _runs(missing):
            text = str(run[0]) if run[0] == run[1] else f"{run[0]}..{run[1]}"
            self.bag.error(
                settings["layers"].span,
                f"{_layer_list(list(range(run[0], run[1] + 1)))} not placed on any GPUs"
                + (f" in the {layout} layout" if layout else ""),
                help=f"add `layers {text} on GROUP {layout + ' ' if layout else ''}{{ ... }}`",
            )

    def _lower_layers(
        self, decl: ast.LayersDecl, groups: dict[str, DeviceGroup], model: Model | None
    ) -> list[LayerRange]:
        if not decl.blocks:
            self.bag.warning(
                decl.range_span,
                f"this `layers` statement has no blocks, so"
                f" {_layers_text(decl.first, decl.last)}"
                f" {'runs' if decl.first == decl.last else 'run'} nothing",
                help="list the blocks each layer runs, e.g. `{ attention; mlp }`",
            )
        stage_groups = self._statement_groups(decl, groups)
        options = self._settings(decl.options, LAYERS_OPTIONS, "`layers` statement")
        if stage_groups is None:
            return []
        pp = self._pipeline_degree(decl, stage_groups, options)
        if pp is None:
            return []
        blocks = self._block_kinds(decl)
        ranges: list[LayerRange] = []
        # interleaving (virtual_stages = v) cuts the layers into pp·v chunks, chunk c on
        # stage c mod pp; without it each stage holds one chunk
        chunks = pp * self._chunks_per_stage(decl, pp, options)
        layer_counts = split_evenly(decl.last - decl.first + 1, chunks)
        first = decl.first
        for chunk, count in enumerate(layer_counts):  # stage groups repeat any diagnostics
            stage = chunk % pp
            last = first + count - 1
            stage_group = stage_groups[stage] if stage_groups else None
            # `embed` runs before the first layer and `lm_head` after the last, so only the
            # first chunk keeps `embed` and only the last keeps `lm_head`, as if each chunk
            # had been written as its own statement.
            stage_blocks = [
                (b, kind)
                for b, kind in blocks
                if not (kind is BlockKind.EMBED and chunk > 0)
                and not (kind is BlockKind.LM_HEAD and chunk < chunks - 1)
            ]
            if blocks and not stage_blocks:
                self.bag.warning(
                    decl.groups[stage].span,
                    f"stage {stage} of this pipeline ({_layers_text(first, last)}) runs no blocks",
                    help="`embed` runs only in the first stage and `lm_head` only in the last:"
                    " list the blocks each layer runs",
                )
            overlap = bool(options[OVERLAP].value) if OVERLAP in options else False
            placed = [
                self._resolve_block(b, kind, decl, stage_group, groups, model, overlap)
                for b, kind in stage_blocks
            ]
            if chunk == 0:  # every stage places its blocks alike: say it once
                self._routed_without_excursion([b for b, _ in stage_blocks], placed)
            if all(p is not None for p in placed):
                ranges.append(LayerRange(first, last, tuple(p for p in placed if p), decl.span))
            first = last + 1
        return ranges

    def _routed_without_excursion(
        self, decls: list[ast.BlockDecl], placed: list[Block | None]
    ) -> None:
        """`dispatch=routed` only changes a moe block reached from another group's block of
        the same layer (the excursion); anywhere else its tokens already go by all-to-all."""
        for index, (decl, block) in enumerate(zip(decls, placed, strict=True)):
            if block is None or block.dispatch is not MoeDispatch.ROUTED:
                continue
            before = placed[index - 1] if index > 0 else None
            if before is not None and before.group != block.group:
                continue
            option = next(o for o in decl.options if o.key.text == "dispatch")
            self.bag.warning(
                option.span,
                "`dispatch=routed` changes nothing here: this moe block's tokens are on its"
                " own GPUs, and it already dispatches them by all-to-all",
                help="remove it; routed dispatch is for a moe block on another group than the"
                " block before it (attention/MoE separation)",
            )

    def _statement_groups(
        self, decl: ast.LayersDecl, groups: dict[str, DeviceGroup]
    ) -> list[str] | None:
        names: list[str] = []
        ok = True
        for ident in decl.groups:
            if ident.text in names:
                ok = False
                self.bag.error(
                    ident.span,
                    f"group `{ident.text}` is listed twice",
                    help="a pipeline stage runs on one group; list each group once",
                )
            elif self._resolve_group(ident, groups):
                names.append(ident.text)
            else:
                ok = False
        return names if ok else None

    def _resolve_group(self, ident: ast.Ident, groups: dict[str, DeviceGroup]) -> bool:
        if ident.text in groups:
            return True
        declared = getattr(self, "group_decls", {})
        if ident.text in declared:
            return False  # declared but invalid: already reported
        hint = did_you_mean(ident.text, groups)
        self.bag.error(
            ident.span,
            f"unknown group `{ident.text}`",
            help=hint
            or (
                f"declared groups: {one_of(groups)}"
                if groups
                else "declare it in `devices { group NAME = gpu[...] }`"
            ),
        )
        return False

    def _pipeline_degree(
        self, decl: ast.LayersDecl, stage_groups: list[str], options: Settings
    ) -> int | None:
        count = len(stage_groups)
        pp_entry = options.get("pp")
        pp = pp_entry.value if pp_entry else None
        if count > 1 and pp is None:
            self.bag.error(
                decl.groups[1].span,
                f"{count} groups after `on` make a {count}-stage pipeline;"
                f" say so with `pp={count}`",
                help=f"write `on {', '.join(stage_groups)} pp={count}`",
            )
            return None
        if pp is not None and pp != max(count, 1):
            assert pp_entry is not None
            self.bag.error(
                pp_entry.span,
                f"pp={pp} needs {pp} groups after `on`, one per stage, but {count} "
                f"{'is' if count == 1 else 'are'} listed",
                help=f"list {pp} groups, e.g. `on {_stage_names(pp)} pp={pp}`",
            )
            return None
        pp = pp or 1
        layers = decl.last - decl.first + 1
        if pp > layers:
            assert pp_entry is not None
            self.bag.error(
                pp_entry.span,
                f"pp={pp} stages cannot share {layers} layer{'s' if layers > 1 else ''}",
                help="each stage needs at least one layer: lower pp or widen the range",
            )
            return None
        interleaved = self.virtual_stages > 1 and pp * self.virtual_stages <= layers
        if layers % pp and not interleaved:  # interleaving warns about its chunks instead
            assert pp_entry is not None
            sizes = split_evenly(layers, pp)
            big = sizes.count(sizes[0])
            self.bag.warning(
                pp_entry.span,
                f"{layers} layers do not split evenly over pp={pp}:"
                f" {_get('stage', 0, big - 1, f'{sizes[0]} layers')},"
                f" {_get('stage', big, pp - 1, str(sizes[-1]))}",
                help=f"the stages with the most layers set the pace; a pp dividing {layers}"
                " splits evenly, or write one `layers` statement per stage to choose the split",
            )
        return pp

    def _chunks_per_stage(self, decl: ast.LayersDecl, pp: int, options: Settings) -> int:
        """v, the chunks each stage of a pipelined statement runs (`virtual_stages`), or 1.

        The same diagnostics as pp's: fewer layers than pp·v chunks is an error (v falls
        back to 1), layers not dividing into them a warning; interleaving also needs the
        micro-batches to fill whole rounds of pp (Megatron-LM's rule).
        """
        virtual = self.virtual_stages
        if virtual <= 1 or pp <= 1:
            return 1
        span = options["pp"].span
        layers = decl.last - decl.first + 1
        chunks = pp * virtual
        if chunks > layers:
            self.bag.error(
                span,
                f"pp={pp} with virtual_stages={virtual} cuts {_layers_text(decl.first, decl.last)}"
                f" into {chunks} chunks, but there {'is' if layers == 1 else 'are'} only"
                f" {layers} layer{'s' if layers > 1 else ''}",
                help="each chunk needs at least one layer: lower virtual_stages or pp",
            )
            return 1
        if layers % chunks:
            sizes = split_evenly(layers, chunks)
            big = sizes.count(sizes[0])
            self.bag.warning(
                span,
                f"{layers} layers do not split evenly into pp·virtual_stages = {chunks} chunks:"
                f" {_get('chunk', 0, big - 1, f'{sizes[0]} layers')},"
                f" {_get('chunk', big, chunks - 1, str(sizes[-1]))}",
                help=f"the chunks with the most layers set the pace; pp·virtual_stages dividing"
                f" {layers} splits evenly",
            )
        microbatches = self.microbatches
        if microbatches is not None and microbatches % pp:
            self.bag.error(
                span,
                f"the interleaved schedule runs micro-batches in rounds of pp={pp}, but"
                f" microbatches={microbatches} is not a multiple of {pp}",
                help=f"use a multiple of {pp} micro-batches (as Megatron-LM requires), or"
                " remove `virtual_stages`",
            )
        return virtual

    def _block_kinds(self, decl: ast.LayersDecl) -> list[tuple[ast.BlockDecl, BlockKind]]:
        """Known, non-duplicate block kinds of a statement, in order."""
        result: list[tuple[ast.BlockDecl, BlockKind]] = []
        seen: dict[BlockKind, ast.BlockDecl] = {}
        for block in decl.blocks:
            kind = BLOCK_KINDS.get(block.kind.text)
            if kind is None:
                self.bag.error(
                    block.kind.span,
                    f"unknown block kind `{block.kind.text}`",
                    help=did_you_mean(block.kind.text, BLOCK_KINDS)
                    or f"blocks are {one_of(BLOCK_KINDS)}",
                )
                continue
            if kind in seen:
                self.bag.error(
                    block.kind.span,
                    f"duplicate `{kind.value}` block in one layer",
                    help="a layer runs each kind of block once; remove one",
                    notes=[Note("first here", seen[kind].kind.span)],
                )
                continue
            seen[kind] = block
            result.append((block, kind))
        if BlockKind.MLP in seen and BlockKind.MOE in seen:
            self.bag.error(
                seen[BlockKind.MOE].kind.span,
                "a layer has either an `mlp` or a `moe` block, not both",
                help="remove one of them",
                notes=[Note("the mlp block is here", seen[BlockKind.MLP].kind.span)],
            )
        self._check_block_order(decl, result)
        return result

    def _check_block_order(
        self, decl: ast.LayersDecl, blocks: list[tuple[ast.BlockDecl, BlockKind]]
    ) -> None:
        num_layers = self._model_layers()
        for index, (block, kind) in enumerate(blocks):
            if kind is BlockKind.EMBED:
                if index != 0:
                    self.bag.error(
                        block.kind.span,
                        "`embed` must be the first block",
                        help="move it to the top of the block list",
                    )
                if decl.first != 0:
                    self.bag.error(
                        block.kind.span,
                        "`embed` runs before layer 0, but this range starts at layer "
                        + str(decl.first),
                        help="move `embed` to the statement that places layer 0",
                    )
            if kind is BlockKind.LM_HEAD:
                if index != len(blocks) - 1:
                    self.bag.error(
                        block.kind.span,
                        "`lm_head` must be the last block",
                        help="move it to the end of the block list",
                    )
                if num_layers is not None and decl.last != num_layers - 1:
                    self.bag.error(
                        block.kind.span,
                        f"`lm_head` runs after the last layer ({num_layers - 1}),"
                        f" but this range ends at layer {decl.last}",
                        help="move `lm_head` to the statement that places the last layer",
                    )

    def _model_layers(self) -> int | None:
        if self.model_section is None:
            return None
        for setting in self.model_section.settings:
            if (
                setting.key.text == "layers"
                and setting.value
                and isinstance(setting.value.value, int)
                and setting.value.value > 0  # an invalid count is reported already
            ):
                return setting.value.value
        return None

    def _resolve_block(
        self,
        block: ast.BlockDecl,
        kind: BlockKind,
        decl: ast.LayersDecl,
        stage_group: str | None,
        groups: dict[str, DeviceGroup],
        model: Model | None,
        statement_overlap: bool = False,
    ) -> Block | None:
        options = self._settings(
            self._without_moe_dp(block, kind), BLOCK_OPTIONS[kind], f"`{kind.value}` block", kind
        )
        vocab_parallel = (
            bool(options["vocab_parallel"].value) if "vocab_parallel" in options else False
        )
        overlap = self._block_overlap(kind, options, statement_overlap, vocab_parallel)
        group_name = self._block_group(block, kind, decl, stage_group, groups)
        ok = self._check_model_needs(block, kind, model)
        if group_name is None or model is None or not ok:
            return None
        group = groups[group_name]
        dp = self._block_dp(block, kind, options, group, vocab_parallel)
        if dp is None:
            return None
        degree = self._degree(block, kind, options, group, model, dp)
        if degree is None:
            return None
        fused = bool(options["fused_qkv"].value) if "fused_qkv" in options else False
        kernel, mask = self._attention_kernel(kind, options, model)
        if kernel is None or mask is None:
            return None
        dispatch = MoeDispatch(options["dispatch"].value) if "dispatch" in options else None
        return Block(
            kind,
            group_name,
            degree,
            fused,
            overlap,
            kernel=kernel,
            mask=mask,
            dispatch=dispatch or MoeDispatch.BROADCAST,
            vocab_parallel=vocab_parallel,
            dp=dp,
            span=block.span,
        )

    def _attention_kernel(
        self, kind: BlockKind, options: Settings, model: Model
    ) -> tuple[AttentionKernel | None, AttentionMask | None]:
        """The block's kernel and mask: its own options, else the model's defaults. A fused
        kernel cannot take heads larger than FlashAttention-style kernels handle."""
        if kind is not BlockKind.ATTENTION:
            return AttentionKernel.EXPLICIT, AttentionMask.FULL
        entry = options.get("kernel")
        kernel = AttentionKernel(entry.value) if entry else model.attention_kernel
        mask_entry = options.get("mask")
        mask = AttentionMask(mask_entry.value) if mask_entry else model.attention_mask
        largest = max(model.head_dim or 0, model.value_head_dim or 0)
        if kernel is AttentionKernel.FUSED and largest > MAX_FUSED_HEAD_DIM:
            where = entry.span if entry else self._model_key_span("attention_kernel")
            self.bag.error(
                where,
                f"a fused attention kernel handles heads of at most {MAX_FUSED_HEAD_DIM},"
                f" but this model's heads are {largest} wide",
                help="write `kernel=explicit` on this block (products and softmax, with the"
                " scores in memory), or check `head_dim`",
            )
            return None, mask
        return kernel, mask

    def _model_key_span(self, key: str) -> Span | None:
        """Where the model section sets `key`, if it does."""
        for setting in self.model_section.settings if self.model_section else ():
            if setting.key.text == key:
                return setting.value.span if setting.value else setting.key.span
        return None

    def _block_overlap(
        self, kind: BlockKind, options: Settings, statement: bool, vocab_parallel: bool
    ) -> bool:
        """The block's `overlap`: its own setting, else its `layers` statement's (which
        skips an `embed` that never communicates: one without `vocab_parallel`)."""
        silent = kind is BlockKind.EMBED and not vocab_parallel
        entry = options.get(OVERLAP)
        if entry is None:
            return statement and not silent
        if silent:
            assert entry.setting is not None
            self.bag.error(
                entry.setting.key.span,
                "`overlap` means nothing on `embed`: it has no communication to overlap",
                help="remove it; `overlap` on the next block moves the transfer into that"
                " block (a `vocab_parallel` embed has an all-reduce to overlap)",
            )
            return False
        return bool(entry.value)

    def _block_group(
        self,
        block: ast.BlockDecl,
        kind: BlockKind,
        decl: ast.LayersDecl,
        stage_group: str | None,
        groups: dict[str, DeviceGroup],
    ) -> str | None:
        if block.group is not None:
            if len(decl.groups) > 1:
                self.bag.error(
                    block.group.span,
                    "a block of a pipelined `layers` statement runs on its stage's group",
                    help=f"remove `on {block.group.text}`, or place these layers with their own"
                    " `layers` statement",
                )
                return None
            return block.group.text if self._resolve_group(block.group, groups) else None
        if stage_group is None and not decl.groups:
            self.bag.error(
                block.kind.span,
                f"`{kind.value}` is placed on no group",
                help=f"write `{kind.value} on GROUP`, or `layers {decl.first}..{decl.last} on"
                " GROUP { ... }`",
            )
            return None
        return stage_group

    def _check_model_needs(
        self, block: ast.BlockDecl, kind: BlockKind, model: Model | None
    ) -> bool:
        if model is None:
            return False
        missing = [key for key in BLOCK_NEEDS[kind] if getattr(model, key) is None]
        for key in missing:
            self.bag.error(
                block.kind.span,
                f"`{kind.value}` needs `{key}` ({MODEL_KEYS[key].meaning}) in the model",
                help=f"add `{key} = ...` to `model {model.name}`",
                notes=[Note("the model is here", self.model_section.span)]
                if self.model_section
                else [],
            )
        return not missing

    def _without_moe_dp(self, block: ast.BlockDecl, kind: BlockKind) -> list[ast.Setting]:
        """A block's options, less a `dp` on a moe block (reported here, with its own help
        rather than as an unknown key)."""
        options = list(block.options)
        if kind is not BlockKind.MOE:
            return options
        for option in options:
            if option.key.text == DP:
                self.bag.error(
                    option.key.span,
                    "a moe block has no data-parallel replicas",
                    help="experts are split over the group with ep; dp is for attention, mlp,"
                    " embed, lm_head",
                )
        return [option for option in options if option.key.text != DP]

    def _block_dp(
        self,
        block: ast.BlockDecl,
        kind: BlockKind,
        options: Settings,
        group: DeviceGroup,
        vocab_parallel: bool,
    ) -> int | None:
        """The block's `dp` (1 when not written); None after an error. A replica is one GPU
        (tp = 1), so dp > 1 needs a group of tp·dp GPUs with tp = 1; each replica needs at
        least one sequence of every micro-batch."""
        entry = options.get(DP)
        if entry is None:
            return 1
        dp: int = entry.value
        self.dp_spans[block.span] = entry.span
        key, size = kind.degree_key, group.size
        degree_entry = options.get(key) if key else None
        if self.training is not None and dp > 1:
            self.bag.error(
                entry.span,
                f"dp={dp} on a block replicates it for inference; a training program"
                " replicates its whole layout",
                help=f"remove `dp={dp}`: the training section's `dp` makes data-parallel"
                " replicas of the whole layout",
            )
            return None
        if degree_entry is not None:
            tp = degree_entry.value
            if tp * dp != size:
                self.bag.error(
                    entry.span,
                    f"{key}={tp} × dp={dp} is {tp * dp} GPUs, but group `{group.name}` has {size}",
                    help=f"a block's group holds {key}·dp GPUs: write `{key}=1 dp={size}` for"
                    f" {size} replicas of one GPU, or `{key}={size}` without `dp`",
                )
                return None
        elif size % dp:
            self.bag.error(
                entry.span,
                f"dp={dp} does not divide group `{group.name}` ({size} GPUs)",
                help=f"a replica is one GPU of the group: write `dp={size}`"
                + (f", or `{key}={size}` without `dp`" if key else ""),
            )
            return None
        else:
            tp = size // dp
        if dp > 1 and tp > 1:
            self.bag.error(
                entry.span,
                f"dp={dp} over {size} GPUs makes replicas of {tp} GPUs each",
                help="attention data parallelism with tensor-parallel replicas is not modelled"
                + (
                    f" yet; write tp = 1: `{key}=1 dp={size}`"
                    if key
                    else f" yet: write `dp={size}`"
                )
                + f" ({size} replicas of one GPU)"
                + (f", or `{key}={size}` without `dp`" if key else ""),
            )
            return None
        if dp > 1 and kind is BlockKind.EMBED and vocab_parallel:
            self.bag.error(
                entry.span,
                f"`vocab_parallel` splits the table over a replica's GPUs, but each of the dp={dp}"
                " replicas is one GPU",
                help="remove `vocab_parallel` (each GPU then holds the whole table) or `dp`",
            )
            return None
        bm = self.microbatch_size
        if bm is not None and bm < dp:
            m = self.microbatches or 1
            self.bag.error(
                entry.span,
                f"dp={dp} replicas need {dp} sequences per micro-batch, but a micro-batch"
                f" holds {bm}: a replica would run without sequences",
                help=f"each replica needs at least one sequence: write `batch = {dp * m}` or"
                " more" + (", or fewer `microbatches`" if m > 1 else ""),
            )
            return None
        if bm is not None and bm % dp and group.name not in self.dp_uneven:
            self.dp_uneven.add(group.name)  # once per group: its blocks share the replicas
            sizes = split_evenly(bm, dp)
            big = sizes.count(sizes[0])
            self.bag.warning(
                entry.span,
                f"a micro-batch's {bm} sequences do not split evenly over dp={dp} replicas:"
                f" {_get('replica', 0, big - 1, f'{sizes[0]} sequences')},"
                f" {_get('replica', big, dp - 1, str(sizes[-1]))}",
                help="the replicas with the most sequences set the pace; a micro-batch of a"
                f" multiple of {dp} sequences splits evenly",
            )
        return dp

    def _degree(
        self,
        block: ast.BlockDecl,
        kind: BlockKind,
        options: Settings,
        group: DeviceGroup,
        model: Model,
        dp: int = 1,
    ) -> int | None:
        key = kind.degree_key
        size = group.size
        if key is None:
            return 1
        entry = options.get(key)
        degree = entry.value if entry else size // dp  # `_block_dp` checked tp·dp = |G|
        span = entry.span if entry else block.kind.span
        if degree * dp != size:
            relation = "larger than" if degree > size else "smaller than"
            self.bag.error(
                span,
                f"{key}={degree} is {relation} group `{group.name}` ({size} GPUs)",
                help=self._degree_help(kind, key, degree, size),
            )
            return None
        if kind is BlockKind.MOE:
            return self._check_ep(span, degree, model)
        return self._check_tp(span, kind, degree, model)

    def _degree_help(self, kind: BlockKind, key: str, degree: int, size: int) -> str:
        """The help for a degree that is not its group's size (and no `dp`)."""
        fix = (
            f"{key} must equal the group's size: write `{key}={size}` or use a group of"
            f" {degree} GPUs"
        )
        if kind is BlockKind.MOE:
            return fix + " (a moe block splits its experts over its whole group)"
        if degree > size or self.training is not None:
            return fix
        return (
            f"{key} must equal the group's size: write `{key}={size}`, use a group of"
            f" {degree} GPUs, or make {size} data-parallel replicas: `{key}=1 dp={size}`"
        )

    def _check_ep(self, span: Span | None, ep: int, model: Model) -> int | None:
        assert model.experts is not None
        if model.experts % ep:
            divisors = [d for d in range(1, model.experts + 1) if model.experts % d == 0]
            self.bag.error(
                span,
                f"ep={ep} does not divide the {model.experts} experts",
                help="each GPU holds the same number of experts: use a group size in"
                f" {', '.join(map(str, divisors))}",
            )
            return None
        return ep

    def _check_tp(self, span: Span | None, kind: BlockKind, tp: int, model: Model) -> int | None:
        for what, count in self._split_items(kind, model):
            if tp > count:
                self.bag.error(
                    span,
                    f"tp={tp} leaves GPUs without work: {count} {what} over {tp} GPUs",
                    help=f"use at most {count} GPUs for this block",
                )
                return None
            if count % tp:
                sizes = split_evenly(count, tp)
                big = sizes.count(sizes[0])
                self.bag.warning(
                    span,
                    f"{count} {what} do not split evenly over tp={tp}:"
                    f" {_get('rank', 0, big - 1, sizes[0])},"
                    f" {_get('rank', big, tp - 1, sizes[-1])}",
                    help=f"the busiest rank sets the pace; a tp dividing {count} balances the work",
                )
        if kind is BlockKind.ATTENTION:
            self._check_kv_split(span, tp, model)
        return tp

    def _check_kv_split(self, span: Span | None, tp: int, model: Model) -> None:
        kv = model.kv_heads
        assert kv is not None
        if kv != model.heads and kv >= tp and kv % tp:
            sizes = split_evenly(kv, tp)
            self.bag.warning(
                span,
                f"{kv} kv_heads do not split evenly over tp={tp}: ranks get {sizes[0]} or"
                f" {sizes[-1]}",
                help=f"a tp dividing {kv} balances the key/value projections",
            )

    @staticmethod
    def _split_items(kind: BlockKind, model: Model) -> list[tuple[str, int]]:
        return BLOCK_MODULES[kind].split_items(model)


def _shown(number: float) -> str:
    """A number as written, or its size when it is too long to show (`a 161-digit number`)."""
    text = str(number)
    if isinstance(number, int) and len(text) > 24:
        return f"a {len(text)}-digit number"
    return text


def _meant_key(key: str, schema: dict[str, KeySpec]) -> str | None:
    """The key of `schema` that an unknown `key` stands for: another tool's name, or a typo."""
    if key in UNSUPPORTED_KEYS:
        return None
    alias = KEY_ALIASES.get(key)
    if alias in schema:
        return alias
    return closest(key, schema)


def _choice_help(key: str, value: str, choices: tuple[str, ...]) -> str:
    """The help for a value that is not one of a choice key's values."""
    alias = VALUE_ALIASES.get(key, {}).get(value.lower())
    if alias in choices or value.lower() in choices:
        return f"did you mean `{alias or value.lower()}`?"
    stand_in = VALUE_STAND_INS.get(key, {}).get(value.lower())
    if stand_in in choices:
        return (
            f"`{value}` is not supported yet, but `{stand_in}` costs the same:"
            f" write `{key} = {stand_in}`"
        )
    if key == "gpu":
        # GPU names one letter apart are different chips (b200, h200): no did-you-mean.
        return (
            "for another GPU, start from a preset and give its figures in `devices`, e.g."
            " `gpu = h200; peak_flops = ...; hbm_bandwidth = ...; memory_bytes = ...`"
            " (docs/cost-models.md lists them)"
        )
    return did_you_mean(value, choices) or f"write `{key} = {choices[0]}`"


def _kind_span(block: Block) -> Span | None:
    """Where a placed block's kind is written (its declaration starts with it)."""
    if block.span is None:
        return None
    return Span.point(block.span.line, block.span.column, len(block.kind.value))


def _stage_boundaries(
    ranges: list[LayerRange], num_layers: int | None
) -> Iterable[tuple[Block, Block]]:
    """The (block before, block after) pairs of a layout where the tokens move to another
    group for good: a block on another group than the last block that was no moe excursion.
    An excursion is a moe block on another group than the block before it in its layer (its
    result returns). Only adjacent ranges are followed (a missing range is reported)."""
    home: Block | None = None
    previous_range: LayerRange | None = None
    for layer_range in ranges:
        if previous_range is not None and previous_range.last + 1 != layer_range.first:
            home = None
        previous_range = layer_range
        # layers of a range run the same blocks, but `embed` (layer 0 only) and `lm_head`
        # (the last layer only): the first three layers and the last show every move
        first, last = layer_range.first, layer_range.last
        layers = sorted({first, min(first + 1, last), min(first + 2, last), last})
        for layer in layers:
            previous: Block | None = None  # the block before, in this layer
            for block in layer_range.blocks:
                if block.kind is BlockKind.EMBED and layer != 0:
                    continue
                if block.kind is BlockKind.LM_HEAD and (
                    num_layers is None or layer != num_layers - 1
                ):
                    continue
                excursion = (
                    block.kind is BlockKind.MOE
                    and previous is not None
                    and previous.group != block.group
                )
                if excursion:
                    continue
                if home is not None and home.group != block.group:
                    yield home, block
                home = previous = block


def _key_span(entry: _Entry) -> Span | None:
    """Where the key of a checked setting is written (the setting's span, if it has none)."""
    return entry.setting.key.span if entry.setting else entry.span


def _mode_key_help(key: str, owner: Mode, mode: Mode) -> str:
    """The help for a workload key of mode `owner` written in a workload of mode `mode`."""
    if mode is Mode.SERVE and key == "context":
        return (
            "a serve workload's decode steps run at contexts input+1 ... input+output-1:"
            " remove `context`, or write `mode = decode` for one decode step"
        )
    if mode is Mode.DECODE and key in ("input", "output"):
        return f"write `mode = serve` for a prefill and its decode steps, or remove `{key}`"
    return f"add `mode = {owner.value}` to the workload, or remove `{key}`"


def _getter(settings: Settings) -> Callable[[str], Any]:
    def get(key: str) -> Any:
        entry = settings.get(key)
        return entry.value if entry else None

    return get


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted integers as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _get(noun: str, first: int, last: int, count: object) -> str:
    """`rank 0 gets 3`, `stages 13-15 get 3 layers`: what a run of ranks, stages, replicas
    or chunks gets from an uneven split."""
    if first == last:
        return f"{noun} {first} gets {count}"
    return f"{noun}s {first}-{last} get {count}"


def _layers_text(first: int, last: int) -> str:
    """`layer 3` or `layers 0..1`."""
    return f"layer {first}" if first == last else f"layers {first}..{last}"


def _stage_names(count: int) -> str:
    """`stage0, stage1`, shortened with `...` beyond four stages."""
    if count <= 4:
        return ", ".join(f"stage{i}" for i in range(count))
    return f"stage0, stage1, ..., stage{count - 1}"


def _layer_list(layers: list[int]) -> str:
    if len(layers) == 1:
        return f"layer {layers[0]} is"
    return f"layers {layers[0]}..{layers[-1]} are"
