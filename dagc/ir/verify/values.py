"""The sharding type-check of the step IR: the values steps read and write (dagc/ir/values.py).

- Every step writes at least one value, and every value has exactly one writer.
- Every value a step reads was written by an earlier step, and is read as it was written:
  the same shape, dtype, placement and GPUs.
- Where values live: a step reads values living on its GPUs and writes values onto its own
  GPUs; the sums over a moe group's ranks (expert_agg, combine, return) read the experts'
  outputs and their sum on a subset of their GPUs (in decode, experts receiving no token
  run no operation). A value crosses groups only through a transfer: the sending steps (send_stage,
  broadcast, return, kv_send, and a routed excursion's dispatch, which reads on the input
  GPUs) write onto the receiving GPUs. Where values live is checked once
  insert-transfers has run (or when the program needs no transfer): before, a block
  reached from another group still reads its input where the block before left it.
- A partial sum is read by nothing but a reduction (an all-reduce, combine, or the return
  that sums the MoE GPUs' results), once the block's communication is inserted. In the
  backward, a per-GPU step may read a partial gradient (`d_…`): backward steps are linear in
  the gradient, so it then writes partial values (the gradient of the input the partial one
  flows to; qk_norm maps q and k apart), which a backward all-reduce sums.
- A matmul contracts the trailing dims of its activation input (its first read value): on
  every GPU, the term's K equals the product of the last dims that GPU holds. In the
  backward: a dgrad or an activation product's gradient (BACKWARD) contracts the trailing
  dims of its first read (dY, or the saved operand), or, reading several output gradients
  (a fused product's), at most their summed row widths; its N is the trailing dims of the
  gradient it writes. A weight gradient (WEIGHT_GRAD) Get_Time(K, M, N) reads the saved
  input X first: K is a trailing product of X's dims there and the contracted M (tokens)
  divides what is left of X.

Before every shard pass has run, reads of a block not sharded yet are not checked.

The program's inputs (`StepProgram.inputs`: a decode step's KV cache, which no step of the
program writes) are read as they are declared, as if written before the first step; no
step writes one, input names are unique, and each input is read by some step.
Errors name the step, its block and, where the step comes from the file, its line.
After collapse-symmetric the steps run on the kept GPUs only; values keep every GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from dagc.ir.steps import BlockSteps, Phase, Step, StepProgram, TransferKind
from dagc.ir.terms import TermKind
from dagc.ir.values import PlacementKind, Value, residual_name
from dagc.ir.verify.data_parallel import DP_STEPS
from dagc.ir.verify.errors import VerificationError

# Joint steps that write onto another group's GPUs (a transfer's sending side; kv_send
# writes a disaggregated prefill's KV cache onto the decode layout's GPUs).
SENDERS = frozenset(
    {
        "send_stage",
        "broadcast",
        "return",
        "send_grad_stage",
        "broadcast_bwd",
        "return_bwd",
        "kv_send",
    }
)
# Joint steps that may read a partial sum: they sum it.
REDUCTIONS = frozenset(
    {
        "all_reduce_attn",
        "all_reduce_mlp",
        "all_reduce_embed",
        "combine",
        "return",
        "all_reduce_attn_bwd",
        "all_reduce_mlp_bwd",
        "all_reduce_moe_bwd",
        "all_reduce_head_bwd",
        "broadcast_bwd",  # the reverse of a broadcast sums the MoE GPUs' gradients
        "reduce_scatter_attn",  # sequence parallelism
        "reduce_scatter_mlp",
        "reduce_scatter_attn_bwd",
        "reduce_scatter_mlp_bwd",
        "reduce_scatter_attn_out_bwd",
        "reduce_scatter_mlp_out_bwd",
    }
)

# Steps that sum what some of their GPUs hold (decode's idle experts run no operation): they
# may read the experts' outputs and their sum on a subset of their GPUs.
# (res2 reads the sum directly until insert-collectives puts combine in between.)
SUM_SOME = {
    "expert_agg": ("expert", "shared_"),
    "combine": ("moe_agg",),
    "return": ("moe_agg",),
    "res2": ("moe_agg",),
}

Restrict = Callable[[tuple[int, ...]], tuple[int, ...]]


@dataclass(frozen=True)
class _Context:
    """A step and where it is, for the checks and their messages."""

    step: Step
    block: BlockSteps
    restrict: Restrict

    @property
    def kind(self) -> str:
        """The step's base without a stage number (`send_stage1` -> `send_stage`), a rerun
        as the step it reruns (`all_reduce_attn_recompute` -> `all_reduce_attn`)."""
        return self.step.base.rstrip("0123456789").removesuffix("_recompute")

    @property
    def routed_dispatch(self) -> bool:
        """The dispatch of a routed excursion: it reads on the input GPUs and writes onto
        the MoE GPUs, a transfer that joins both sides."""
        return (
            self.kind in ("dispatch", "dispatch_bwd")
            and self.block.excursion
            and self.step.gpus != self.block.gpus
        )

    @property
    def sends(self) -> bool:
        """Whether the step writes onto another group's GPUs (a transfer's sending side)."""
        return self.kind in SENDERS or self.routed_dispatch

    def fail(self, message: str) -> VerificationError:
        """An error naming the step, its block and its line in the file."""
        block = self.block
        where = f"step {self.step.base}{self.step.part} of {block.kind} l{block.layer}"
        where += f" on @{block.group}"
        if self.step.span is not None:
            where += f" (line {self.step.span.line})"
        return VerificationError(f"{where} {message}")


def check_values(steps: StepProgram, restrict: Restrict) -> None:
    """Type-check the values of every step, in program order; see the module docstring."""
    written = _inputs(steps)
    inputs = frozenset(written)
    transfers_pending = _transfers_pending(steps)
    # the shard passes run one block kind at a time: a block not sharded yet writes nothing
    unsharded = {residual_name(str(b.kind), b.layer) for b in steps.blocks if not b.steps}
    for block in steps.blocks:
        communicated = any(step.joint for step in block.steps)
        for step in block.steps:
            context = _Context(step, block, restrict)
            for value in step.reads:
                if value.name in unsharded:
                    continue
                source = _check_read(context, value, written, transfers_pending)
                if not transfers_pending:
                    _check_lives_here(context, source)
                if communicated:
                    _check_partial(context, source)
            _check_contraction(context)
            _check_writes(context, written, transfers_pending, inputs)
    read = {value.name for step in steps.steps() for value in step.reads}
    for value in steps.inputs:
        if value.name not in read:
            raise VerificationError(f"program input {value.name} is read by no step")


def _inputs(steps: StepProgram) -> dict[str, Value]:
    """The program's inputs by name: values every step may read, none writes."""
    inputs: dict[str, Value] = {}
    for value in steps.inputs:
        if value.name in inputs:
            raise VerificationError(f"program input {value.name} is listed twice")
        inputs[value.name] = value
    return inputs


