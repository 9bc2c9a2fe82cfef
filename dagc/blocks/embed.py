"""embed: the embedding lookup, T·H elements written on every rank, before layer 0.

Each rank holds the whole V x H table (charged to its weights) and writes x of layer 0,
replicated on its GPUs. A `vocab_parallel` embed splits the table's rows instead: rank i of
t holds split(V, t)[i] rows, looks up the tokens whose rows it holds (Elem_Time(T·H) on
each rank, zeros elsewhere: a partial sum of T x H), and `all_reduce_embed` (T·H·w over the
group, absent with one GPU) sums it into x of layer 0.

With dp replicas (attention data parallelism) rank r looks up its own T_r tokens
(`rank_tokens`), Elem_Time(T_r·H), and writes its part of x of layer 0 (split by tokens);
`vocab_parallel` splits the rows over a replica's ranks only (tp = 1: none).

With `tied_embeddings` the table is lm_head's weight too: a GPU running both holds it once
(`tied_table` tells the memory estimate which weights are that table).
"""

from __future__ import annotations

from dataclasses import replace

from dagc.blocks.base import BlockModule, joint, per_gpu
from dagc.blocks.shapes import (
    activation_bytes,
    communication,
    count,
    dims,
    hidden_shape,
    rank_token_labels,
    residual_out,
    times,
    value,
)
from dagc.ir.logical import BlockKind, Model, Program
from dagc.ir.steps import BlockSteps, Step
from dagc.ir.terms import TermKind, elementwise
from dagc.ir.values import PARTIAL, split
from dagc.split import split_evenly


def _vocab_split(block: BlockSteps) -> bool:
    """Whether the block's rows are split over more than one GPU (of one replica)."""
    return block.vocab_parallel and len(block.gpus) // block.dp > 1


def _compute(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    D = dims(program)
    # the token ids it looks up are the program's input, which no step writes
    lookups = [elementwise(times(t, D.hidden)) for t in rank_token_labels(program, block)]
    x = residual_out(program, block, block.gpus)
    return (per_gpu("embed", block, lookups, writes=(x,)),)


def _collectives(program: Program, block: BlockSteps) -> tuple[Step, ...]:
    """A vocab-parallel embed sums its ranks' lookups: the lookup now writes a partial sum
    and all_reduce_embed (T·H·w) writes x of layer 0, which the next block reads. (Until
    this pass the lookup writes x itself, so that x has a writer after every pass.)"""
    if block.split_output:
        # sequence parallelism: each rank looks up its split(T, t)[i] tokens
        (lookup,) = block.steps
        (x,) = lookup.writes
        hidden = dims(program).hidden
        shares = split_evenly(program.workload.tokens_per_microbatch, len(block.gpus))
        terms = tuple(elementwise(times(count(n), hidden)) for n in shares)
        return (replace(lookup, terms=terms, writes=(replace(x, placement=split("tokens")),)),)
    if not _vocab_split(block):
        return block.steps
    (lookup,) = block.steps
    partial = value(program, block, "embed_part", hidden_shape(program), PARTIAL)
    lookup = replace(lookup, writes=(partial,))
    term = communication(
        program,
        TermKind.ALL_REDUCE,
        activation_bytes(program),
        count(len(block.gpus)),
        gpus=block.gpus,
    )
    x = residual_out(program, block, block.gpus)
    return (lookup, joint("all_reduce_embed", block, term, reads=(partial,), writes=(x,)))


def _held_weights(model: Model, step: Step, rank: int) -> int:
    """The table rows rank `rank` of the embed step holds, times H: every row, or its
    split(V, t)[rank] when the lookup is vocab-parallel (it then writes a partial sum)."""
    if step.base != "embed" or model.vocab is None:
        return 0
    rows = model.vocab
    if step.writes and step.writes[0].placement == PARTIAL:
        rows = split_evenly(model.vocab, len(step.gpus))[rank]
    return rows * model.hidden


MODULE = BlockModule(
    kind=BlockKind.EMBED,
    summary="the embedding lookup on every rank; vocab_parallel: split rows, an all-reduce",
    compute=_compute,
    options={"vocab_parallel": "bool"},
    collectives=_collectives,
    held_weights=_held_weights,
    tied_table=_held_weights,
)
