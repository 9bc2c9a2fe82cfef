"""The logical IR: a checked model, workload, device groups and per-range block placement.

Values check themselves on construction, so an invalid IR cannot be built. The printer
(`print_program`, also `str(program)`) is deterministic and serves `--emit ir` and golden
tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from dagc.source import Span


class Activation(enum.Enum):
    GELU = "gelu"
    SWIGLU = "swiglu"


class AttentionKernel(enum.Enum):
    """How attention's core runs: explicit products and softmax with the S×S scores in
    memory (the seed's), or one fused FlashAttention-style kernel that never stores them."""

    EXPLICIT = "explicit"
    FUSED = "fused"


class AttentionMask(enum.Enum):
    """Which keys a query sees: all of the sequence (the seed's), or those up to its own
    position (causal: S·(S+1)/2 score entries per head and sequence)."""

    FULL = "full"
    CAUSAL = "causal"


class MoeDispatch(enum.Enum):
    """How a moe block on another group than its input gets its tokens.

    BROADCAST: every token to every MoE GPU, the gate on the MoE side (the seed's).
    ROUTED: ln2 and the gate run on the sending side, each token goes only to the GPUs of
    its top-k experts (M:N dispatch)."""

    BROADCAST = "broadcast"
    ROUTED = "routed"


class Schedule(enum.Enum):
    """The pipeline schedule of a training step (program order on each stage's GPUs)."""

    GPIPE = "gpipe"
    ONE_F_ONE_B = "1f1b"
    INTERLEAVED = "interleaved"  # 1F1B over v virtual stages (model chunks) per GPU
    ZB_H1 = "zb_h1"  # zero bubble: weight gradients deferred into the bubbles


class Recompute(enum.Enum):
    """Activation recomputation, as Megatron-LM offers it."""

    NONE = "none"
    SELECTIVE = "selective"  # attention's core (scores, softmax, weights·V) rerun in backward
    FULL = "full"  # a layer's whole forward rerun before its backward


class Mode(enum.Enum):
    """What the workload runs (docs/serving.md).

    PREFILL: one forward pass over B sequences of S tokens (the default, the seed's).
    DECODE: one decode step: B sequences, one new token each, attending over C keys.
    SERVE: prefill of `seq` (the input length I) tokens, then the decode steps that
    generate the rest of `output` (O) tokens, the context growing from I+1 to I+O−1.
    """

    PREFILL = "prefill"
    DECODE = "decode"
    SERVE = "serve"


class DType(enum.Enum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"
    FP8 = "fp8"

    @property
    def bytes(self) -> int:
        """Bytes per element (w in the semantics)."""
        return {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}[self.value]


class BlockKind(enum.StrEnum):
    """The blocks a .dag file places (the front end accepts exactly these names).

    A StrEnum, so that it prints and serialises as its value, as the step IR's kinds did
    when they were plain strings.
    """

    EMBED = "embed"
    ATTENTION = "attention"
    MLP = "mlp"
    MOE = "moe"
    LM_HEAD = "lm_head"

    @property
    def degree_key(self) -> str | None:
        """The option that sets this block's parallel degree (`tp`, `ep`), if any."""
        return {"attention": "tp", "mlp": "tp", "lm_head": "tp", "moe": "ep"}.get(self.value)


def _require_positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if value is not None and value <= 0:
            raise ValueError(f"{type(owner).__name__}.{name} must be positive, got {value}")


@dataclass(frozen=True, slots=True)
class Model:
    """Model dimensions (symbols of the semantics: L, H, nh, d, nkv, F, E, k, Fe, V).

    Multi-head latent attention (MLA) is on when `kv_lora_rank` is set: then `head_dim` is
    qk_nope_head_dim + qk_rope_head_dim (the query/key size of a head), `kv_heads` equals
    `heads`, and `v_head_dim` is the value size of a head. `shared_experts` (count, each of
    inner size `shared_expert_ffn`) run beside the routed experts of every moe block.
    `attention_kernel` and `attention_mask` are the defaults of attention blocks.
    """

    name: str
    layers: int
    hidden: int
    heads: int | None = None
    head_dim: int | None = None
    kv_heads: int | None = None
    ffn: int | None = None
    activation: Activation = Activation.GELU
    experts: int | None = None
    top_k: int | None = None
    expert_ffn: int | None = None
    capacity_factor: float = 1.0
    vocab: int | None = None
    attention_kernel: AttentionKernel = AttentionKernel.EXPLICIT
    attention_mask: AttentionMask = AttentionMask.FULL
    qkv_bias: bool = False  # biases on the q, k and v projections (Qwen2)
    o_bias: bool = False  # a bias on the output projection (Llama's attention_bias)
    qk_norm: bool = False
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    shared_experts: int | None = None
    shared_expert_ffn: int | None = None
    shared_expert_gate: bool = False
    router_bias: bool = False
    tied_embeddings: bool = False
    # dropout probabilities in [0, 1), applied only by training programs (docs/training.md)
    attention_dropout: float = 0.0  # on the attention probabilities (explicit kernel)
    hidden_dropout: float = 0.0  # on attention's and the MLP's outputs, before the residual

    def __post_init__(self) -> None:
        for name in ("attention_dropout", "hidden_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"model {name} must be in [0, 1), is {getattr(self, name)}")
        _require_positive(
            self, "layers", "hidden", "heads", "head_dim", "kv_heads", "ffn", "experts",
            "top_k", "expert_ffn", "capacity_factor", "vocab", "q_lora_rank", "kv_lora_rank",
            "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "shared_experts",
            "shared_expert_ffn",
        )  # fmt: skip
        if self.top_k is not None and self.experts is not None and self.top_k > self.experts:
            raise ValueError("top_k exceeds experts")
        if self.kv_lora_rank is not None:
            if None in (self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim):
                raise ValueError("MLA needs qk_nope_head_dim, qk_rope_head_dim and v_head_dim")
        elif self.q_lora_rank is not None:
            raise ValueError("q_lora_rank without kv_lora_rank")

    @property
    def latent_attention(self) -> bool:
        """Multi-head latent attention (DeepSeek-V2/V3)."""
        return self.kv_lora_rank is not None

    @property
    def value_head_dim(self) -> int | None:
        """The value size of a head: v_head_dim under MLA, else head_dim."""
        return self.v_head_dim if self.latent_attention else self.head_dim


@dataclass(frozen=True, slots=True)
class Workload:
    """Batch, sequence length, element type and micro-batches (B, S, w, m).

    `replicas` is the data-parallel degree dp of a training run: the global batch B is
    split over dp replicas, each running m micro-batches of Bm = B/(m·dp) sequences.

    `mode` (Mode): PREFILL as before. DECODE: `seq` is 1 (one query token per sequence) and
    `context` is C, the keys each new token attends over, itself included (the cache holds
    C − 1 earlier tokens). SERVE: `seq` is the input length I and `output` the tokens O
    generated per sequence (the first by the prefill); `context` is unset. A SERVE program
    is analysed through its phases (`prefill_phase`, `decode_phase`).
    """

    batch: int
    seq: int
    dtype: DType = DType.BF16
    microbatches: int = 1
    replicas: int = 1
    mode: Mode = Mode.PREFILL
    context: int | None = None
    output: int | None = None

    def __post_init__(self) -> None:
        _require_positive(self, "batch", "seq", "microbatches", "replicas", "context", "output")
        if self.batch % (self.microbatches * self.replicas):
            raise ValueError("batch is not divisible by microbatches × replicas")
        if (self.mode is Mode.DECODE) != (self.context is not None):
            raise ValueError("a decode workload, and only one, has a context")
        if self.mode is Mode.DECODE and self.seq != 1:
            raise ValueError("a decode step has one query token per sequence (seq = 1)")
        if (self.mode is Mode.SERVE) != (self.output is not None):
            raise ValueError("a serve workload, and only one, has an output length")

    @property
    def microbatch_size(self) -> int:
        """Bm = B / (m·dp), sequences per micro-batch."""
        return self.batch // (self.microbatches * self.replicas)

    @property
    def tokens_per_microbatch(self) -> int:
        """T = Bm * S."""
        return self.microbatch_size * self.seq


@dataclass(frozen=True, slots=True)
class Hardware:
    """The GPU preset name and how many consecutive GPU ids share a node."""

    gpu: str = "h100"
    node_size: int = 8
    overrides: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    # pipeline sends split over the tensor-parallel ranks' links, gathered on arrival
    # (Megatron's scatter/gather); False: the whole activation through one link
    split_sends: bool = False

    def __post_init__(self) -> None:
        _require_positive(self, "node_size")


@dataclass(frozen=True, slots=True)
class Training:
    """A training step: forward, backward and optimizer over the file's layout.

    `dp` replicas of the whole layout each hold a copy of the weights (sharded by `zero`:
    0 gradient all-reduce, 1 distributed optimizer (reduce-scatter of gradients,
    all-gather of parameters), 3 parameters sharded and all-gathered before each layer's
    forward and backward). `grad_overlap` reduces gradients in per-layer buckets on the
    communication stream while the backward goes on.
    """

    dp: int = 1
    schedule: Schedule = Schedule.ONE_F_ONE_B
    virtual_stages: int = 1
    recompute: Recompute = Recompute.NONE
    sequence_parallel: bool = False
    zero: int = 0
    grad_overlap: bool = False

    def __post_init__(self) -> None:
        _require_positive(self, "dp", "virtual_stages")
        if self.zero not in (0, 1, 3):
            raise ValueError(f"zero stage {self.zero} is not 0, 1 or 3")
        if self.virtual_stages > 1 and self.schedule is not Schedule.INTERLEAVED:
            raise ValueError("virtual stages need the interleaved schedule")


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """A named, ordered set of GPUs; rank i of the group is gpus[i]."""

    name: str
    gpus: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.gpus:
            raise ValueError(f"group {self.name} is empty")
        if len(set(self.gpus)) != len(self.gpus) or min(self.gpus) < 0:
            raise ValueError(f"group {self.name} has repeated or negative GPU ids")

    @property
    def size(self) -> int:
        return len(self.gpus)


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a layer, placed on a group with its parallel degree (tp or ep).

    `dp` (attention data parallelism; attention, mlp, embed, lm_head): the block runs as
    dp replicas over its group, |group| = degree·dp; rank r is in replica r // degree and
    replica j works on split(Bm, dp)[j] of the micro-batch's sequences, with its own copy of
    the weights. `overlap` puts the block's communication on its GPUs' communication
    stream. `kernel` and `mask` are an attention block's (resolved from the model's
    defaults); `dispatch` is a moe block's; `vocab_parallel` is an embed block's (rows
    split over its GPUs, an all-reduce after the lookup).
    """

    kind: BlockKind
    group: str
    degree: int = 1
    fused_qkv: bool = False
    overlap: bool = False
    kernel: AttentionKernel = AttentionKernel.EXPLICIT
    mask: AttentionMask = AttentionMask.FULL
    dispatch: MoeDispatch = MoeDispatch.BROADCAST
    vocab_parallel: bool = False
    dp: int = 1
    span: Span | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _require_positive(self, "degree", "dp")
        if self.dp > 1 and self.kind is BlockKind.MOE:
            raise ValueError("a moe block has no data-parallel replicas (its experts are split)")


@dataclass(frozen=True, slots=True)
class LayerRange:
    """Layers first..last (inclusive) all run these blocks, in this order."""

    first: int
    last: int
    blocks: tuple[Block, ...]
    span: Span | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last:
            raise ValueError(f"bad layer range {self.first}..{self.last}")

    @property
    def layer_indices(self) -> range:
        return range(self.first, self.last + 1)


@dataclass(frozen=True, slots=True)
class Program:
    """A whole checked .dag file: the root of the logical IR."""

    model: Model
    workload: Workload
    hardware: Hardware
    groups: tuple[DeviceGroup, ...]
    ranges: tuple[LayerRange, ...]
    source_path: str = field(default="<memory>", compare=False)
    training: Training | None = None  # None: one forward pass (prefill) or decode step
    # SERVE: the decode phase's layout when it differs from `ranges` (the prefill's); that
    # is disaggregated serving, prefill and decode on disjoint GPUs. Empty: decode runs on
    # `ranges` (collocated).
    decode_ranges: tuple[LayerRange, ...] = ()
    # The prefill phase of a disaggregated serve: the decode layout its KV cache is sent to
    # (insert-transfers adds one kv_send_l{l} per layer). Empty otherwise.
    kv_handoff: tuple[LayerRange, ...] = ()

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("duplicate group names")
        known = set(names)
        for layer_range in self.ranges:
            for block in layer_range.blocks:
                if block.group not in known:
                    raise ValueError(f"block on unknown group {block.group}")

    @property
    def mode(self) -> Mode:
        return self.workload.mode

    @property
    def disaggregated(self) -> bool:
        """A serve program whose prefill and decode run on different layouts (disjoint GPUs)."""
        return bool(self.decode_ranges)

    def group(self, name: str) -> DeviceGroup:
        """The device group called `name`."""
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def __str__(self) -> str:
        return print_program(self)


def prefill_phase(program: Program) -> Program:
    """The prefill of a SERVE program: one forward pass over its B sequences of I tokens on
    the prefill layout (sending each layer's KV cache to the decode layout when
    disaggregated). Any other program is returned unchanged."""
    if program.mode is not Mode.SERVE:
        return program
    workload = replace(program.workload, mode=Mode.PREFILL, output=None)
    return replace(program, workload=workload, decode_ranges=(), kv_handoff=program.decode_ranges)


def decode_phase(program: Program, context: int) -> Program:
    """One decode step of a SERVE or DECODE program at context C = `context` (keys each new
    token attends over, itself included), on the decode layout."""
    if program.mode is Mode.PREFILL:
        raise ValueError("a prefill program has no decode phase")
    workload = replace(program.workload, mode=Mode.DECODE, seq=1, context=context, output=None)
    ranges = program.decode_ranges or program.ranges
    return replace(program, workload=workload, ranges=ranges, decode_ranges=(), kv_handoff=())


def format_gpus(gpus: tuple[int, ...]) -> str:
    """`gpu[0..7]`, `gpu[0, 2, 4..6]`: runs of consecutive ids become ranges."""
    parts: list[str] = []
    start = previous = gpus[0]
    for gpu in (*gpus[1:], None):
        if gpu is not None and gpu == previous + 1:
            previous = gpu
            continue
        parts.append(str(start) if start == previous else f"{start}..{previous}")
        if gpu is not None:
            start = previous = gpu
    return f"gpu[{', '.join(parts)}]"


def print_program(program: Program) -> str:
    """The logical IR as text (one canonical form, every default spelled out)."""
    m, w, hw = program.model, program.workload, program.hardware
    model_fields: list[tuple[str, object]] = [
        ("layers", m.layers), ("hidden", m.hidden), ("heads", m.heads),
        ("head_dim", m.head_dim), ("kv_heads", m.kv_heads), ("ffn", m.ffn),
        ("activation", m.activation.value), ("experts", m.experts), ("top_k", m.top_k),
        ("expert_ffn", m.expert_ffn),
        ("capacity_factor", m.capacity_factor if m.experts is not None else None),
        ("vocab", m.vocab),
        ("q_lora_rank", m.q_lora_rank), ("kv_lora_rank", m.kv_lora_rank),
        ("qk_nope_head_dim", m.qk_nope_head_dim), ("qk_rope_head_dim", m.qk_rope_head_dim),
        ("v_head_dim", m.v_head_dim), ("shared_experts", m.shared_experts),
        ("shared_expert_ffn", m.shared_expert_ffn),
        ("attention_dropout", f"{m.attention_dropout:g}" if m.attention_dropout else None),
        ("hidden_dropout", f"{m.hidden_dropout:g}" if m.hidden_dropout else None),
    ]  # fmt: skip
    flags = [
        ("qkv_bias", "true", m.qkv_bias),
        ("o_bias", "true", m.o_bias),
        ("qk_norm", "true", m.qk_norm),
        ("shared_expert_gate", "true", m.shared_expert_gate),
        ("router_bias", "true", m.router_bias),
        ("tied_embeddings", "true", m.tied_embeddings),
    ]
    model_fields += [(k, v) for k, v, shown in flags if shown]
    model_text = " ".join(f"{k}={v}" for k, v in model_fields if v is not None)
    lines = [
        f"program @{m.name} {{",
        f"  model {model_text}",
        f"  workload batch={w.batch} seq={w.seq} dtype={w.dtype.value}"
        f" microbatches={w.microbatches}"
        + (f" microbatch_size={w.microbatch_size}" if program.training else "")
        + (f" mode={w.mode.value}" if w.mode is not Mode.PREFILL else "")
        + (f" context={w.context}" if w.context is not None else "")
        + (f" output={w.output}" if w.output is not None else ""),
        f"  hardware gpu={hw.gpu} node_size={hw.node_size}"
        + (" split_sends" if hw.split_sends else "")
        + "".join(f" {key}={value:g}" for key, value in sorted(hw.overrides.items())),
    ]
    if program.training is not None:
        t = program.training
        lines.append(
            f"  training dp={t.dp} schedule={t.schedule.value}"
            f" virtual_stages={t.virtual_stages} recompute={t.recompute.value}"
            f" sequence_parallel={str(t.sequence_parallel).lower()} zero={t.zero}"
            f" grad_overlap={str(t.grad_overlap).lower()}"
        )
    lines += [f"  group @{g.name} = {format_gpus(g.gpus)}" for g in program.groups]
    prefix = "prefill " if program.decode_ranges else ""
    lines += _format_ranges(program.ranges, prefix)
    lines += _format_ranges(program.decode_ranges, "decode ")
    lines += _format_ranges(program.kv_handoff, "kv_handoff ")
    lines.append("}")
    return "\n".join(lines)


def _format_ranges(ranges: tuple[LayerRange, ...], prefix: str) -> list[str]:
    lines: list[str] = []
    for layer_range in ranges:
        lines.append(f"  {prefix}layers {layer_range.first}..{layer_range.last} {{")
        lines += [f"    {_format_block(block)}" for block in layer_range.blocks]
        lines.append("  }")
    return lines


def _format_block(block: Block) -> str:
    text = f"{block.kind.value} on @{block.group}"
    if block.kind.degree_key:
        text += f" {block.kind.degree_key}={block.degree}"
    if block.dp > 1:
        text += f" dp={block.dp}"
    if block.kind is BlockKind.ATTENTION:
        text += f" kernel={block.kernel.value} mask={block.mask.value}"
    if block.fused_qkv:
        text += " fused_qkv"
    if block.dispatch is not MoeDispatch.BROADCAST:
        text += f" dispatch={block.dispatch.value}"
    if block.vocab_parallel:
        text += " vocab_parallel"
    if block.overlap:
        text += " overlap"
    return text
