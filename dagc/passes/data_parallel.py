"""data-parallel: gradient reduction over the dp replicas, the optimizer step, ZeRO.

A training program runs `dp` replicas of the file's layout; only replica 0 is expanded
(the replicas are identical). A data-parallel collective of GPU g joins g's copies on the
other replicas, GPU ids g + r·N (N the layout's GPUs, r = 0 … dp − 1): one operation per
GPU of replica 0, so these are per-GPU communication steps, inter-node when the copies span
nodes. Parameters per GPU and layer come from the weight products the GPU runs
(dagc/blocks/params.py, the rule the memory estimate uses); gradients are reduced in the
workload's dtype (w bytes each).

Once per iteration (phase ITERATION, blocks of kind `iteration` after every other block;
the device DAG's tail):
- per layer (a bucket), last layer first (the order the backward finishes them), on every
  GPU holding parameters of that layer: `grad_all_reduce_l{l}` AllReduce_Time(params·w, dp)
  with zero = 0, or `grad_reduce_scatter_l{l}` ReduceScatter_Time(⌈params·w/dp⌉, dp) with
  zero ≥ 1 (the term takes one rank's piece). It reads the layer's weight gradients (the
  values its WEIGHT_GRAD steps write on that GPU; the forward weight products' outputs when
  the program has no backward), so it waits for every micro-batch's. `grad_overlap` puts
  these on the communication stream: each starts when its layer's gradients are done and
  its GPU's communication stream is free, overlapping the rest of the backward;
- `optimizer` on every GPU: Adam_Time(params), of the local shard ⌈params/dp⌉ with
  zero ≥ 1, after the GPU's reductions;
- zero = 1: `param_all_gather` AllGather_Time(⌈params·w/dp⌉, dp), the updated shards back
  on every replica.
With dp = 1 there is nothing to reduce or gather: only the optimizer.

zero = 3 (parameters sharded over the replicas): per micro-batch, `param_all_gather_l{l}`
AllGather_Time(⌈params·w/dp⌉, dp) on the layer's GPUs before the layer's first block (after
the stage transfer into it, if any), and `param_all_gather_bwd_l{l}` before the layer's
first backward (or recompute) block, in
blocks of kind `param_gather` (phase of the block they precede). They run on the compute
stream, so program order makes the layer wait for them.
"""

from __future__ import annotations

from dataclasses import replace

from dagc.blocks.params import layer_parameters, step_parameters
from dagc.ir.logical import Program
from dagc.ir.steps import (
    BlockSteps,
    IterationKind,
    Phase,
    Step,
    StepProgram,
    Stream,
    TransferKind,
)
from dagc.ir.terms import CostTerm, TermKind
from dagc.ir.values import REPLICATED, Dim, Value

NAME = "data-parallel"


def data_parallel(steps: StepProgram) -> StepProgram:
    """The iteration's steps (and zero=3's gathers); a no-op without `training`."""
    program = steps.program
    training = program.training
    if training is None:
        return steps
    params = layer_parameters(program.model, steps.steps())
    if not params:
        return steps
    blocks = list(steps.blocks)
    if training.zero == 3 and training.dp > 1:
        blocks = _gather_before_layers(program, blocks, params)
    blocks += _iteration_blocks(program, tuple(blocks), params)
    return replace(steps, blocks=tuple(blocks))


def layout_gpus(program: Program) -> int:
    """N: GPUs of one replica (the layout); replica r's copy of GPU g is g + r·N."""
    return max(g for group in program.groups for g in group.gpus) + 1


