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

A decode step (mode DECODE: T = Bm tokens, one per sequence, each attending over C keys):
whatever the kernel, the core is one step `attn_decode`,
Decode_Attn_Time(Bm, h_i, kv_i, C, d, d_v) (a decode kernel reads the cache once; no S×S
step, no mask: a new token sees its whole context). It reads the new token's q, k, v (or
their normed forms) and the program input `kv_cache_l{l}` (sequences Bm, context C − 1,
kv heads, k and v: 2·d), split by kv heads like k and v (replicated, one head a rank,
when nkv < t). MLA decodes in the absorbed form: the projections as in prefill but no
`.kv_b`; `q_absorb` BMM_Time(h_i, T, nope, r_kv) turns each head's nope query into the
latent space; `attn_decode` MLA_Decode_Attn_Time(Bm, h_i, C, r_kv, rope) reads it, q (the
rope part), the new token's latent and rope key (kv_latent, kv_a) and the latent cache
(sequences, context, latent r_kv + rope; replicated over tp) and writes each head's latent
output; `v_absorb` BMM_Time(h_i, T, r_kv, d_v) maps it to the value space, which o_proj
reads. The absorbed products hold kv_b's weights (r_kv·h_i·(nope + d_v) together).
qk_norm under MLA decode normalises the queries only (the keys are the shared latent).

Attention data parallelism (dp > 1, tp = 1): rank r is replica r and works on its own
Bm_r = split(Bm, dp)[r] sequences (T_r = Bm_r·S tokens, `rank_dims`); every term uses
them; every value is split by tokens over the group (the KV cache by sequences), the
residual it reads too when the block before ran with dp replicas; no collective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dagc.blocks.base import BlockModule, Values, hidden_dropout, per_gpu, tensor_parallel
from dagc.blocks.shapes import (
    Dims,
    count,
    decoding,
    dims,
    hidden_shape,
    rank_dims,
    residual_in,
    residual_out,
    times,
    token_placement,
    tokens,
    value,
)
from dagc.ir.logical import AttentionKernel, AttentionMask, BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import (
    CostTerm,
    Label,
    batched_matmul,
    decode_attention,
    elementwise,
    fused_attention,
    latent_decode_attention,
    matmul,
)
from dagc.ir.values import MASK_DTYPE, PARTIAL, REPLICATED, Placement, Value, split
from dagc.split import split_evenly

# A rank's term from its query heads h, its kv heads k and the dims it works on.
Make = Callable[[int, int, Dims], CostTerm]
PerRank = Callable[..., Step]


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    D = dims(program)
    hid, d = D.hidden, D.head_dim
    ranks = _ranks(program, block)
    v = _values(program, block)
    x = residual_in(program, block)
    # the value size of a head: d, or MLA's v_head_dim
    d_v = count(model.v_head_dim, "d_v") if model.v_head_dim is not None else d

    def per_rank(base: str, make: Make, part: str = "", **io: Values) -> Step:
        terms = [make(h, k, r) for h, k, r in ranks]
        return per_gpu(base, block, terms, part, **io)

    ln1 = (v["ln1"],)
    decode = decoding(program)
    if model.latent_attention:
        qkv = _latent_projections(program, block, per_rank, v)
    elif block.fused_qkv:
        qkv = [
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, hid, times(count(h + 2 * k), d)),
                reads=ln1,
                writes=(v["q"], v["k"], v["v"]),
            )
        ]
    else:
        qkv = [
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, hid, times(count(h), d)),
                ".q",
                reads=ln1,
                writes=(v["q"],),
            ),
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, hid, times(count(k), d)),
                ".k",
                reads=ln1,
                writes=(v["k"],),
            ),
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, hid, times(count(k), d)),
                ".v",
                reads=ln1,
                writes=(v["v"],),
            ),
        ]
    q, k = v["q"], v["k"]
    norm: list[Step] = []
    if model.qk_norm and decode and model.latent_attention:
        # the keys are the latent every head shares: only the queries have heads to norm
        norm = [
            per_rank(
                "qk_norm",
                lambda h, k_, r: elementwise(times(r.tokens, count(h), d)),
                reads=(q,),
                writes=(v["q_normed"],),
            )
        ]
        q = v["q_normed"]
    elif model.qk_norm:
        # one RMSNorm per query and key head, over its d entries
        norm = [
            per_rank(
                "qk_norm",
                lambda h, k_, r: elementwise(times(r.tokens, count(h + k_), d)),
                reads=(q, k),
                writes=(v["q_normed"], v["k_normed"]),
            )
        ]
        q, k = v["q_normed"], v["k_normed"]

    if decode and model.latent_attention:
        core = _latent_decode(program, per_rank, v, q)
    elif decode:
        core = [
            per_rank(
                "attn_decode",
                lambda h, k_, r: decode_attention(r.batch, count(h), count(k_), r.context, d, d_v),
                reads=(q, k, v["v"], v["kv_cache"]),
                writes=(v["attn"],),
            )
        ]
    elif block.kernel is AttentionKernel.FUSED:
        causal = block.mask is AttentionMask.CAUSAL
        core = [
            per_rank(
                "attn_core",
                lambda h, k_, r: fused_attention(
                    r.batch, count(h), count(k_), r.seq, d, d_v, causal
                ),
                reads=(q, k, v["v"]),
                writes=(v["attn"],),
            )
        ]
    else:
        core = _explicit_core(program, per_rank, v, q, k, d_v)
    dropped, out = hidden_dropout(program, block, v["o"], "o", "hidden_dropout1")
    return (
        per_rank("ln1", lambda h, k_, r: elementwise(times(r.tokens, hid)), reads=x, writes=ln1),
        *qkv,
        *norm,
        *core,
        per_rank(
            "o_proj",
            lambda h, k_, r: matmul(r.tokens, times(count(h), d_v), hid),
            reads=(v["attn"],),
            writes=(v["o"],),
        ),
        *dropped,
        per_rank(
            "res1",
            lambda h, k_, r: elementwise(times(r.tokens, hid)),
            reads=(out, *x),
            writes=(residual_out(program, block, block.gpus),),
        ),
    )


