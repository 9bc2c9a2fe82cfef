"""attention (tp = t): ln1, q/k/v, the core (scores, softmax, weights·V; or one fused
kernel), o_proj, res1, all-reduce.

Rank i holds h_i = split(nh, t)[i] query heads and split(nkv, t)[i] key/value heads (one,
shared, when nkv < t: K/V replicated). With t > 1 the block ends in an all-reduce of the
T·H activations after o_proj.

The core, by the block's kernel:
- explicit (the seed's): Q·Kᵀ is Get_Time(Bm·h·S, d, S), softmax Elem_Time(Bm·h·S·S) and
  weights·V Get_Time(Bm·h·S, S, d). A causal mask changes none of these (an explicit
  masked GEMM computes every S×S entry), only the model's FLOPs.
  In training with `attention_dropout`, `attn_dropout` Elem_Time(Bm·h·S·S) follows softmax:
  it reads the probabilities and writes the dropped ones (which weights·V reads) and their
  u8 mask (which its backward reads).
- fused (FlashAttention-style): one step `attn_core`, Attn_Time(Bm, h_i, kv_i, S, d, d),
  Causal_Attn_Time under a causal mask; the S×S scores never exist as a value.

`qk_norm` adds an elementwise step of T·(h_i + kv_i)·d after the projections. Biases
(qkv_bias, o_bias) are fused into the products' epilogues: parameters only, no step.

Multi-head latent attention (kv_lora_rank set; r_q, r_kv the ranks, d = nope + rope, d_v
the value size): the `qkv` step's parts are `.q_a` Get_Time(T, H, r_q) and `.q_a_norm`
Elem_Time(T·r_q) (only with q_lora_rank), `.q_b` Get_Time(T, r_q, h_i·d) (without
q_lora_rank `.q` Get_Time(T, H, h_i·d)), `.kv_a` Get_Time(T, H, r_kv + rope), `.kv_a_norm`
Elem_Time(T·r_kv) and `.kv_b` Get_Time(T, r_kv, h_i·(nope + d_v)). The down-projections
q_a and kv_a and their norms are replicated on every rank (vLLM's and SGLang's
ReplicatedLinear); the up-projections split by heads. With `fused_qkv` the two products
that read ln1 (`.q_a` and `.kv_a`, or `.q` and `.kv_a`) are one, `.qkv_a`. The core uses d
for Q·Kᵀ and d_v for weights·V, o_proj is Get_Time(T, h_i·d_v, H).

Values: ln1 reads the residual x and writes ln1; q, k, v (split by heads) come from the
projections (under MLA through the replicated latents q_a, kv_a and their normed forms);
qk_norm reads q and k and writes their normed forms; the explicit scores read q and k,
softmax the scores, weights·V the probabilities and v; a fused core reads q, k and v; both
write attn; o_proj writes o, a partial sum of T x H when t > 1, which only the all-reduce
reads; res1 reads the reduced o and x. A fused kernel drops out inside (no step). In training
with `hidden_dropout`, `hidden_dropout1` Elem_Time(T·H) (base.py's hidden_dropout) reads the
reduced o before res1 and writes `o_dropped`, which res1 reads, and its u8 mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dagc.blocks.base import BlockModule, Values, hidden_dropout, per_gpu, same, tensor_parallel
from dagc.blocks.shapes import (
    count,
    dims,
    hidden_shape,
    residual_in,
    residual_out,
    times,
    tokens,
    value,
)
from dagc.ir.logical import AttentionKernel, AttentionMask, BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import CostTerm, Label, elementwise, fused_attention, matmul
from dagc.ir.values import MASK_DTYPE, PARTIAL, REPLICATED, Value, split
from dagc.split import split_evenly

PerRank = Callable[..., Step]


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    D = dims(program)
    t, tok, hid, d = block.degree, D.tokens, D.hidden, D.head_dim
    heads = split_evenly(model.heads, t)
    kv = split_evenly(model.kv_heads, t) if model.kv_heads >= t else [1] * t
    v = _values(program, block)
    x = residual_in(program, block)
    # the value size of a head: d, or MLA's v_head_dim
    d_v = count(model.v_head_dim, "d_v") if model.v_head_dim is not None else d

    def per_rank(
        base: str, make: Callable[[int, int], CostTerm], part: str = "", **io: Values
    ) -> Step:
        terms = [make(h, k) for h, k in zip(heads, kv, strict=True)]
        return per_gpu(base, block, terms, part, **io)

    ln1 = (v["ln1"],)
    if model.latent_attention:
        qkv = _latent_projections(program, block, per_rank, v)
    elif block.fused_qkv:
        qkv = [
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(h + 2 * k), d)),
                reads=ln1,
                writes=(v["q"], v["k"], v["v"]),
            )
        ]
    else:
        qkv = [
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(h), d)),
                ".q",
                reads=ln1,
                writes=(v["q"],),
            ),
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(k), d)),
                ".k",
                reads=ln1,
                writes=(v["k"],),
            ),
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, times(count(k), d)),
                ".v",
                reads=ln1,
                writes=(v["v"],),
            ),
        ]
    q, k = v["q"], v["k"]
    norm: list[Step] = []
    if model.qk_norm:
        # one RMSNorm per query and key head, over its d entries
        norm = [
            per_rank(
                "qk_norm",
                lambda h, k_: elementwise(times(tok, count(h + k_), d)),
                reads=(q, k),
                writes=(v["q_normed"], v["k_normed"]),
            )
        ]
        q, k = v["q_normed"], v["k_normed"]

    def scores_rows(h: int) -> Label:
        return times(D.batch, D.seq, count(h))  # Bm·S·h, in the seed's order

    if block.kernel is AttentionKernel.FUSED:
        causal = block.mask is AttentionMask.CAUSAL
        core = [
            per_rank(
                "attn_core",
                lambda h, k_: fused_attention(D.batch, count(h), count(k_), D.seq, d, d_v, causal),
                reads=(q, k, v["v"]),
                writes=(v["attn"],),
            )
        ]
    else:
        # training with attention_dropout: a dropout of the probabilities after softmax
        probs = v["probs"]
        dropout: list[Step] = []
        if program.training is not None and model.attention_dropout:
            probs = v["probs_dropped"]
            dropout = [
                per_rank(
                    "attn_dropout",
                    lambda h, k_: elementwise(times(scores_rows(h), D.seq)),
                    reads=(v["probs"],),
                    writes=(probs, v["attn_dropout_mask"]),
                )
            ]
        core = [
            per_rank(
                "attn_scores",
                lambda h, k_: matmul(scores_rows(h), d, D.seq),
                reads=(q, k),
                writes=(v["scores"],),
            ),
            per_rank(
                "softmax",
                lambda h, k_: elementwise(times(scores_rows(h), D.seq)),
                reads=(v["scores"],),
                writes=(v["probs"],),
            ),
            *dropout,
            per_rank(
                "attn_out",
                lambda h, k_: matmul(scores_rows(h), D.seq, d_v),
                reads=(probs, v["v"]),
                writes=(v["attn"],),
            ),
        ]
    dropped, out = hidden_dropout(program, block, v["o"], "o", "hidden_dropout1")
    return (
        same("ln1", block, elementwise(times(tok, hid)), reads=x, writes=ln1),
        *qkv,
        *norm,
        *core,
        per_rank(
            "o_proj",
            lambda h, k_: matmul(tok, times(count(h), d_v), hid),
            reads=(v["attn"],),
            writes=(v["o"],),
        ),
        *dropped,
        same(
            "res1",
            block,
            elementwise(times(tok, hid)),
            reads=(out, *x),
            writes=(residual_out(program, block, block.gpus),),
        ),
    )


def _latent_projections(
    program: Program, block: BlockSteps, per_rank: PerRank, v: dict[str, Value]
) -> list[Step]:
    """MLA's `qkv` parts: replicated down-projections and their norms, then the
    up-projections split by heads (see the module docstring)."""
    model = program.model
    assert model.kv_lora_rank is not None and model.qk_nope_head_dim is not None
    assert model.qk_rope_head_dim is not None and model.v_head_dim is not None
    D = dims(program)
    tok, hid, d = D.tokens, D.hidden, D.head_dim
    r_kv, rope = model.kv_lora_rank, model.qk_rope_head_dim
    ln1 = (v["ln1"],)
    kv_a_width = r_kv + rope  # the latent and the one RoPE key every head shares

    def q_up(h: int) -> Label:
        return times(count(h), d)

    q_lora = model.q_lora_rank
    steps: list[Step] = []
    if block.fused_qkv:
        # the products that read ln1 are one GEMM with concatenated weights: q_a (or each
        # rank's slice of q) beside the whole kv_a
        d_qk = model.head_dim or 0

        def fused_width(h: int) -> int:
            return (q_lora if q_lora is not None else h * d_qk) + kv_a_width

        writes = (v["q_a"] if q_lora is not None else v["q"], v["kv_a"])
        fused = lambda h, k: matmul(tok, hid, count(fused_width(h)))  # noqa: E731
        steps.append(per_rank("qkv", fused, ".qkv_a", reads=ln1, writes=writes))
    if q_lora is not None:
        if not block.fused_qkv:
            steps.append(
                per_rank(
                    "qkv",
                    lambda h, k: matmul(tok, hid, count(q_lora)),
                    ".q_a",
                    reads=ln1,
                    writes=(v["q_a"],),
                )
            )
        steps += [
            per_rank(
                "qkv",
                lambda h, k: elementwise(times(tok, count(q_lora))),
                ".q_a_norm",
                reads=(v["q_a"],),
                writes=(v["q_latent"],),
            ),
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, count(q_lora), q_up(h)),
                ".q_b",
                reads=(v["q_latent"],),
                writes=(v["q"],),
            ),
        ]
    elif not block.fused_qkv:
        steps.append(
            per_rank(
                "qkv", lambda h, k: matmul(tok, hid, q_up(h)), ".q", reads=ln1, writes=(v["q"],)
            )
        )
    if not block.fused_qkv:
        steps.append(
            per_rank(
                "qkv",
                lambda h, k: matmul(tok, hid, count(kv_a_width)),
                ".kv_a",
                reads=ln1,
                writes=(v["kv_a"],),
            )
        )
    nope_v = model.qk_nope_head_dim + model.v_head_dim
    steps += [
        per_rank(
            "qkv",
            lambda h, k: elementwise(times(tok, count(r_kv))),
            ".kv_a_norm",
            reads=(v["kv_a"],),
            writes=(v["kv_latent"],),
        ),
        per_rank(
            "qkv",
            lambda h, k: matmul(tok, count(r_kv), times(count(h), count(nope_v))),
            ".kv_b",
            reads=(v["kv_latent"],),
            writes=(v["k"], v["v"]),
        ),
    ]
    return steps


def _values(program: Program, block: BlockSteps) -> dict[str, Value]:
    """The values inside an attention block: q, k, v split by heads, o a partial sum; MLA's
    latents replicated."""
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    T, S, d = tokens(program), program.workload.seq, model.head_dim or 1
    heads = split("heads")
    # K/V are split by kv heads when there are enough; else every rank holds the one head
    # its query heads share.
    kv_shared = model.kv_heads < block.degree
    kv_rows = (("tokens", T), ("kv_heads", 1 if kv_shared else model.kv_heads))
    kv_placement = REPLICATED if kv_shared else split("kv_heads")
    rows = (("tokens", T), ("heads", model.heads))
    # under MLA the values have their own head size (d_v), and every head its own K and V
    v_dim = ("head_dim", d) if model.v_head_dim is None else ("v_head_dim", model.v_head_dim)
    if model.latent_attention:
        kv_rows, kv_placement = rows, heads
    # a tp > 1 o_proj leaves each rank a partial sum over its heads, awaiting the all-reduce
    o_placement = PARTIAL if block.degree > 1 else REPLICATED
    values = {
        "ln1": value(program, block, "ln1", hidden_shape(program)),
        "q": value(program, block, "q", (*rows, ("head_dim", d)), heads),
        "k": value(program, block, "k", (*kv_rows, ("head_dim", d)), kv_placement),
        "v": value(program, block, "v", (*kv_rows, v_dim), kv_placement),
        "scores": value(program, block, "scores", (*rows, ("keys", S)), heads),
        "probs": value(program, block, "probs", (*rows, ("keys", S)), heads),
        "probs_dropped": value(program, block, "probs_dropped", (*rows, ("keys", S)), heads),
        "attn_dropout_mask": replace(
            value(program, block, "attn_dropout_mask", (*rows, ("keys", S)), heads),
            dtype=MASK_DTYPE,
        ),
        "attn": value(program, block, "attn", (*rows, v_dim), heads),
        "o": value(program, block, "o", hidden_shape(program), o_placement),
    }
    if model.qk_norm:
        values["q_normed"] = value(program, block, "q_normed", (*rows, ("head_dim", d)), heads)
        values["k_normed"] = value(
            program, block, "k_normed", (*kv_rows, ("head_dim", d)), kv_placement
        )
    if model.latent_attention:
        assert model.kv_lora_rank is not None and model.qk_rope_head_dim is not None
        r_kv, rope = model.kv_lora_rank, model.qk_rope_head_dim
        # the latent (and the shared RoPE key) is computed whole on every rank
        values["kv_a"] = value(program, block, "kv_a", (("tokens", T), ("kv_a", r_kv + rope)))
        values["kv_latent"] = value(
            program, block, "kv_latent", (("tokens", T), ("kv_lora_rank", r_kv))
        )
        if model.q_lora_rank is not None:
            r_q = (("tokens", T), ("q_lora_rank", model.q_lora_rank))
            values["q_a"] = value(program, block, "q_a", r_q)
            values["q_latent"] = value(program, block, "q_latent", r_q)
    return values


def _split_items(model: Model) -> list[tuple[str, int]]:
    assert model.heads is not None
    return [("heads", model.heads)]


MODULE = BlockModule(
    kind=BlockKind.ATTENTION,
    summary="ln1, q/k/v, scores, softmax, weights·V (or one fused kernel), o_proj, res1;"
    " all-reduce when tp > 1",
    compute=_compute,
    needs=("heads",),
    options={
        "fused_qkv": "bool",
        "kernel": ("explicit", "fused"),
        "mask": ("full", "causal"),
    },
    split_items=_split_items,
    collectives=tensor_parallel("o_proj", "attn"),
    # every projection is a part of `qkv` (MLA's too) or o_proj
    weight_products=frozenset({"qkv", "o_proj"}),
    least_ops_per_rank=5,  # fused qkv, fused kernel: ln1, qkv, attn_core, o_proj, res1
    grad_only=frozenset({"res1"}),
    transposed_operand=frozenset({"attn_scores"}),
    backward_all_reduce="all_reduce_attn_bwd",
    recompute_core=frozenset({"attn_scores", "softmax", "attn_dropout", "attn_out", "attn_core"}),
)