def _transfers_pending(steps: StepProgram) -> bool:
    """Whether some block reads its input on other GPUs and insert-transfers has not run."""
    needed = any(set(b.input_gpus) != set(b.gpus) for b in steps.blocks if b.input_gpus)
    inserted = any(
        block.kind == TransferKind.TRANSFER or any(s.base == "recv_moe" for s in block.steps)
        for block in steps.blocks
    )
    return needed and not inserted


def _check_read(
    context: _Context, value: Value, written: dict[str, Value], transfers_pending: bool
) -> Value:
    """The value as its writer wrote it; the read must agree with it exactly (but for where
    it lives, while transfers are pending)."""
    source = written.get(value.name)
    if source is None:
        raise context.fail(f"reads {value.name}, which no earlier step writes")
    if source != (value.on(source.gpus) if transfers_pending else value):
        raise context.fail(f"reads {value.describe()}, but it was written as {source.describe()}")
    return source


def _check_lives_here(context: _Context, value: Value) -> None:
    if context.step.base in DP_STEPS:
        # a data-parallel step reads each layer's gradients where they live: on some of its
        # GPUs (one block's), never elsewhere
        if not set(context.restrict(value.gpus)) <= set(context.restrict(context.step.gpus)):
            raise context.fail(f"reads {value.name}, which lives on {list(value.gpus)}")
        return
    step_gpus = context.step.gpus
    if context.routed_dispatch:  # it reads on the sending side
        backward = context.kind == "dispatch_bwd"
        step_gpus = context.block.gpus if backward else context.block.input_gpus
    gpus = context.restrict(step_gpus)
    if value.name.startswith(SUM_SOME.get(context.step.base, ())):
        # decode: experts that receive no token do not run; a sum over the ranks reads what
        # the ranks that ran wrote (the others add nothing)
        if not set(context.restrict(value.gpus)) <= set(gpus):
            raise context.fail(f"reads {value.name}, which lives on {list(value.gpus)}")
        return
    if not set(gpus) <= set(value.gpus):
        raise context.fail(
            f"runs on {list(gpus)} but reads {value.name}, which lives on {list(value.gpus)}:"
            " a value crosses groups only through a transfer"
        )