def _ranks(program: Program, block: BlockSteps) -> list[tuple[int, int, Dims]]:
    """(h_i, kv_i, dims) of each rank: its query heads, its kv heads (one, shared, when
    nkv < t) and the dims it works on (its own sequences with dp replicas)."""
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    t = block.degree
    heads = split_evenly(model.heads, t)
    kv = split_evenly(model.kv_heads, t) if model.kv_heads >= t else [1] * t
    # rank r is in replica r // t: its heads are those of its tp rank r % t
    shapes = rank_dims(program, block)
    return [(heads[r % t], kv[r % t], shapes[r]) for r in range(len(block.gpus))]


def _explicit_core(
    program: Program,
    per_rank: PerRank,
    v: dict[str, Value],
    q: Value,
    k: Value,
    d_v: Label,
) -> list[Step]:
    """The explicit core: Q·Kᵀ, softmax (and attention dropout in training), weights·V."""
    d = dims(program).head_dim

    def scores_rows(h: int, r: Dims) -> Label:
        return times(r.batch, r.seq, count(h))  # Bm·S·h, in the seed's order

    # training with attention_dropout: a dropout of the probabilities after softmax
    probs = v["probs"]
    dropout: list[Step] = []
    if program.training is not None and program.model.attention_dropout:
        probs = v["probs_dropped"]
        dropout = [
            per_rank(
                "attn_dropout",
                lambda h, k_, r: elementwise(times(scores_rows(h, r), r.seq)),
                reads=(v["probs"],),
                writes=(probs, v["attn_dropout_mask"]),
            )
        ]
    return [
        per_rank(
            "attn_scores",
            lambda h, k_, r: matmul(scores_rows(h, r), d, r.seq),
            reads=(q, k),
            writes=(v["scores"],),
        ),
        per_rank(
            "softmax",
            lambda h, k_, r: elementwise(times(scores_rows(h, r), r.seq)),
            reads=(v["scores"],),
            writes=(v["probs"],),
        ),
        *dropout,
        per_rank(
            "attn_out",
            lambda h, k_, r: matmul(scores_rows(h, r), r.seq, d_v),
            reads=(probs, v["v"]),
            writes=(v["attn"],),
        ),
    ]