def replica_nodes(program: Program, gpu: int) -> int:
    """Nodes spanned by GPU `gpu`'s copies on every replica (a dp collective's span)."""
    assert program.training is not None
    n, size = layout_gpus(program), program.hardware.node_size
    return len({(gpu + r * n) // size for r in range(program.training.dp)})


def _collective(program: Program, kind: TermKind, piece: int, gpu: int) -> CostTerm:
    assert program.training is not None
    return CostTerm(kind, (piece, program.training.dp), replica_nodes(program, gpu))


def _by_layer(params: dict[int, dict[int, int]]) -> dict[int, dict[int, int]]:
    """{layer: {gpu: parameters}}, GPUs ascending."""
    layers: dict[int, dict[int, int]] = {}
    for gpu in sorted(params):
        for layer, count in params[gpu].items():
            layers.setdefault(layer, {})[gpu] = count
    return layers


def _value(program: Program, name: str, size: int, gpus: tuple[int, ...]) -> Value:
    dtype = program.workload.dtype.value
    return Value(name, (Dim("params", max(size, 1)),), dtype, gpus, REPLICATED)


def _iteration_blocks(
    program: Program, blocks: tuple[BlockSteps, ...], params: dict[int, dict[int, int]]
) -> list[BlockSteps]:
    assert program.training is not None
    dp, zero = program.training.dp, program.training.zero
    w = program.workload.dtype.bytes
    stream = Stream.COMM if program.training.grad_overlap else Stream.COMPUTE
    all_steps = [step for block in blocks for step in block.steps]
    backward = any(step.phase is Phase.WEIGHT_GRAD for step in all_steps)
    layers = _by_layer(params)
    last = program.model.layers - 1
    group_of = {block.layer: block.group for block in reversed(blocks)}  # first per layer
    out: list[BlockSteps] = []
    optimizer_reads: list[Value] = []
    for layer in sorted(layers, reverse=True):
        gpus = tuple(layers[layer])
        # the values holding this layer's weight gradients on its GPUs
        sources = [
            step
            for step in all_steps
            if step.layer == layer
            and not step.joint
            and (
                step.phase is Phase.WEIGHT_GRAD
                if backward
                else any(step_parameters(program.model, step, r) for r in range(step.width))
            )
        ]
        reads = tuple(dict.fromkeys(v for step in sources for v in step.writes))
        if dp == 1:
            optimizer_reads += reads
            continue
        if zero == 0:
            base, kind = "grad_all_reduce", TermKind.ALL_REDUCE
            terms = tuple(_collective(program, kind, layers[layer][g] * w, g) for g in gpus)
        else:
            base, kind = "grad_reduce_scatter", TermKind.REDUCE_SCATTER
            terms = tuple(
                _collective(program, kind, -(-layers[layer][g] * w // dp), g) for g in gpus
            )
        written = _value(program, f"grad_l{layer}_reduced", sum(layers[layer].values()), gpus)
        step = Step(
            base,
            layer,
            gpus,
            terms,
            reads=reads,
            writes=(written,),
            stream=stream,
            phase=Phase.ITERATION,
        )
        optimizer_reads.append(written)
        out.append(_block(layer, group_of.get(layer, ""), gpus, (step,)))
    gpus = tuple(sorted(params))
    total = {g: sum(params[g].values()) for g in gpus}
    local = {g: -(-total[g] // dp) if zero >= 1 else total[g] for g in gpus}
    updated = _value(program, "params_updated", sum(total.values()), gpus)
    final = [
        Step(
            "optimizer",
            last,
            gpus,
            tuple(CostTerm(TermKind.OPTIMIZER, (local[g],)) for g in gpus),
            layer_in_name=False,
            reads=tuple(dict.fromkeys(optimizer_reads)),
            writes=(updated,),
            phase=Phase.ITERATION,
        )
    ]
    if zero == 1 and dp > 1:
        gathered = _value(program, "params_gathered", sum(total.values()), gpus)
        terms = tuple(
            _collective(program, TermKind.ALL_GATHER, -(-total[g] * w // dp), g) for g in gpus
        )
        final.append(
            Step(
                "param_all_gather",
                last,
                gpus,
                terms,
                layer_in_name=False,
                reads=(updated,),
                writes=(gathered,),
                phase=Phase.ITERATION,
            )
        )
    out.append(_block(last, group_of.get(last, ""), gpus, tuple(final)))
    return out


def _block(layer: int, group: str, gpus: tuple[int, ...], steps: tuple[Step, ...]) -> BlockSteps:
    return BlockSteps(
        kind=IterationKind.ITERATION,
        layer=layer,
        group=group,
        gpus=gpus,
        input_gpus=gpus,
        output_gpus=gpus,
        steps=steps,
    )


def _gather_before_layers(
    program: Program, blocks: list[BlockSteps], params: dict[int, dict[int, int]]
) -> list[BlockSteps]:
    """zero=3: each GPU all-gathers its parameters of a layer before the layer's first
    block it runs, in the forward and again in the backward.

    The gather goes right before that block (after a stage transfer into it), on the
    block's GPUs that hold parameters of the layer and have not gathered them yet; it
    copies the block's `excursion` flag, so that a pipeline schedule sees it in the run of
    blocks the block belongs to.
    """
    assert program.training is not None
    dp, w = program.training.dp, program.workload.dtype.bytes
    layers = _by_layer(params)
    out: list[BlockSteps] = []
    done: set[tuple[int, bool, int]] = set()  # (layer, backward, gpu)
    for block in blocks:
        backward = any(step.phase is not Phase.FORWARD for step in block.steps)
        holders = layers.get(block.layer, {})
        runs = {g for step in block.steps for g in step.gpus}
        gpus = tuple(
            g for g in sorted(runs) if g in holders and (block.layer, backward, g) not in done
        )
        if block.kind is TransferKind.TRANSFER or not block.steps or not gpus:
            out.append(block)
            continue
        done.update((block.layer, backward, g) for g in gpus)
        base = "param_all_gather_bwd" if backward else "param_all_gather"
        terms = tuple(
            _collective(program, TermKind.ALL_GATHER, -(-holders[g] * w // dp), g) for g in gpus
        )
        name = f"params_l{block.layer}" + ("_bwd" if backward else "") + f"_gpu{gpus[0]}"
        written = _value(program, name, sum(holders[g] for g in gpus), gpus)
        phase = block.steps[0].phase
        step = Step(base, block.layer, gpus, terms, writes=(written,), phase=phase)
        out.append(
            BlockSteps(
                kind=IterationKind.PARAM_GATHER,
                layer=block.layer,
                group=block.group,
                gpus=gpus,
                input_gpus=gpus,
                output_gpus=gpus,
                excursion=block.excursion,
                steps=(step,),
            )
        )
        out.append(block)
    return out
