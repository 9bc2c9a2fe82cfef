"""The pass registry and pipeline: run passes in order, print or verify between them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from dagc.ir.logical import Program
from dagc.ir.steps import StepProgram
from dagc.passes.backward import backward
from dagc.passes.collectives import insert_collectives
from dagc.passes.data_parallel import data_parallel
from dagc.passes.microbatch import microbatch
from dagc.passes.order import order
from dagc.passes.place import place
from dagc.passes.shard import shard_attention, shard_embed_head, shard_mlp, shard_moe
from dagc.passes.streams import assign_streams
from dagc.passes.symmetry import collapse_symmetric
from dagc.passes.transfers import insert_transfers


@dataclass(frozen=True)
class Pass:
    """A named function from one IR to the next."""

    name: str
    run: Callable[[Any], Any]
    summary: str
    optional: bool = False


PIPELINE: tuple[Pass, ...] = (
    Pass("place", place, "layer ranges -> one block sequence on concrete GPUs"),
    Pass("shard-attention", shard_attention, "attention ops per tp rank"),
    Pass("shard-mlp", shard_mlp, "mlp ops per tp rank"),
    Pass("shard-moe", shard_moe, "gate and experts per ep rank"),
    Pass("shard-embed-head", shard_embed_head, "embedding lookup and lm_head"),
    Pass("insert-collectives", insert_collectives, "all-reduce, dispatch and combine"),
    Pass("insert-transfers", insert_transfers, "pipeline send/recv, broadcast and return"),
    Pass("backward", backward, "training: the backward blocks after the forward, in reverse"),
    Pass(
        "data-parallel",
        data_parallel,
        "gradient reduction over dp replicas, optimizer, ZeRO gathers (training only)",
    ),
    Pass("assign-streams", assign_streams, "communication of `overlap` blocks -> comm stream"),
    Pass(
        "collapse-symmetric",
        collapse_symmetric,
        "keep one GPU of each set doing the same work (only when enabled)",
        optional=True,
    ),
    Pass("microbatch", microbatch, "repeat per micro-batch: the device DAG, data edges"),
    Pass("order", order, "program-order edges on every GPU"),
)
REGISTRY: dict[str, Pass] = {p.name: p for p in PIPELINE}


@dataclass
class PassOptions:
    """What the pipeline does between passes."""

    print_after: frozenset[str] = frozenset()
    verify_each: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    stream: TextIO | None = None
    after: dict[str, Callable[[Any], None]] = field(default_factory=dict)
    enable: frozenset[str] = frozenset()


def lower_to_steps(program: Program, options: PassOptions | None = None) -> StepProgram:
    """Run the passes up to and including assign-streams: the complete step IR."""
    result = run_passes(program, options, until="assign-streams")
    assert isinstance(result, StepProgram)
    return result


def verify(ir: object, *, ordered: bool = True) -> None:
    """dagc.ir.verify.verify, imported on first use: only --verify and the tests verify, so
    the verifiers' modules stay out of every other start."""
    from dagc.ir.verify import verify as verify_level

    verify_level(ir, ordered=ordered)


def run_passes(
    program: Any,
    options: PassOptions | None = None,
    until: str | None = None,
    *,
    resume_after: str | None = None,
) -> Any:
    """Run the pipeline's passes in order, stopping after `until` if given.

    With `resume_after`, `program` is the IR that pass made and the passes after it run:
    a caller that looks at the step IR before deciding the rest (expand's automatic
    symmetry) builds it only once.
    """
    options = options or PassOptions()
    unknown = options.print_after - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown pass {sorted(unknown)[0]}")
    if resume_after is not None and resume_after not in REGISTRY:
        raise ValueError(f"unknown pass {resume_after}")
    ir: Any = program
    names = [each.name for each in PIPELINE]
    first = names.index(resume_after) + 1 if resume_after is not None else 0
    if options.verify_each and first == 0:
        verify(program)  # the input level too: a pass's bug must not be blamed on its input
    ran: set[str] = set(names[:first])
    for each in PIPELINE[first:]:
        if each.optional and each.name not in options.enable:
            continue
        started = time.perf_counter()
        ir = each.run(ir)
        options.timings[each.name] = time.perf_counter() - started
        ran.add(each.name)
        # The caller's checks come first: they report user errors (a deadlock, a size limit)
        # as diagnostics, which must win over the verifier's bug report on the same graph.
        if each.name in options.after:
            options.after[each.name](ir)
        if each.name in options.print_after and options.stream is not None:
            options.stream.write(f"// ----- IR after {each.name} -----\n{ir}\n")
        if options.verify_each:
            verify(ir, ordered="order" in ran)
        if each.name == until:
            break
    return ir