def _latent_decode(
    program: Program, per_rank: PerRank, v: dict[str, Value], q: Value
) -> list[Step]:
    """MLA's decode core in the absorbed form: q_absorb, attn_decode over the latent cache,
    v_absorb (see the module docstring)."""
    model = program.model
    assert model.kv_lora_rank is not None and model.qk_nope_head_dim is not None
    assert model.qk_rope_head_dim is not None and model.v_head_dim is not None
    r_kv = count(model.kv_lora_rank, "d_c")
    rope = count(model.qk_rope_head_dim, "d_r")
    nope = count(model.qk_nope_head_dim, "d_nope")
    d_v = count(model.v_head_dim, "d_v")
    return [
        per_rank(
            "q_absorb",
            lambda h, k_, r: batched_matmul(count(h), r.tokens, nope, r_kv),
            reads=(q,),
            writes=(v["q_absorbed"],),
        ),
        per_rank(
            "attn_decode",
            lambda h, k_, r: latent_decode_attention(r.batch, count(h), r.context, r_kv, rope),
            reads=(v["q_absorbed"], q, v["kv_latent"], v["kv_a"], v["kv_cache"]),
            writes=(v["attn_latent"],),
        ),
        per_rank(
            "v_absorb",
            lambda h, k_, r: batched_matmul(count(h), r.tokens, r_kv, d_v),
            reads=(v["attn_latent"],),
            writes=(v["attn"],),
        ),
    ]


def _latent_projections(
    program: Program, block: BlockSteps, per_rank: PerRank, v: dict[str, Value]
) -> list[Step]:
    """MLA's `qkv` parts: replicated down-projections and their norms, then the
    up-projections split by heads (see the module docstring); a decode step has no
    `.kv_b` (its absorbed form folds kv_b into q_absorb and v_absorb)."""
    model = program.model
    assert model.kv_lora_rank is not None and model.qk_nope_head_dim is not None
    assert model.qk_rope_head_dim is not None and model.v_head_dim is not None
    D = dims(program)
    hid, d = D.hidden, D.head_dim
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
        fused: Make = lambda h, k, r: matmul(r.tokens, hid, count(fused_width(h)))  # noqa: E731
        steps.append(per_rank("qkv", fused, ".qkv_a", reads=ln1, writes=writes))
    if q_lora is not None:
        if not block.fused_qkv:
            steps.append(
                per_rank(
                    "qkv",
                    lambda h, k, r: matmul(r.tokens, hid, count(q_lora)),
                    ".q_a",
                    reads=ln1,
                    writes=(v["q_a"],),
                )
            )
        steps += [
            per_rank(
                "qkv",
                lambda h, k, r: elementwise(times(r.tokens, count(q_lora))),
                ".q_a_norm",
                reads=(v["q_a"],),
                writes=(v["q_latent"],),
            ),
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, count(q_lora), q_up(h)),
                ".q_b",
                reads=(v["q_latent"],),
                writes=(v["q"],),
            ),
        ]
    elif not block.fused_qkv:
        steps.append(
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, hid, q_up(h)),
                ".q",
                reads=ln1,
                writes=(v["q"],),
            )
        )
    if not block.fused_qkv:
        steps.append(
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, hid, count(kv_a_width)),
                ".kv_a",
                reads=ln1,
                writes=(v["kv_a"],),
            )
        )
    steps.append(
        per_rank(
            "qkv",
            lambda h, k, r: elementwise(times(r.tokens, count(r_kv))),
            ".kv_a_norm",
            reads=(v["kv_a"],),
            writes=(v["kv_latent"],),
        )
    )
    if not decoding(program):
        nope_v = model.qk_nope_head_dim + model.v_head_dim
        steps.append(
            per_rank(
                "qkv",
                lambda h, k, r: matmul(r.tokens, count(r_kv), times(count(h), count(nope_v))),
                ".kv_b",
                reads=(v["kv_latent"],),
                writes=(v["k"], v["v"]),
            )
        )
    return steps