def _check_partial(context: _Context, value: Value) -> None:
    step = context.step
    if value.placement.kind is not PlacementKind.PARTIAL:
        return
    if (
        step.phase in (Phase.BACKWARD, Phase.WEIGHT_GRAD)
        and not step.joint
        and value.name.startswith("d_")
    ):
        # linear in the gradient: a partial gradient in, partial values out
        if not any(w.placement.kind is PlacementKind.PARTIAL for w in step.writes):
            raise context.fail(
                f"reads the partial gradient {value.name} but writes no partial value:"
                " a backward step is linear in the gradient"
            )
        return
    if value.placement.kind is PlacementKind.PARTIAL and context.kind not in REDUCTIONS:
        raise context.fail(
            f"reads the partial sum {value.name}; only a reduction"
            " (all-reduce, combine, return) may read a partial sum"
        )


def _check_writes(
    context: _Context, written: dict[str, Value], transfers_pending: bool, inputs: frozenset[str]
) -> None:
    step = context.step
    if not step.writes:
        raise context.fail("writes no value")
    for value in step.writes:
        if value.name in inputs:
            raise context.fail(f"writes {value.name}, a program input: no step writes one")
        if value.name in written:
            raise context.fail(f"writes {value.name}, which an earlier step already writes")
        placed = transfers_pending or context.sends
        # after a symmetric collapse the step runs on the kept GPUs of the value's
        if not placed and set(context.restrict(value.gpus)) != set(context.restrict(step.gpus)):
            raise context.fail(
                f"runs on {list(step.gpus)} but writes {value.name} onto"
                f" {list(value.gpus)}: only a transfer writes onto other GPUs"
            )
        written[value.name] = value


def _check_contraction(context: _Context) -> None:
    """K of each rank's matmul is the product of the last dims its activation holds there
    (backward products: see the module docstring)."""
    step = context.step
    if step.joint or not step.reads or step.terms[0].kind is not TermKind.MATMUL:
        return
    if step.phase is Phase.WEIGHT_GRAD:
        _check_weight_grad(context)
        return
    activation = step.reads[0]
    gradients = [v for v in step.reads if v.name.startswith("d_")]
    backward = step.phase is Phase.BACKWARD
    for rank, gpu in enumerate(step.gpus):
        m, contracted, n = step.terms[rank].args
        if gpu not in activation.gpus:
            continue  # reported by the location check (or a transfer is still pending)
        held = activation.local_sizes(activation.gpus.index(gpu))
        if contracted in _suffixes(held):
            pass
        elif backward and len(gradients) > 1 and activation is gradients[0]:
            widths = sum(_held(v, gpu) // m for v in gradients if gpu in v.gpus)
            if contracted > widths:
                raise context.fail(
                    f"contracts K={contracted} on gpu {gpu}, more than the {widths} columns"
                    " of the output gradients it reads"
                )
        else:
            raise context.fail(
                f"contracts K={contracted} on gpu {gpu}, but its input {activation.name}"
                f" holds {list(held)} there ({activation.describe()}):"
                " no trailing dims of that size"
            )
        if backward and step.writes and gpu in step.writes[0].gpus:
            out = step.writes[0]
            out_held = out.local_sizes(out.gpus.index(gpu))
            if n not in _suffixes(out_held):
                raise context.fail(
                    f"writes N={n} columns on gpu {gpu}, but its gradient {out.name} holds"
                    f" {list(out_held)} there: no trailing dims of that size"
                )


def _check_weight_grad(context: _Context) -> None:
    """Get_Time(K, M, N) of a weight gradient: K a trailing product of the saved input X
    (its first read), M dividing the rest of what X holds there."""
    step = context.step
    x = step.reads[0]
    for rank, gpu in enumerate(step.gpus):
        k, m, _ = step.terms[rank].args
        if gpu not in x.gpus:
            continue
        held = x.local_sizes(x.gpus.index(gpu))
        if k not in _suffixes(held) or (math.prod(held) // k) % m:
            raise context.fail(
                f"computes a weight gradient Get_Time({k}, {m}, ...) on gpu {gpu}, but its"
                f" input {x.name} holds {list(held)} there ({x.describe()}): K must be its"
                " trailing dims and M divide the rest"
            )


def _suffixes(held: tuple[int, ...]) -> set[int]:
    """Products of the trailing dims (1 included for nothing)."""
    return {math.prod(held[i:]) for i in range(len(held))}


def _held(value: Value, gpu: int) -> int:
    """Elements `value` holds on `gpu`."""
    return math.prod(value.local_sizes(value.gpus.index(gpu)))
