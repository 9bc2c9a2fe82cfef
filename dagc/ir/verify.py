"""Verifiers: invariants of each IR level, run after every pass in tests and debug mode."""

from __future__ import annotations

from dagc.ir.device import DeviceGraph
from dagc.ir.logical import Program
from dagc.ir.steps import StepProgram


class VerificationError(Exception):
    """An IR broke one of its invariants: a bug in a pass, never a user error."""


def verify_logical(program: Program) -> None:
    """Every layer placed exactly once, in order."""
    placed = [layer for r in program.ranges for layer in r.layer_indices]
    if sorted(placed) != list(range(program.model.layers)):
        raise VerificationError(f"layers placed {placed}, expected 0..{program.model.layers - 1}")


def verify_steps(steps: StepProgram) -> None:
    """Every GPU of a compute block's group runs each of its per-GPU steps."""
    for block in steps.blocks:
        if block.kind == "transfer":
            continue
        for step in block.steps:
            if step.joint:
                continue
            if set(step.gpus) not in (set(block.gpus), set(block.input_gpus)):
                raise VerificationError(
                    f"{step.base} of {block.kind} l{block.layer} runs on {step.gpus}"
                )


def verify_device(graph: DeviceGraph) -> None:
    """Acyclic; edges in range; unique names; each per-GPU step covers its GPUs once."""
    n = graph.num_ops
    if len(graph.src) and (graph.src.min() < 0 or max(graph.src.max(), graph.dst.max()) >= n):
        raise VerificationError("edge endpoint out of range")
    # A cycle is not checked here: a placement whose program order deadlocks makes one,
    # and that is the user's error, reported with its location by dagc.expand.
    names = [graph.name(t) for t in range(graph.template_size)]
    if len(set(names)) != len(names):
        duplicates = sorted({x for x in names if names.count(x) > 1})[:5]
        raise VerificationError(f"duplicate operation names: {duplicates}")
    for step in graph.steps:
        if len(set(step.gpus)) != len(step.gpus):
            raise VerificationError(f"{step.base} lists a GPU twice")


def verify(ir: object) -> None:
    """Run the verifier of whatever IR level `ir` is."""
    if isinstance(ir, Program):
        verify_logical(ir)
    elif isinstance(ir, StepProgram):
        verify_steps(ir)
    elif isinstance(ir, DeviceGraph):
        verify_device(ir)
