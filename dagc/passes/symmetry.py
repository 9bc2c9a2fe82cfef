"""collapse-symmetric: keep one GPU of each set of GPUs that do exactly the same work.

GPUs are equivalent when they run the same steps with the same cost terms (tp ranks with
equal head counts, ep ranks with equal expert counts: only their expert indices differ).
The device DAG is symmetric under swapping equivalent GPUs, so their operations start and
finish at the same times: the critical path and the formula of the collapsed program equal
those of the full one. Ties break towards the lowest GPU id, which is the representative
kept, so even the path's names are the same. Totals (operations, edges, FLOPs, per-GPU
figures) are recovered from the class sizes. Tests check all of this against the full
expansion.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from dagc.ir.steps import BlockSteps, Step, StepProgram, Symmetry

NAME = "collapse-symmetric"


def collapse_symmetric(steps: StepProgram) -> StepProgram:
    """The program restricted to one representative GPU per equivalence class."""
    all_steps = steps.steps()
    signatures: dict[int, list[object]] = defaultdict(list)
    for index, step in enumerate(all_steps):
        for rank, gpu in enumerate(step.gpus):
            signatures[gpu].append((index, None if step.joint else step.terms[rank]))
    classes: dict[tuple[object, ...], list[int]] = defaultdict(list)
    for gpu in sorted(signatures):
        classes[tuple(signatures[gpu])].append(gpu)
    class_size = {members[0]: len(members) for members in classes.values()}
    representative = {gpu: members[0] for members in classes.values() for gpu in members}
    keep = set(class_size)
    blocks = tuple(_restrict_block(block, keep) for block in steps.blocks)
    symmetry = Symmetry(tuple(all_steps), class_size, representative)
    return replace(steps, blocks=blocks, symmetry=symmetry)


def _restrict_block(block: BlockSteps, keep: set[int]) -> BlockSteps:
    return replace(
        block,
        gpus=tuple(g for g in block.gpus if g in keep),
        steps=tuple(_restrict_step(step, keep) for step in block.steps),
    )


def _restrict_step(step: Step, keep: set[int]) -> Step:
    ranks = [rank for rank, gpu in enumerate(step.gpus) if gpu in keep]
    gpus = tuple(step.gpus[rank] for rank in ranks)
    if step.joint:
        return replace(step, gpus=gpus)
    terms = tuple(step.terms[rank] for rank in ranks)
    experts = tuple(step.experts[rank] for rank in ranks) if step.experts else ()
    return replace(step, gpus=gpus, terms=terms, experts=experts)