def _values(program: Program, block: BlockSteps) -> dict[str, Value]:
    """The values inside an attention block: q, k, v split by heads, o a partial sum; MLA's
    latents replicated; with dp replicas every value split by tokens instead."""
    model = program.model
    assert model.heads is not None and model.kv_heads is not None
    T, S, d = tokens(program), program.workload.seq, model.head_dim or 1
    heads = token_placement(block, split("heads"))
    # K/V are split by kv heads when there are enough; else every rank holds the one head
    # its query heads share.
    kv_shared = model.kv_heads < block.degree
    kv_count = 1 if kv_shared else model.kv_heads
    kv_rows = (("tokens", T), ("kv_heads", kv_count))
    kv_placement = token_placement(block, REPLICATED if kv_shared else split("kv_heads"))
    rows = (("tokens", T), ("heads", model.heads))
    # under MLA the values have their own head size (d_v), and every head its own K and V
    v_dim = ("head_dim", d) if model.v_head_dim is None else ("v_head_dim", model.v_head_dim)
    if model.latent_attention:
        kv_rows, kv_placement = rows, heads
    # a tp > 1 o_proj leaves each rank a partial sum over its heads, awaiting the all-reduce
    o_placement = token_placement(block, PARTIAL if block.degree > 1 else REPLICATED)
    whole = token_placement(block)  # replicated over tp, split by tokens over dp
    values = {
        "ln1": value(program, block, "ln1", hidden_shape(program), whole),
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
        values["kv_a"] = value(
            program, block, "kv_a", (("tokens", T), ("kv_a", r_kv + rope)), whole
        )
        values["kv_latent"] = value(
            program, block, "kv_latent", (("tokens", T), ("kv_lora_rank", r_kv)), whole
        )
        if model.q_lora_rank is not None:
            r_q = (("tokens", T), ("q_lora_rank", model.q_lora_rank))
            values["q_a"] = value(program, block, "q_a", r_q, whole)
            values["q_latent"] = value(program, block, "q_latent", r_q, whole)
        latent_heads = (*rows, ("kv_lora_rank", r_kv))
        values["q_absorbed"] = value(program, block, "q_absorbed", latent_heads, heads)
        values["attn_latent"] = value(program, block, "attn_latent", latent_heads, heads)
    if decoding(program):
        values["kv_cache"] = _kv_cache(program, block)
    return values


def _kv_cache(program: Program, block: BlockSteps) -> Value:
    """The decode step's KV cache of the layer, `kv_cache_l{l}`: the C − 1 earlier tokens'
    keys and values of each sequence (sequences Bm, context C − 1, a dim left out when
    C = 1). GQA/MHA: kv heads × 2·d (k and v), split by kv heads like k and v, or one head
    a rank, replicated, when nkv < t. MLA: the latent and the rope key (r_kv + rope) every
    head shares, replicated over tp. With dp replicas each holds its own sequences'."""
    model = program.model
    assert model.kv_heads is not None and program.workload.context is not None
    earlier = program.workload.context - 1
    rows: tuple[tuple[str, int], ...] = (("sequences", program.workload.microbatch_size),)
    if earlier:
        rows += (("context", earlier),)
    placement: Placement = REPLICATED
    if model.latent_attention:
        assert model.kv_lora_rank is not None and model.qk_rope_head_dim is not None
        shape = (*rows, ("latent", model.kv_lora_rank + model.qk_rope_head_dim))
    else:
        d = model.head_dim or 1
        d_v = model.v_head_dim or d
        shared = model.kv_heads < block.degree
        shape = (*rows, ("kv_heads", 1 if shared else model.kv_heads), ("kv_dim", d + d_v))
        if not shared and block.degree > 1:
            placement = split("kv_heads")
    if block.dp > 1:
        placement = split("sequences")
    return value(program, block, "kv_cache", shape, placement)


def _inputs(program: Program, block: BlockSteps) -> tuple[Value, ...]:
    """The block's program inputs: the KV cache a decode step reads."""
    return (_kv_cache(program, block),) if decoding(program) else ()


# MLA decode's absorbed products (BMM_Time(h_i, T, K, N)): each head's K × N slice of kv_b
ABSORBED = frozenset({"q_absorb", "v_absorb"})


def _held_weights(model: Model, step: Step, rank: int) -> int:
    """The weights of MLA decode's absorbed products: b·K·N of BMM_Time(b, M, K, N) (kv_b's,
    r_kv·h_i·(nope + d_v) over the two), which params.py does not count as it counts a
    Get_Time weight product's K × N."""
    if step.base not in ABSORBED:
        return 0
    term = step.terms[rank]
    b, _, k, n = term.args
    return b * k * n


def _split_items(model: Model) -> list[tuple[str, int]]:
    assert model.heads is not None
    return [("heads", model.heads)]


MODULE = BlockModule(
    kind=BlockKind.ATTENTION,
    summary="ln1, q/k/v, scores, softmax, weights·V (or one fused kernel; attn_decode in a"
    " decode step), o_proj, res1; all-reduce when tp > 1",
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
    held_weights=_held_weights,
    least_ops_per_rank=5,  # fused qkv, fused kernel: ln1, qkv, attn_core, o_proj, res1
    grad_only=frozenset({"res1"}),
    transposed_operand=frozenset({"attn_scores"}),
    backward_all_reduce="all_reduce_attn_bwd",
    recompute_core=frozenset({"attn_scores", "softmax", "attn_dropout", "attn_out", "attn_core"}),
    inputs=_inputs,
)
