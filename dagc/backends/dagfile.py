"""A checked logical Program written back as a `.dag` file (`dagc lower --emit dag`).

`program_to_dag(program)` gives a file that compiles (`dagc.compile_text`) to a Program
equal to `program`, for every program the front end can produce: the model's keys whose
values differ from their defaults, the workload in its mode's keys, the training section,
the devices (roofline overrides written so that they parse back to the same floats), the
groups under the Program's names, and one `layers` statement per LayerRange with every
block's options. A disaggregated serve's two layouts carry the `prefill` and `decode`
flags. The text is deterministic: equal programs print alike.

The pipeline sugar (`pp=`) is not used: a Program keeps no trace of it, and one statement
per range says exactly where each layer runs. `dagc search` writes its best layout with
this function.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from dagc.hardware import DEFAULT_GPU, DEFAULT_NODE_SIZE
from dagc.ir.logical import (
    Activation,
    AttentionKernel,
    AttentionMask,
    Block,
    BlockKind,
    DType,
    LayerRange,
    Mode,
    Model,
    MoeDispatch,
    Program,
    Recompute,
    Schedule,
    Training,
    Workload,
    format_gpus,
)

HEADER = "# written by dagc from a checked program: one `layers` statement per layer range"

Setting = tuple[str, str]


def program_to_dag(program: Program) -> str:
    """The `.dag` text of `program`; compiling it gives back an equal Program.

    Raises ValueError for the prefill phase of a disaggregated serve (`kv_handoff`), which
    the analyses derive from a serve program and no file describes.
    """
    if program.kv_handoff:
        raise ValueError(
            "the prefill phase of a disaggregated serve has no .dag file: write the serve"
            " program it comes from"
        )
    sections = [
        _section(f"model {program.model.name}", _model_settings(program.model)),
        _section("workload", _workload_settings(program.workload)),
    ]
    if program.training is not None:
        sections.append(_section("training", _training_settings(program.training)))
    sections.append(_devices(program))
    flag = " prefill" if program.decode_ranges else ""
    model = program.model
    sections += [_statement(r, flag, model) for r in program.ranges]
    sections += [_statement(r, " decode", model) for r in program.decode_ranges]
    return "\n\n".join([HEADER, *sections]) + "\n"


# -- sections -------------------------------------------------------------------------------


def _section(header: str, settings: Sequence[Setting], extra: Sequence[str] = ()) -> str:
    """`header { ... }` with one `key = value` per line, the `=` signs aligned."""
    width = max((len(key) for key, _ in settings), default=0)
    lines = [f"  {key:<{width}} = {value}" for key, value in settings]
    return "\n".join([f"{header} {{", *lines, *extra, "}"])


def _model_settings(m: Model) -> list[Setting]:
    latent = m.latent_attention
    out: list[Setting] = [("layers", _int(m.layers)), ("hidden", _int(m.hidden))]
    if m.heads is not None:
        out.append(("heads", _int(m.heads)))
        # under MLA a head's sizes come from the MLA keys, and every head has its own K, V
        default_dim = m.hidden // m.heads if m.hidden % m.heads == 0 else None
        if not latent and m.head_dim is not None and m.head_dim != default_dim:
            out.append(("head_dim", _int(m.head_dim)))
        if not latent and m.kv_heads is not None and m.kv_heads != m.heads:
            out.append(("kv_heads", _int(m.kv_heads)))
    if latent:
        if m.q_lora_rank is not None:
            out.append(("q_lora_rank", _int(m.q_lora_rank)))
        out += [
            ("kv_lora_rank", _int(_given(m.kv_lora_rank))),
            ("qk_nope_head_dim", _int(_given(m.qk_nope_head_dim))),
            ("qk_rope_head_dim", _int(_given(m.qk_rope_head_dim))),
            ("v_head_dim", _int(_given(m.v_head_dim))),
        ]
    if m.attention_kernel is not AttentionKernel.EXPLICIT:
        out.append(("attention_kernel", m.attention_kernel.value))
    if m.attention_mask is not AttentionMask.FULL:
        out.append(("attention_mask", m.attention_mask.value))
    out += _flags(("qkv_bias", m.qkv_bias), ("o_bias", m.o_bias), ("qk_norm", m.qk_norm))
    if m.ffn is not None:
        out.append(("ffn", _int(m.ffn)))
    if m.activation is not Activation.GELU:
        out.append(("activation", m.activation.value))
    if m.experts is not None:
        out += _moe_settings(m, m.experts)
    if m.vocab is not None:
        out.append(("vocab", _int(m.vocab)))
    out += _flags(("tied_embeddings", m.tied_embeddings))
    for key, probability in (
        ("attention_dropout", m.attention_dropout),
        ("hidden_dropout", m.hidden_dropout),
    ):
        if probability:
            out.append((key, _number(probability)))
    return out


def _moe_settings(m: Model, experts: int) -> list[Setting]:
    """The keys that mean something only with `experts` (written after it)."""
    out: list[Setting] = [("experts", _int(experts))]
    if m.top_k is not None:
        out.append(("top_k", _int(m.top_k)))
    if m.expert_ffn is not None and m.expert_ffn != m.ffn:  # it defaults to ffn
        out.append(("expert_ffn", _int(m.expert_ffn)))
    if m.capacity_factor != 1.0:
        out.append(("capacity_factor", _number(m.capacity_factor)))
    out += _flags(("router_bias", m.router_bias))
    if m.shared_experts is not None:
        out.append(("shared_experts", _int(m.shared_experts)))
        if m.shared_expert_ffn is not None and m.shared_expert_ffn != m.expert_ffn:
            out.append(("shared_expert_ffn", _int(m.shared_expert_ffn)))
        out += _flags(("shared_expert_gate", m.shared_expert_gate))
    return out


def _workload_settings(w: Workload) -> list[Setting]:
    out: list[Setting] = []
    if w.mode is not Mode.PREFILL:
        out.append(("mode", w.mode.value))
    out.append(("batch", _int(w.batch)))
    if w.mode is Mode.PREFILL:
        out.append(("seq", _int(w.seq)))
    elif w.mode is Mode.DECODE:
        out.append(("context", _int(_given(w.context))))
    else:  # SERVE: `seq` is the input length I
        out += [("input", _int(w.seq)), ("output", _int(_given(w.output)))]
    if w.dtype is not DType.BF16:
        out.append(("dtype", w.dtype.value))
    if w.microbatches != 1:  # per replica: B / (m·dp) sequences per micro-batch
        out.append(("microbatches", _int(w.microbatches)))
    return out


def _training_settings(t: Training) -> list[Setting]:
    out: list[Setting] = []
    if t.dp != 1:
        out.append(("dp", _int(t.dp)))
    if t.schedule is not Schedule.ONE_F_ONE_B:
        out.append(("schedule", t.schedule.value))
    if t.virtual_stages != 1:
        out.append(("virtual_stages", _int(t.virtual_stages)))
    if t.recompute is not Recompute.NONE:
        out.append(("recompute", t.recompute.value))
    out += _flags(("sequence_parallel", t.sequence_parallel))
    if t.zero:
        out.append(("zero", str(t.zero)))
    out += _flags(("grad_overlap", t.grad_overlap))
    return out


def _devices(program: Program) -> str:
    hw = program.hardware
    settings: list[Setting] = []
    if hw.gpu != DEFAULT_GPU:
        settings.append(("gpu", hw.gpu))
    if hw.node_size != DEFAULT_NODE_SIZE:
        settings.append(("node_size", _int(hw.node_size)))
    settings += _flags(("split_sends", hw.split_sends))
    settings += [(key, _number(value)) for key, value in sorted(hw.overrides.items())]
    width = max((len(g.name) for g in program.groups), default=0)
    groups = [f"  group {g.name:<{width}} = {format_gpus(g.gpus)}" for g in program.groups]
    return _section("devices", settings, groups)


# -- layers statements ----------------------------------------------------------------------


def _statement(layer_range: LayerRange, flag: str, model: Model) -> str:
    """`layers A..B on G FLAG { ... }`: G is the group most of the blocks run on (the first
    such in block order); a block on another group says `on` its own."""
    first, last = layer_range.first, layer_range.last
    span = str(first) if first == last else f"{first}..{last}"
    counts = Counter(block.group for block in layer_range.blocks)
    group = max(counts, key=lambda name: counts[name]) if counts else None
    on = f" on {group}" if group is not None else ""
    if not layer_range.blocks:
        return f"layers {span}{on}{flag} {{ }}"
    lines = [f"  {_block(block, group, model)}" for block in layer_range.blocks]
    return "\n".join([f"layers {span}{on}{flag} {{", *lines, "}"])


def _block(block: Block, statement_group: str | None, model: Model) -> str:
    """A block with its options: the degree (`tp=`, `ep=`) always, then those that differ
    from their defaults (an attention block's `kernel` and `mask`: the model's)."""
    words = [block.kind.value]
    if block.group != statement_group:
        words.append(f"on {block.group}")
    key = block.kind.degree_key
    if key is not None:
        words.append(f"{key}={block.degree}")
    if block.dp != 1:
        words.append(f"dp={block.dp}")
    if block.kind is BlockKind.ATTENTION:
        if block.kernel is not model.attention_kernel:
            words.append(f"kernel={block.kernel.value}")
        if block.mask is not model.attention_mask:
            words.append(f"mask={block.mask.value}")
    if block.fused_qkv:
        words.append("fused_qkv")
    if block.dispatch is not MoeDispatch.BROADCAST:
        words.append(f"dispatch={block.dispatch.value}")
    if block.vocab_parallel:
        words.append("vocab_parallel")
    if block.overlap:
        words.append("overlap")
    return " ".join(words)


# -- values ---------------------------------------------------------------------------------


def _flags(*flags: tuple[str, bool]) -> list[Setting]:
    """The flags that are on, as settings (`key = true`; a section's settings need values)."""
    return [(key, "true") for key, on in flags if on]


def _int(value: int) -> str:
    """An integer, its thousands grouped by `_` from 10,000 on (`128_256`), as people write
    vocabulary and inner sizes."""
    return f"{value:_}" if value >= 10_000 else str(value)


def _number(value: float) -> str:
    """The shortest text that reads back as exactly `value` (`0.85`, `2.2e15`), with a
    decimal point or an exponent, so that the file says it is a number."""
    for digits in range(1, 18):
        text = f"{value:.{digits}g}"
        if float(text) == value:
            break
    else:  # pragma: no cover - 17 significant digits always round-trip a double
        text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e:  # `2e+11` as `2e11`, `1e-05` as `1e-5`
        return f"{mantissa}e{int(exponent)}"
    return text if "." in text else f"{text}.0"


def _given(value: int | None) -> int:
    if value is None:  # the IR's checks make it set wherever this is called
        raise ValueError("a key the program's mode or MLA needs is unset")
    return value
