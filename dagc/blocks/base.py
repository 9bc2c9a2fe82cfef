"""What a block kind is, in one place: the BlockModule every module of dagc/blocks/ defines.

The front end asks a module which options a block takes and which model keys it needs; the
shard passes ask it for the block's per-rank compute steps; insert-collectives asks it for
the communication inside the block; the analyses ask which of its products hold weights.
Adding a block kind is one new module (plus its BlockKind member), its tests and its docs:
see docs/internals.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from dagc.blocks.shapes import (
    activation_bytes,
    communication,
    count,
    dims,
    hidden_shape,
    sequence_parallel,
    times,
    tokens,
    value,
)
from dagc.ir.logical import BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import CostTerm, TermKind, elementwise
from dagc.ir.values import MASK_DTYPE, REPLICATED, Value, split
from dagc.split import split_evenly

# A block's compute or communication: the block (with the steps it has so far) in, its steps
# out.
StepsOf = Callable[[Program, BlockSteps], tuple[Step, ...]]


def _no_split(model: Model) -> list[tuple[str, int]]:
    return []


def _no_collectives(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    return block.steps


def _no_held_weights(model: Model, step: Step, rank: int) -> int:
    return 0


def _no_inputs(program: Program, block: BlockSteps) -> tuple[Value, ...]:
    return ()


def _no_idle_weights(program: Program, block: BlockSteps) -> dict[int, int]:
    return {}


@dataclass(frozen=True)
class BlockModule:
    """One block kind: its options, needs, split, steps, collectives and weights.

    - `options`: the block's options besides its degree (`fused_qkv`), name -> "bool",
      "int" or a tuple of the values it may take; the degree option is `kind.degree_key`
      (`tp`, `ep`).
    - `needs`: model keys the block cannot do without.
    - `split_items(model)`: what a degree splits, as (what, how many) (`heads`, 32); the
      front end warns on uneven splits and refuses more ranks than items.
    - `compute(program, block)`: the per-rank compute steps, in program order, each naming
      the values it reads and writes (dagc/ir/values.py).
    - `collectives(program, block)`: the block's steps with its collectives inserted (each
      reads a value and writes its communicated form, which later steps then read).
    - `weight_products`: step bases whose matrix products read a weight (the K x N operand).
    - `held_weights(model, step, rank)`: weight elements rank `rank` of a step holds besides
      its products (the embedding table of `embed`, or its rows when vocab-parallel).
    - `tied_table(model, step, rank)`: weight elements of rank `rank` of a step that are the
      embedding table, which `tied_embeddings` shares between embed and lm_head: a GPU
      holding it through both counts it once.
    - `least_ops_per_rank`, `least_ops_per_expert`: operations each rank (each expert) makes
      at least, per layer and micro-batch, whatever the options: the size guard's lower
      bound (dagc.expand.least_operations). 0 for blocks that do not run in every layer.
    - `grad_only`: elementwise steps whose backward reads only the gradient of their output
      (residual adds, sums), not the values they read (the `backward` pass).
    - `transposed_operand`: products of two activations whose second operand is stored
      transposed (Q·Kᵀ reads K): its gradient is a product of the first's shape.
    - `backward_all_reduce`: the name of the tensor-parallel backward all-reduce (Megatron's
      f), which sums the partial gradients the block's sharded products leave for a value
      every rank holds whole (`all_reduce_attn_bwd`).
    - `recompute_core`: steps selective recomputation reruns (attention's core).
    - `idle_weights(program, block)`: {gpu: weight elements} the block's GPUs hold for work
      that runs no operation (a decode step's idle experts), which no product names.
    - `inputs(program, block)`: values the block's steps read that no step writes, the
      program's inputs from outside the step (a decode step's KV cache); its shard pass
      adds them to `StepProgram.inputs`.
    """

    kind: BlockKind
    summary: str
    compute: StepsOf
    needs: tuple[str, ...] = ()
    options: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    split_items: Callable[[Model], list[tuple[str, int]]] = _no_split
    collectives: StepsOf = _no_collectives
    weight_products: frozenset[str] = frozenset()
    held_weights: Callable[[Model, Step, int], int] = _no_held_weights
    tied_table: Callable[[Model, Step, int], int] = _no_held_weights
    least_ops_per_rank: int = 0
    least_ops_per_expert: int = 0
    grad_only: frozenset[str] = frozenset()
    transposed_operand: frozenset[str] = frozenset()
    backward_all_reduce: str = ""
    recompute_core: frozenset[str] = frozenset()
    inputs: Callable[[Program, BlockSteps], tuple[Value, ...]] = _no_inputs
    idle_weights: Callable[[Program, BlockSteps], dict[int, int]] = _no_idle_weights

    @property
    def degree_key(self) -> str | None:
        """The option that sets the block's parallel degree (`tp`, `ep`), if any."""
        return self.kind.degree_key


Values = tuple[Value, ...]


def per_gpu(
    base: str,
    block: BlockSteps,
    terms: list[CostTerm],
    part: str = "",
    *,
    reads: Values = (),
    writes: Values = (),
) -> Step:
    """A step on every GPU of `block`, rank i costing `terms[i]`."""
    return Step(
        base,
        block.layer,
        block.gpus,
        tuple(terms),
        part=part,
        reads=reads,
        writes=writes,
        span=block.span,
    )


def same(
    base: str,
    block: BlockSteps,
    term: CostTerm,
    part: str = "",
    *,
    reads: Values = (),
    writes: Values = (),
) -> Step:
    """A step on every GPU of `block`, each costing `term`."""
    return per_gpu(base, block, [term] * len(block.gpus), part, reads=reads, writes=writes)


def joint(
    base: str, block: BlockSteps, term: CostTerm, *, reads: Values = (), writes: Values = ()
) -> Step:
    """One operation joining every GPU of `block` (a collective)."""
    return Step(
        base,
        block.layer,
        block.gpus,
        (term,),
        joint=True,
        reads=reads,
        writes=writes,
        span=block.span,
    )


HIDDEN_DROPOUTS = frozenset({"hidden_dropout1", "hidden_dropout2"})


def hidden_dropout(
    program: Program, block: BlockSteps, source: Value, prefix: str, base: str
) -> tuple[tuple[Step, ...], Value]:
    """The hidden dropout before a residual add (training with `hidden_dropout` > 0): the
    step `base` (`hidden_dropout1` before res1, `hidden_dropout2` before res2), Elem_Time(T·H),
    reading `source` (the block's output, summed by the collective in between) and writing
    `{prefix}_dropped` and its mask `{prefix}_dropout_mask` (dtype u8: one byte per element),
    which its backward reads.
    Megatron-LM fuses the dropout into bias-dropout-add; dagc prices it as its own pass over
    the T·H activation. Returns the steps and the value the residual add reads."""
    if program.training is None or not program.model.hidden_dropout:
        return (), source
    d = dims(program)
    dropped = value(program, block, f"{prefix}_dropped", hidden_shape(program))
    mask = replace(
        value(program, block, f"{prefix}_dropout_mask", hidden_shape(program)), dtype=MASK_DTYPE
    )
    step = same(
        base,
        block,
        elementwise(times(d.tokens, d.hidden)),
        reads=(source,),
        writes=(dropped, mask),
    )
    return (step,), dropped


def insert_after(steps: tuple[Step, ...], anchor: str, new: Step) -> tuple[Step, ...]:
    """`steps` with `new` after the last step whose base is `anchor`."""
    index = max(i for i, step in enumerate(steps) if step.base == anchor)
    return (*steps[: index + 1], new, *steps[index + 1 :])


def reroute(steps: tuple[Step, ...], start: int, via: Mapping[str, Value]) -> tuple[Step, ...]:
    """Steps from index `start` on read `via[name]` instead of the value `name`.

    A collective or transfer reads a value and writes its communicated form; the steps after
    it must read that form (each value read once, in the order first met).
    """
    rewritten = list(steps)
    for index in range(start, len(steps)):
        step = steps[index]
        if any(value.name in via for value in step.reads):
            reads = tuple(dict.fromkeys(via.get(v.name, v) for v in step.reads))
            rewritten[index] = replace(step, reads=reads)
    return tuple(rewritten)


def communicate_after(
    steps: tuple[Step, ...], anchor: str, new: Step, via: Mapping[str, Value]
) -> tuple[Step, ...]:
    """`new` after the last `anchor` step; the steps after it read through it (`via`)."""
    inserted = insert_after(steps, anchor, new)
    return reroute(inserted, inserted.index(new) + 1, via)


def all_reduce_after(anchor: str, base: str) -> Callable[[Program, BlockSteps], tuple[Step, ...]]:
    """The collectives of a tensor-parallel block: an all-reduce of T·H·w after `anchor`.

    The all-reduce reads the partial sum `anchor` writes and writes it replicated (`_sum`);
    the steps after it read that."""

    def collectives(program: Program, block: BlockSteps) -> tuple[Step, ...]:
        if block.degree == 1:
            return block.steps
        payload, ranks = activation_bytes(program), count(block.degree)
        term = communication(program, TermKind.ALL_REDUCE, payload, ranks, gpus=block.gpus)
        (partial,) = next(s for s in reversed(block.steps) if s.base == anchor).writes
        reduced = replace(partial, name=partial.name + "_sum", placement=REPLICATED)
        step = joint(base, block, term, reads=(partial,), writes=(reduced,))
        return communicate_after(block.steps, anchor, step, {partial.name: reduced})

    return collectives


def tensor_parallel(anchor: str, kind: str) -> Callable[[Program, BlockSteps], tuple[Step, ...]]:
    """The collectives of a tensor-parallel attention or mlp block (`kind`: attn, mlp).

    Without sequence parallelism: `all_reduce_{kind}` after `anchor` (all_reduce_after).
    With it (training, tp = t > 1; Megatron-LM's sequence parallelism): the block's first
    step (its norm) runs on each rank's split(T, t)[i] tokens and writes its output split
    by tokens; `all_gather_{kind}` (AllGather_Time(ceil(T·H·w/t), t)) gathers it before the
    products; `reduce_scatter_{kind}` (ReduceScatter_Time(ceil(T·H·w/t), t)) replaces the
    all-reduce after `anchor`; the last step (the residual add) runs on split(T, t)[i]
    tokens. The residual it writes stays split when the next block is sequence-parallel on
    the same GPUs (`block.split_output`); else `all_gather_{kind}_out` gathers it. The
    residual it reads is split when `block.split_input`.
    """
    plain = all_reduce_after(anchor, f"all_reduce_{kind}")

    def collectives(program: Program, block: BlockSteps) -> tuple[Step, ...]:
        if not sequence_parallel(program, block):
            return plain(program, block)
        return _sequence_parallel(program, block, anchor, kind)

    return collectives


def _sequence_parallel(
    program: Program, block: BlockSteps, anchor: str, kind: str
) -> tuple[Step, ...]:
    t = block.degree
    d = dims(program)
    shares = split_evenly(tokens(program), t)
    by_token = split("tokens")
    piece = count(math.ceil(math.prod(v for _, v in activation_bytes(program)) / t))
    ranks = count(t)

    def on_shares(step: Step) -> tuple[CostTerm, ...]:
        return tuple(elementwise(times(count(n), d.hidden)) for n in shares)

    def split_x(value: Value) -> Value:
        return replace(value, placement=by_token) if block.split_input else value

    x_name = block.input_value
    steps = list(block.steps)
    norm, res = steps[0], steps[-1]
    (normed,) = norm.writes
    normed_part = replace(normed, placement=by_token)
    steps[0] = replace(
        norm,
        terms=on_shares(norm),
        reads=tuple(split_x(v) if v.name == x_name else v for v in norm.reads),
        writes=(normed_part,),
    )
    gathered = replace(normed, name=normed.name + "_gathered", placement=REPLICATED)
    gather_term = communication(program, TermKind.ALL_GATHER, piece, ranks, gpus=block.gpus)
    gather = joint(
        f"all_gather_{kind}", block, gather_term, reads=(normed_part,), writes=(gathered,)
    )
    with_gather = tuple(steps)
    with_gather = communicate_after(with_gather, norm.base, gather, {normed.name: gathered})
    (partial,) = next(s for s in reversed(with_gather) if s.base == anchor).writes
    scattered = replace(partial, name=partial.name + "_rs", placement=by_token)
    scatter_term = communication(program, TermKind.REDUCE_SCATTER, piece, ranks, gpus=block.gpus)
    scatter = joint(
        f"reduce_scatter_{kind}", block, scatter_term, reads=(partial,), writes=(scattered,)
    )
    out = list(communicate_after(with_gather, anchor, scatter, {partial.name: scattered}))
    # a hidden dropout before the residual add runs on the token shares, as the add does
    shared: dict[str, Value] = {}
    for i, step in enumerate(out):
        if step.base in HIDDEN_DROPOUTS:
            writes = tuple(replace(w, placement=by_token) for w in step.writes)
            shared.update((w.name, w) for w in writes)
            out[i] = replace(step, terms=on_shares(step), writes=writes)
    (residual,) = res.writes
    written = replace(residual, placement=by_token)
    if not block.split_output:
        written = replace(written, name=residual.name + "_part")
    out[-1] = replace(
        out[-1],
        terms=on_shares(res),
        reads=tuple(
            split_x(v) if v.name == x_name else shared.get(v.name, v) for v in out[-1].reads
        ),
        writes=(written,),
    )
    if not block.split_output:
        out_term = communication(program, TermKind.ALL_GATHER, piece, ranks, gpus=block.gpus)
        out.append(
            joint(f"all_gather_{kind}_out", block, out_term, reads=(written,), writes=(residual,))
        )
    return tuple(out)
