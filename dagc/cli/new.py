"""`dagc new --hf CONFIG.json`: a commented .dag file from a Hugging Face config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dagc.cli.shared import WerrorOpt, check_warnings, emit, run_library


def new(
    hf: Annotated[
        Path,
        typer.Option(
            "--hf",
            help="A Hugging Face config.json (read from disk) of Llama, Mistral, Mixtral,"
            " Qwen2, Qwen2-MoE, Qwen3, Qwen3-MoE, DeepSeek-V2 or DeepSeek-V3.",
            show_default=False,
        ),
    ],
    gpus: Annotated[int, typer.Option(min=1, help="GPUs in all.")] = 8,
    tp: Annotated[
        int | None,
        typer.Option(
            min=1, help="Tensor-parallel GPUs per pipeline stage (default: min(gpus, 8))."
        ),
    ] = None,
    pp: Annotated[
        int | None, typer.Option(min=1, help="Pipeline stages (default: gpus / tp).")
    ] = None,
    ep: Annotated[
        int | None,
        typer.Option(min=1, help="Expert-parallel GPUs of a MoE layer: the stage's (default: tp)."),
    ] = None,
    gpu: Annotated[str, typer.Option(help="GPU preset: a100, h100 or h200.")] = "h100",
    batch: Annotated[int, typer.Option(min=1, help="Sequences in the batch.")] = 8,
    seq: Annotated[int, typer.Option(min=1, help="Tokens per sequence.")] = 4096,
    microbatches: Annotated[
        int | None, typer.Option(min=1, help="Micro-batches (default: pp, or gcd(batch, pp)).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="bf16, fp16, fp32 or fp8.")] = "bf16",
    mode: Annotated[
        str, typer.Option(help="prefill (one forward pass), decode (one step) or serve.")
    ] = "prefill",
    context: Annotated[
        int | None,
        typer.Option(min=1, help="Decode: keys each new token attends over (default: --seq)."),
    ] = None,
    input_length: Annotated[
        int | None,
        typer.Option("--input", min=1, help="Serve: prompt tokens per sequence (default: --seq)."),
    ] = None,
    output_length: Annotated[
        int | None,
        typer.Option("--output-tokens", min=1, help="Serve: tokens generated per sequence (256)."),
    ] = None,
    attention_dp: Annotated[
        bool,
        typer.Option(
            "--attention-dp",
            help="Every GPU its own attention replica (dp), the experts split over all.",
        ),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(help="The model's name (default: from the config's file name)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the .dag file here.")
    ] = None,
    werror: WerrorOpt = False,
) -> None:
    """Write a .dag file for a Hugging Face model config and a layout (stdout, or -o)."""
    from dagc.hf import Layout, new_from_hf

    layout = Layout(
        gpus, tp, pp, ep, gpu, batch, seq, microbatches, dtype, name,
        mode, context, input_length, output_length, attention_dp,
    )  # fmt: skip
    result = run_library(lambda: new_from_hf(hf, layout))
    check_warnings(result.warnings, werror)
    emit(output, lambda out: out.write(result.text))
