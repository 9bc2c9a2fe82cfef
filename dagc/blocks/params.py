"""Parameters each GPU holds, per layer, from the weight products and held weights it runs.

One rule, shared by the memory estimate (dagc/analysis/analyze.py) and the data-parallel
pass (dagc/passes/data_parallel.py), so that the gradient bytes a GPU reduces and the
weights it holds cannot disagree: a GPU holds the K x N operand of every weight product
(a block module's `weight_products`) it runs in the forward, plus what its steps hold
otherwise (`held_weights`: the embedding table or its rows), and a tied embedding table
(`tied_table`) once when it runs both embed and lm_head (the larger part is kept; the other
parts leave the layer that held them). Backward, recompute and iteration steps hold nothing
more: their products read the same weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from dagc.blocks import MODULES, weight_products
from dagc.ir.logical import Model, Program
from dagc.ir.steps import BlockSteps, Phase, Step
from dagc.ir.terms import TermKind

WEIGHT_PRODUCTS = weight_products()


def step_parameters(model: Model, step: Step, rank: int) -> int:
    """Weight elements rank `rank` of a forward step holds (0 for other phases)."""
    if step.joint or step.phase is not Phase.FORWARD:
        return 0
    held = sum(m.held_weights(model, step, rank) for m in MODULES.values())
    term = step.terms[rank]
    if term.kind is TermKind.MATMUL and step.base in WEIGHT_PRODUCTS:
        _, k, n = term.args
        held += k * n
    return held


def layer_parameters(model: Model, steps: Iterable[Step]) -> dict[int, dict[int, int]]:
    """{gpu: {layer: parameters}}: the weight elements each GPU holds for each layer.

    Only layers with at least one parameter on the GPU are listed.
    """
    held: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    tables: dict[int, list[tuple[int, int]]] = defaultdict(list)  # (size, layer) per GPU
    for step in steps:
        if step.joint or step.phase is not Phase.FORWARD:
            continue
        for rank, gpu in enumerate(step.gpus):
            count = step_parameters(model, step, rank)
            if count:
                held[gpu][step.layer] += count
            if model.tied_embeddings:
                for m in MODULES.values():
                    if table := m.tied_table(model, step, rank):
                        tables[gpu].append((table, step.layer))
    # A tied table is one tensor: a GPU that runs embed and lm_head holds the larger part once.
    for gpu, parts in tables.items():
        keep = max(range(len(parts)), key=lambda i: parts[i][0])
        for index, (size, layer) in enumerate(parts):
            if index != keep:
                held[gpu][layer] -= size
    return {gpu: {layer: n for layer, n in layers.items() if n > 0} for gpu, layers in held.items()}


def idle_parameters(program: Program, blocks: Iterable[BlockSteps]) -> dict[int, dict[int, int]]:
    """{gpu: {layer: parameters}}: weight elements GPUs hold for work that runs no operation
    (a block module's `idle_weights`: a decode step's idle experts), which the products do
    not name; forward blocks only."""
    held: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for block in blocks:
        kind = block.block_kind
        if kind is None or block.backward:
            continue
        for gpu, n in MODULES[kind].idle_weights(program, block).items():
            held[gpu][block.layer] += n
    return held


def gpu_parameters(model: Model, steps: Iterable[Step]) -> dict[int, int]:
    """{gpu: parameters}: the weight elements each GPU holds, all layers together."""
    return {gpu: sum(layers.values()) for gpu, layers in layer_parameters(model, steps).items()}
