"""Cost terms: the one quantity each device operation costs, before any cost model.

A term is a function name and integer arguments, e.g. `Get_Time(2097152, 4096, 384)`. Terms
are interned in a TermTable so that millions of operations share a few hundred terms and a
cost model evaluates each distinct term once.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field

# How an argument was built: factors (symbol, value), e.g. (("B", 1024), ("S", 2048)) for
# the tokens of a micro-batch. An empty symbol is a plain number (a rank's 3 heads).
Factor = tuple[str, int]
Label = tuple[Factor, ...]
TOKEN_SYMBOLS = frozenset({"B", "B/m", "S", "T_e", "C", "I"})


class TermKind(enum.Enum):
    """The cost functions dagc knows; the value is the name formulas print."""

    MATMUL = "Get_Time"
    ELEMENTWISE = "Elem_Time"
    ALL_REDUCE = "AllReduce_Time"
    ALL_TO_ALL = "AllToAll_Time"
    ALL_GATHER = "AllGather_Time"
    REDUCE_SCATTER = "ReduceScatter_Time"
    BROADCAST = "Broadcast_Time"
    P2P = "P2P_Time"
    SYNC = "Sync"
    # A fused (FlashAttention-style) attention kernel over all keys, or under a causal mask.
    ATTENTION = "Attn_Time"
    CAUSAL_ATTENTION = "Causal_Attn_Time"
    # Its backward (FlashAttention-2: the scores recomputed, then dV, dP, dQ, dK).
    ATTENTION_BWD = "Attn_Bwd_Time"
    CAUSAL_ATTENTION_BWD = "Causal_Attn_Bwd_Time"
    # A mixed-precision Adam step over n parameters of the local shard.
    OPTIMIZER = "Adam_Time"
    # One decode step's attention (Bm, h, kv, C, d_qk, d_v): Bm new tokens, each attending
    # over C cached keys and values of its sequence (a paged / FlashDecoding kernel).
    DECODE_ATTENTION = "Decode_Attn_Time"
    # Multi-head latent attention's decode in the absorbed form (Bm, h, C, d_c, d_r): every
    # head reads the same latent cache of d_c + d_r values per token (FlashMLA).
    LATENT_DECODE_ATTENTION = "MLA_Decode_Attn_Time"
    # b independent products [M,K]×[K,N], each with its own weight (per-head absorbed
    # projections of MLA decode).
    BATCHED_MATMUL = "BMM_Time"

    @property
    def is_communication(self) -> bool:
        return self in _COMMUNICATION

    @property
    def is_fused_attention(self) -> bool:
        """A fused attention kernel, forward or backward."""
        return self in _FUSED_ATTENTION

    @property
    def is_causal(self) -> bool:
        return self in (TermKind.CAUSAL_ATTENTION, TermKind.CAUSAL_ATTENTION_BWD)

    @property
    def is_backward(self) -> bool:
        return self in (TermKind.ATTENTION_BWD, TermKind.CAUSAL_ATTENTION_BWD)

    @property
    def does_products(self) -> bool:
        """Matrix products (Get_Time, BMM_Time) or an attention kernel (fused, or a decode
        step's): work counted in FLOPs."""
        return (
            self in (TermKind.MATMUL, TermKind.BATCHED_MATMUL)
            or self.is_fused_attention
            or self.is_decode_attention
        )

    @property
    def is_decode_attention(self) -> bool:
        """A decode step's attention over the KV cache (Decode_Attn_Time, MLA_Decode_Attn_Time)."""
        return self in (TermKind.DECODE_ATTENTION, TermKind.LATENT_DECODE_ATTENTION)


_FUSED_ATTENTION = frozenset(
    {
        TermKind.ATTENTION,
        TermKind.CAUSAL_ATTENTION,
        TermKind.ATTENTION_BWD,
        TermKind.CAUSAL_ATTENTION_BWD,
    }
)
_COMMUNICATION = frozenset(
    {
        TermKind.ALL_REDUCE,
        TermKind.ALL_TO_ALL,
        TermKind.ALL_GATHER,
        TermKind.REDUCE_SCATTER,
        TermKind.BROADCAST,
        TermKind.P2P,
    }
)


class OpKind(enum.StrEnum):
    """The kind of work an operation is, as reports, traces and pictures name it.

    A StrEnum, so that it prints, formats and serialises to JSON as its value: outputs are
    the same as when these were plain strings. Members are in the order reports list ties.
    """

    MATMUL = "matmul"
    ELEMENTWISE = "elementwise"
    COLLECTIVE = "collective"
    TRANSFER = "transfer"

    @property
    def is_communication(self) -> bool:
        """Collectives and transfers move data; the other kinds compute."""
        return self in (OpKind.COLLECTIVE, OpKind.TRANSFER)


_ARITY = {
    TermKind.MATMUL: 3,
    TermKind.ELEMENTWISE: 1,
    TermKind.ALL_REDUCE: 2,
    TermKind.ALL_TO_ALL: 2,
    TermKind.ALL_GATHER: 2,
    TermKind.REDUCE_SCATTER: 2,
    TermKind.BROADCAST: 2,
    TermKind.P2P: 1,
    TermKind.SYNC: 0,
    TermKind.ATTENTION: 6,
    TermKind.CAUSAL_ATTENTION: 6,
    TermKind.ATTENTION_BWD: 6,
    TermKind.CAUSAL_ATTENTION_BWD: 6,
    TermKind.OPTIMIZER: 1,
    TermKind.DECODE_ATTENTION: 6,
    TermKind.LATENT_DECODE_ATTENTION: 5,
    TermKind.BATCHED_MATMUL: 4,
}
# Bytes a mixed-precision Adam step moves per parameter: it reads the fp32 gradient, master
# weight and the two moments (16 B) and writes the master weight, the moments (12 B) and the
# 16-bit weight (2 B).
ADAM_BYTES_PER_PARAM = 30


def causal_pairs(seq: int) -> int:
    """Query-key pairs one head of one sequence computes under a causal mask: S·(S+1)/2."""
    return seq * (seq + 1) // 2


@dataclass(frozen=True, slots=True)
class CostTerm:
    """One cost term.

    MATMUL (M, K, N); ELEMENTWISE (elements written); ALL_REDUCE, ALL_TO_ALL, ALL_GATHER
    and BROADCAST (bytes per rank, ranks); P2P (bytes); SYNC () costs nothing: it marks
    where a receiving side waits for a transfer whose time is counted on the sending side.
    ATTENTION and CAUSAL_ATTENTION (Bm, h, kv, S, d_qk, d_v): one fused kernel computing,
    for Bm sequences of S tokens, h query heads against kv key/value heads, Q·Kᵀ (size
    d_qk) and weights·V (size d_v) without storing the scores. `nodes` > 1 means
    the communication crosses node boundaries (inter-node network instead of NVLink).
    """

    kind: TermKind
    args: tuple[int, ...]
    nodes: int = 1
    labels: tuple[Label, ...] = field(default=(), compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.labels:
            if len(self.labels) != len(self.args):
                raise ValueError(f"{self.kind.value}: one label per argument")
            for arg, label in zip(self.args, self.labels, strict=True):
                if label and math.prod(v for _, v in label) != arg:
                    raise ValueError(f"{self.kind.value}: label {label} does not multiply to {arg}")
        if len(self.args) != _ARITY[self.kind]:
            raise ValueError(f"{self.kind.value} takes {_ARITY[self.kind]} arguments: {self.args}")
        if any(a <= 0 for a in self.args) or self.nodes < 1:
            raise ValueError(f"{self.kind.value} arguments must be positive: {self.args}")
        if self.nodes > 1 and not self.kind.is_communication:
            raise ValueError("only communication terms can span nodes")

    def flops(self) -> int:
        """Floating-point operations: 2·M·K·N for a matrix product; for a fused attention
        kernel 2·Bm·h·P·(d_qk + d_v), P the query-key pairs per head and sequence (S·S, or
        S·(S+1)/2 under a causal mask); else 0."""
        if self.kind is TermKind.MATMUL:
            m, k, n = self.args
            return 2 * m * k * n
        if self.kind is TermKind.BATCHED_MATMUL:
            b, m, k, n = self.args
            return 2 * b * m * k * n
        if self.kind is TermKind.DECODE_ATTENTION:
            batch, heads, _, context, d_qk, d_v = self.args
            return 2 * batch * heads * context * (d_qk + d_v)
        if self.kind is TermKind.LATENT_DECODE_ATTENTION:
            # scores over the latent and rope parts (d_c + d_r), weights·latent (d_c)
            batch, heads, context, d_c, d_r = self.args
            return 2 * batch * heads * context * (2 * d_c + d_r)
        if self.kind.is_fused_attention:
            batch, heads, _, seq, d_qk, d_v = self.args
            pairs = causal_pairs(seq) if self.kind.is_causal else seq * seq
            if self.kind.is_backward:
                # Q·Kᵀ recomputed (d_qk), dP and dV (d_v each), dQ and dK (d_qk each)
                return 2 * batch * heads * pairs * (3 * d_qk + 2 * d_v)
            return 2 * batch * heads * pairs * (d_qk + d_v)
        return 0

    def recomputed_flops(self) -> int:
        """FLOPs a fused attention backward spends recomputing the forward's Q·Kᵀ (counted
        in flops(); named apart so that FLOP conservation can state them)."""
        if not (self.kind.is_fused_attention and self.kind.is_backward):
            return 0
        batch, heads, _, seq, d_qk, _ = self.args
        pairs = causal_pairs(seq) if self.kind.is_causal else seq * seq
        return 2 * batch * heads * pairs * d_qk

    def bytes_moved(self, element_bytes: int) -> int:
        """Bytes read and written (matmul, elementwise) or sent per rank (communication)."""
        if self.kind is TermKind.MATMUL:
            m, k, n = self.args
            return (m * k + k * n + m * n) * element_bytes
        if self.kind is TermKind.BATCHED_MATMUL:
            b, m, k, n = self.args
            return b * (m * k + k * n + m * n) * element_bytes
        if self.kind is TermKind.DECODE_ATTENTION:
            # the cache's C keys and values of each sequence read once (kv heads), the
            # queries read and the outputs written (h heads)
            batch, heads, kv, context, d_qk, d_v = self.args
            return batch * (context * kv + heads) * (d_qk + d_v) * element_bytes
        if self.kind is TermKind.LATENT_DECODE_ATTENTION:
            # one latent cache (d_c + d_r per token) shared by every head; queries of
            # d_c + d_r in, outputs of d_c out
            batch, heads, context, d_c, d_r = self.args
            return batch * (context * (d_c + d_r) + heads * (2 * d_c + d_r)) * element_bytes
        if self.kind is TermKind.ELEMENTWISE:
            return 2 * self.args[0] * element_bytes  # one read and one write per element
        if self.kind.is_fused_attention:
            # Q, K and V read once, O written once; the scores never reach memory. The
            # backward also reads O and dO and writes dQ, dK and dV.
            batch, heads, kv, seq, d_qk, d_v = self.args
            forward = heads * (d_qk + d_v) + kv * (d_qk + d_v)
            extra = (
                heads * 2 * d_v + heads * d_qk + kv * (d_qk + d_v) if self.kind.is_backward else 0
            )
            return batch * seq * (forward + extra) * element_bytes
        if self.kind is TermKind.OPTIMIZER:
            return self.args[0] * ADAM_BYTES_PER_PARAM
        if self.kind.is_communication:
            return self.args[0]
        return 0

    def __str__(self) -> str:
        args = ", ".join(str(a) for a in self.args)
        if self.nodes > 1:
            args += f", nodes={self.nodes}"
        return f"{self.kind.value}({args})"

    def pretty(self, *, symbolic: bool = False, times: str = "×") -> str:
        """The term as the seed writes it: token dimensions as products (`1024×2048`).

        With `symbolic`, every labelled argument is written in model symbols (`B*S`, `H`,
        `3*d`).
        """
        args = [self._pretty_arg(i, symbolic, times) for i in range(len(self.args))]
        if self.nodes > 1:
            args.append(f"nodes={self.nodes}")
        return f"{self.kind.value}({', '.join(args)})"

    def _pretty_arg(self, index: int, symbolic: bool, times: str) -> str:
        label = self.labels[index] if self.labels else ()
        if not label:
            return str(self.args[index])
        # A plain factor of 1 (a rank's single KV head, fp8's w) says nothing: leave it out.
        shown = [(sym, v) for sym, v in label if v != 1 or (sym and symbolic)] or list(label)
        if symbolic:
            return times.join(symbol or str(value) for symbol, value in shown)
        if len(shown) > 1 and any(symbol in TOKEN_SYMBOLS for symbol, _ in shown):
            return times.join(str(value) for _, value in shown)
        return str(self.args[index])


class TermTable:
    """Interns CostTerms: equal terms get the same small integer id."""

    def __init__(self) -> None:
        self.terms: list[CostTerm] = []
        self._ids: dict[CostTerm, int] = {}

    def intern(self, term: CostTerm) -> int:
        """The id of `term`, adding it if new."""
        found = self._ids.get(term)
        if found is None:
            found = self._ids[term] = len(self.terms)
            self.terms.append(term)
        return found

    def __getitem__(self, term_id: int) -> CostTerm:
        return self.terms[term_id]

    def __len__(self) -> int:
        return len(self.terms)


def _value(label: Label) -> int:
    return math.prod(value for _, value in label)


@functools.cache  # terms are immutable: ranks and layers of equal shape share one object
def matmul(m: Label, k: Label, n: Label) -> CostTerm:
    """Get_Time(M, K, N) from labelled dimensions."""
    return CostTerm(TermKind.MATMUL, (_value(m), _value(k), _value(n)), labels=(m, k, n))


@functools.cache
def fused_attention(
    batch: Label,
    heads: Label,
    kv_heads: Label,
    seq: Label,
    d_qk: Label,
    d_v: Label,
    causal: bool,
    backward: bool = False,
) -> CostTerm:
    """Attn_Time or Causal_Attn_Time(Bm, h, kv, S, d_qk, d_v) from labelled dimensions (with
    `backward`, Attn_Bwd_Time or Causal_Attn_Bwd_Time)."""
    kinds = {
        (False, False): TermKind.ATTENTION,
        (True, False): TermKind.CAUSAL_ATTENTION,
        (False, True): TermKind.ATTENTION_BWD,
        (True, True): TermKind.CAUSAL_ATTENTION_BWD,
    }
    kind = kinds[causal, backward]
    labels = (batch, heads, kv_heads, seq, d_qk, d_v)
    return CostTerm(kind, tuple(_value(label) for label in labels), labels=labels)


@functools.cache
def batched_matmul(batch: Label, m: Label, k: Label, n: Label) -> CostTerm:
    """BMM_Time(b, M, K, N): b products [M,K]×[K,N], each with its own [K,N] operand."""
    labels = (batch, m, k, n)
    return CostTerm(
        TermKind.BATCHED_MATMUL, tuple(_value(label) for label in labels), labels=labels
    )


@functools.cache
def decode_attention(
    batch: Label, heads: Label, kv_heads: Label, context: Label, d_qk: Label, d_v: Label
) -> CostTerm:
    """Decode_Attn_Time(Bm, h, kv, C, d_qk, d_v) from labelled dimensions."""
    labels = (batch, heads, kv_heads, context, d_qk, d_v)
    return CostTerm(
        TermKind.DECODE_ATTENTION, tuple(_value(label) for label in labels), labels=labels
    )


@functools.cache
def latent_decode_attention(
    batch: Label, heads: Label, context: Label, d_c: Label, d_r: Label
) -> CostTerm:
    """MLA_Decode_Attn_Time(Bm, h, C, d_c, d_r) from labelled dimensions (d_c: kv_lora_rank,
    d_r: qk_rope_head_dim)."""
    labels = (batch, heads, context, d_c, d_r)
    return CostTerm(
        TermKind.LATENT_DECODE_ATTENTION, tuple(_value(label) for label in labels), labels=labels
    )


@functools.cache
def elementwise(elements: Label) -> CostTerm:
    """Elem_Time(n) from a labelled element count."""
    return CostTerm(TermKind.ELEMENTWISE, (_value(elements),), labels=(elements,))


def op_kind(term: CostTerm) -> OpKind:
    """The kind of operation a term makes: matmul, elementwise, collective or transfer."""
    if term.kind.does_products:  # a fused attention kernel is two products in one
        return OpKind.MATMUL
    if term.kind in (TermKind.ELEMENTWISE, TermKind.OPTIMIZER):
        return OpKind.ELEMENTWISE
    if term.kind in (
        TermKind.ALL_REDUCE,
        TermKind.ALL_TO_ALL,
        TermKind.ALL_GATHER,
        TermKind.REDUCE_SCATTER,
    ):
        return OpKind.COLLECTIVE
    return OpKind.TRANSFER
