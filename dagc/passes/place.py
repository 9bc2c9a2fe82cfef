"""place: the logical IR's layer ranges become one block sequence, layer by layer."""

from __future__ import annotations

from dataclasses import replace

from dagc.blocks.shapes import sequence_parallel
from dagc.ir.logical import BlockKind, Mode, Program
from dagc.ir.steps import BlockSteps, StepProgram
from dagc.ir.values import residual_name

NAME = "place"


def place(program: Program) -> StepProgram:
    """Every block of every layer, in execution order, on its group's GPUs (no steps yet).

    `embed` runs only for layer 0 and `lm_head` only for the last layer, whatever range
    they were written in. Each block records where its input lives and which value it is:
    the output of the block before it. A moe block reached from another group's block of
    the same layer is an excursion: its result returns to that group. A block reached from
    another group's block of the previous layer starts a pipeline stage instead.
    """
    if program.mode is Mode.SERVE:
        # its two phases run different programs (and, disaggregated, different layouts)
        raise ValueError(
            "a serve program runs in two phases: expand dagc.ir.logical.prefill_phase(program)"
            " or decode_phase(program, context)"
        )
    last_layer = program.model.layers - 1
    blocks: list[BlockSteps] = []
    previous_output: tuple[int, ...] | None = None
    previous_value = ""
    previous_layer = -1
    previous_dp = 1  # how the input tokens are spread: a moe block leaves them in place
    for layer_range in program.ranges:
        for layer in layer_range.layer_indices:
            for block in layer_range.blocks:
                if block.kind is BlockKind.EMBED and layer != 0:
                    continue
                if block.kind is BlockKind.LM_HEAD and layer != last_layer:
                    continue
                gpus = program.group(block.group).gpus
                source = previous_output if previous_output is not None else gpus
                excursion = (
                    block.kind is BlockKind.MOE
                    and set(source) != set(gpus)
                    and previous_layer == layer
                )
                output = source if excursion else gpus
                blocks.append(
                    BlockSteps(
                        kind=block.kind,
                        layer=layer,
                        group=block.group,
                        gpus=gpus,
                        degree=block.degree,
                        fused_qkv=block.fused_qkv,
                        overlap=block.overlap,
                        input_gpus=source,
                        output_gpus=output,
                        excursion=excursion,
                        kernel=block.kernel,
                        mask=block.mask,
                        dispatch=block.dispatch,
                        vocab_parallel=block.vocab_parallel,
                        input_value=previous_value,
                        dp=block.dp,
                        input_dp=previous_dp,
                        span=block.span,
                    )
                )
                if block.kind is not BlockKind.MOE:
                    previous_dp = block.dp
                previous_output, previous_layer = output, layer
                previous_value = residual_name(block.kind.value, layer)
    return StepProgram(program, _sequence_splits(program, blocks))


def _sequence_splits(program: Program, blocks: list[BlockSteps]) -> tuple[BlockSteps, ...]:
    """Sequence parallelism (training, tp > 1): between two sequence-parallel blocks on the
    same GPUs (or an embed and the sequence-parallel block after it) the residual stream is
    split by tokens. Anywhere else it is whole."""
    out = list(blocks)
    for index in range(len(blocks) - 1):
        block, following = blocks[index], blocks[index + 1]
        producer = sequence_parallel(program, block) or (
            block.kind is BlockKind.EMBED and not block.vocab_parallel and len(block.gpus) > 1
        )
        if (
            producer
            and sequence_parallel(program, following)
            and following.gpus == block.gpus
            and not following.excursion
        ):
            out[index] = replace(out[index], split_output=True)
            out[index + 1] = replace(out[index + 1], split_input=True)
    return tuple(out)
