"""Invariants of data parallelism's steps in the step IR (dagc/passes/data_parallel.py).

Restated from the semantics, without the pass's helpers:
- Only a training program has them. Blocks of kind `iteration` hold exactly the phase
  ITERATION steps and come after every other block; blocks of kind `param_gather` (zero=3
  only, dp > 1) hold one `param_all_gather_l{l}` or `param_all_gather_bwd_l{l}` step of
  their layer, never of phase ITERATION.
- The steps are per-GPU (one term per GPU of replica 0); a data-parallel collective joins
  GPU g's copies on the dp replicas (g + r·N, N the layout's GPUs), so its term's rank
  count is dp and its node count the nodes those copies span. `grad_all_reduce` is an
  AllReduce_Time (zero=0), `grad_reduce_scatter` a ReduceScatter_Time (zero ≥ 1),
  `param_all_gather` (zero=1, once per iteration) and zero=3's gathers AllGather_Time;
  `optimizer` is one Adam_Time per GPU, present exactly once in a training program with
  parameters. With dp = 1 there are no collectives.
- A layer's gradient reduction is listed once and reads only values of its own layer; with
  zero=0 each GPU's all-reduced bytes over every layer are its optimizer's parameters × w.
- Data-parallel steps read values living on their GPUs (a subset: one layer's gradients on
  the GPUs of one block); that relaxation is values.py's, for these names only.
"""

from __future__ import annotations

from dagc.ir.logical import Program
from dagc.ir.steps import BlockSteps, IterationKind, Phase, Step, StepProgram
from dagc.ir.terms import TermKind
from dagc.ir.verify.errors import VerificationError

# Data-parallel collectives and the term kind each has.
DP_COLLECTIVES = {
    "grad_all_reduce": TermKind.ALL_REDUCE,
    "grad_reduce_scatter": TermKind.REDUCE_SCATTER,
    "param_all_gather": TermKind.ALL_GATHER,
    "param_all_gather_bwd": TermKind.ALL_GATHER,
}
# Every step the data-parallel pass makes.
DP_STEPS = frozenset({*DP_COLLECTIVES, "optimizer"})


def is_dp_block(block: BlockSteps) -> bool:
    """Whether the data-parallel pass made this block (not one the file placed)."""
    return isinstance(block.kind, IterationKind)


def check_data_parallel(steps: StepProgram) -> None:
    """Check the data-parallel steps; see the module docstring."""
    program = steps.program
    training = program.training
    blocks = steps.blocks
    dp_blocks = [block for block in blocks if is_dp_block(block)]
    if training is None:
        if dp_blocks:
            raise VerificationError(f"a prefill program has a {dp_blocks[0].kind} block")
        return
    seen_iteration = False
    for block in blocks:
        phases = {step.phase is Phase.ITERATION for step in block.steps}
        if block.kind is IterationKind.ITERATION:
            seen_iteration = True
            if phases != {True}:
                raise VerificationError(f"iteration block l{block.layer} holds other phases")
        elif True in phases:
            raise VerificationError(f"{block.kind} l{block.layer} holds an iteration step")
        elif seen_iteration:
            raise VerificationError(f"{block.kind} l{block.layer} comes after the iteration")
        if block.kind is IterationKind.PARAM_GATHER:
            if training.zero != 3 or training.dp == 1:
                raise VerificationError(f"a param_gather block with zero={training.zero}")
            if [s.base for s in block.steps] not in (
                ["param_all_gather"],
                ["param_all_gather_bwd"],
            ):
                raise VerificationError(f"param_gather l{block.layer} holds other steps")
    dp_steps = [step for block in dp_blocks for step in block.steps]
    for step in dp_steps:
        _check_step(program, step)
    _check_stage(program, dp_steps)
    _check_buckets(dp_steps, steps)


def _check_step(program: Program, step: Step) -> None:
    assert program.training is not None
    dp = program.training.dp
    where = f"step {step.base} l{step.layer}"
    if step.base not in DP_STEPS:
        raise VerificationError(f"{where} is not a data-parallel step")
    if step.joint:
        raise VerificationError(f"{where} joins GPUs; it runs per GPU of replica 0")
    layout = max(g for group in program.groups for g in group.gpus) + 1
    size = program.hardware.node_size
    for gpu, term in zip(step.gpus, step.terms, strict=True):
        if step.base == "optimizer":
            if term.kind is not TermKind.OPTIMIZER:
                raise VerificationError(f"{where} on gpu {gpu} costs {term}, not Adam_Time")
            continue
        nodes = len({(gpu + r * layout) // size for r in range(dp)})
        want = DP_COLLECTIVES[step.base]
        if term.kind is not want or term.args[1] != dp or term.nodes != nodes:
            raise VerificationError(
                f"{where} on gpu {gpu} costs {term}; it needs {want.value}(…, {dp})"
                f" over {nodes} node(s)"
            )


def _check_stage(program: Program, dp_steps: list[Step]) -> None:
    """The steps the ZeRO stage and dp call for, and no others."""
    assert program.training is not None
    dp, zero = program.training.dp, program.training.zero
    bases = {step.base for step in dp_steps}
    if dp_steps and sum(step.base == "optimizer" for step in dp_steps) != 1:
        raise VerificationError("a training program needs exactly one optimizer step")
    allowed = {"optimizer"}
    if dp > 1:
        allowed.add("grad_all_reduce" if zero == 0 else "grad_reduce_scatter")
        allowed |= {"param_all_gather"} if zero == 1 else set()
        allowed |= {"param_all_gather", "param_all_gather_bwd"} if zero == 3 else set()
    extra = bases - allowed
    if extra:
        raise VerificationError(f"dp={dp} zero={zero} has no {sorted(extra)[0]} step")


def _check_buckets(dp_steps: list[Step], steps: StepProgram) -> None:
    """One reduction per layer, reading that layer's values; zero=0's bytes add up."""
    layer_of = {value.name: step.layer for step in steps.steps() for value in step.writes}
    reduced: dict[int, int] = {}
    seen: set[int] = set()
    optimizer = None
    for step in dp_steps:
        if step.base == "optimizer":
            optimizer = step
        if not step.base.startswith("grad_"):
            continue
        if step.layer in seen:
            raise VerificationError(f"layer {step.layer}'s gradients are reduced twice")
        seen.add(step.layer)
        for value in step.reads:
            if layer_of.get(value.name) != step.layer:
                raise VerificationError(
                    f"step {step.base}_l{step.layer} reads {value.name} of another layer"
                )
        if step.base == "grad_all_reduce":
            for gpu, term in zip(step.gpus, step.terms, strict=True):
                reduced[gpu] = reduced.get(gpu, 0) + term.args[0]
    if optimizer is None or not reduced:
        return
    w = steps.program.workload.dtype.bytes
    for gpu, term in zip(optimizer.gpus, optimizer.terms, strict=True):
        if reduced.get(gpu, 0) != term.args[0] * w:
            raise VerificationError(
                f"gpu {gpu} all-reduces {reduced.get(gpu, 0)} gradient bytes but its"
                f" optimizer updates {term.args[0]} parameters of {w} bytes"
            )
