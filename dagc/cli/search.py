"""`dagc search`: the best layouts of a model on a cluster (docs/search.md)."""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagc.cli.shared import (
    SetOpt,
    TableOpt,
    emit,
    parse_settings,
    run_library,
    usage_error,
)

if TYPE_CHECKING:
    from dagc.ir.logical import Program


class SearchFormat(enum.StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _ints(option: str, text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        usage_error(
            f"{option} expects numbers separated by commas, got `{text}`", f"e.g. {option} 4,8"
        )
    if not values or min(values) < 1:
        usage_error(f"{option} expects positive numbers, got `{text}`", f"e.g. {option} 4,8")
    return values


def _choices(option: str, text: str | None, enum_type: type[enum.Enum]) -> tuple[Any, ...] | None:
    if text is None:
        return None
    known = {member.value: member for member in enum_type}
    values = []
    for part in text.split(","):
        if part not in known:
            usage_error(
                f"{option}: `{part}` is not one of {', '.join(map(str, known))}",
                f"e.g. {option} {next(iter(known))}",
            )
        values.append(known[part])
    return tuple(values)


def search(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="A .dag file: its model and workload (its layout is ignored).", show_default=False
        ),
    ] = None,
    hf: Annotated[
        Path | None,
        typer.Option(
            "--hf", help="A Hugging Face config.json instead of a .dag file.", show_default=False
        ),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option(min=1, help="GPUs in all (default: the file's; 8 with --hf)."),
    ] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU preset: a100, h100 or h200.")] = None,
    node_size: Annotated[
        int | None, typer.Option("--node-size", min=1, help="GPUs per node.")
    ] = None,
    mode: Annotated[str, typer.Option(help="--hf: prefill, decode or serve.")] = "prefill",
    batch: Annotated[int, typer.Option(min=1, help="--hf: sequences in the batch.")] = 8,
    seq: Annotated[int, typer.Option(min=1, help="--hf: tokens per sequence.")] = 4096,
    context: Annotated[int | None, typer.Option(min=1, help="--hf decode: the context.")] = None,
    input_length: Annotated[
        int | None, typer.Option("--input", min=1, help="--hf serve: prompt tokens.")
    ] = None,
    output_length: Annotated[
        int | None, typer.Option("--output-tokens", min=1, help="--hf serve: tokens generated.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="--hf: bf16, fp16, fp32 or fp8.")] = "bf16",
    train: Annotated[
        bool,
        typer.Option(
            "--train", help="Search a training step (the file's training section, or defaults)."
        ),
    ] = False,
    objective: Annotated[
        str | None,
        typer.Option(
            help="latency, throughput (decode/serve) or iteration (training); default by mode."
        ),
    ] = None,
    tpot_max: Annotated[
        float | None, typer.Option("--tpot-max", min=0, help="SLA: TPOT at most MS milliseconds.")
    ] = None,
    ttft_max: Annotated[
        float | None, typer.Option("--ttft-max", min=0, help="SLA: TTFT at most MS milliseconds.")
    ] = None,
    tp: Annotated[str | None, typer.Option(help="Only these tp degrees, e.g. 4,8.")] = None,
    pp: Annotated[str | None, typer.Option(help="Only these pipeline depths.")] = None,
    dp: Annotated[str | None, typer.Option(help="Training: only these dp degrees.")] = None,
    microbatches: Annotated[str | None, typer.Option(help="Only these micro-batch counts.")] = None,
    attention_gpus: Annotated[
        str | None,
        typer.Option(
            "--attention-gpus", help="MoE decode: only these attention GPU counts of a separation."
        ),
    ] = None,
    no_separation: Annotated[
        bool, typer.Option("--no-separation", help="No attention/expert separation.")
    ] = False,
    no_attention_dp: Annotated[
        bool, typer.Option("--no-attention-dp", help="No attention-dp layouts.")
    ] = False,
    schedule: Annotated[str | None, typer.Option(help="Training: only these schedules.")] = None,
    recompute: Annotated[
        str | None, typer.Option(help="Training: only these recomputations.")
    ] = None,
    zero: Annotated[
        str | None, typer.Option(help="Training: only these ZeRO stages (0, 1).")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rank this many layouts (K).")] = 10,
    workers: Annotated[int, typer.Option(min=0, help="Local processes (0: one per core).")] = 1,
    ray: Annotated[
        str | None,
        typer.Option(help="Evaluate on a Ray cluster at this address (`local`: start one here)."),
    ] = None,
    no_prune: Annotated[
        bool, typer.Option("--no-prune", help="Evaluate every valid layout (brute force).")
    ] = False,
    output_format: Annotated[
        SearchFormat, typer.Option("--format", help="text, markdown or json.", show_default=False)
    ] = SearchFormat.text,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the table here (default: stdout).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the best layout as a .dag file.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the Pareto front as an SVG.")
    ] = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
) -> None:
    """Search the layouts of a model on a cluster for the best one, pruned by exact bounds."""
    from dagc.api import CostOptions
    from dagc.search import Axes, Objective, Options, Space
    from dagc.search.run import search as run_search
    from dagc.search.run import to_report

    if (file is None) == (hf is None):
        usage_error(
            "give a .dag file or --hf CONFIG.json, one of them",
            "e.g. dagc search model.dag --gpus 64",
        )
    base = run_library(
        lambda: _base(file, hf, mode, batch, seq, context, input_length, output_length, dtype)
    )
    if gpu is not None or node_size is not None:
        hardware = replace(
            base.hardware,
            gpu=gpu or base.hardware.gpu,
            node_size=node_size or base.hardware.node_size,
        )
        base = replace(base, hardware=hardware)
    if train and base.training is None:
        from dagc.ir.logical import Training

        base = replace(base, training=Training())
    total = gpus or _file_gpus(base, hf is not None)
    from dagc.ir.logical import Recompute, Schedule

    axes = Axes(
        tp=_ints("--tp", tp),
        pp=_ints("--pp", pp),
        dp=_ints("--dp", dp),
        microbatches=_ints("--microbatches", microbatches),
        attention_gpus=_ints("--attention-gpus", attention_gpus),
        attention_dp=(False,) if no_attention_dp else None,
        separation=not no_separation,
        schedule=_choices("--schedule", schedule, Schedule),
        recompute=_choices("--recompute", recompute, Recompute),
        zero=_zero(zero),
    )
    chosen = _choices("--objective", objective, Objective) if objective else None
    if chosen and not _objective_fits(chosen[0], base):
        usage_error(
            f"--objective {chosen[0].value} does not apply to a {_mode(base)} search",
            "prefill: latency; decode and serve: throughput or latency; training: iteration",
        )
    if (tpot_max is not None or ttft_max is not None) and (
        base.training is not None or base.mode.value == "prefill"
    ):
        usage_error(
            "--tpot-max and --ttft-max apply to decode and serve searches",
            "remove them, or search --mode decode",
        )
    options = Options(
        objective=chosen[0] if chosen else None,
        top=top,
        tpot_max_s=tpot_max / 1e3 if tpot_max is not None else None,
        ttft_max_s=ttft_max / 1e3 if ttft_max is not None else None,
        costs=CostOptions(None, parse_settings(settings), cost_table),
        workers=workers,
        ray=ray,
        prune=not no_prune,
    )
    space = Space(base, total, axes)
    with _progress() as update:
        result = run_library(lambda: run_search(space, options, update))
    shown = to_report(result)
    from dagc.backends import search_report

    writer: Callable[..., None] = {
        SearchFormat.text: search_report.write_text,
        SearchFormat.markdown: search_report.write_markdown,
        SearchFormat.json: search_report.write_json,
    }[output_format]
    emit(report, lambda out: writer(shown, out))
    if plot is not None:
        from dagc.backends.search_plot import write_pareto

        run_library(lambda: write_pareto(shown, plot))
    if output is not None:
        best = result.best_program()
        if best is None:
            usage_error(
                "no layout fits: nothing to write with -o", "look at the counts, or widen the space"
            )
        from dagc.backends.dagfile import program_to_dag

        text = program_to_dag(best)
        emit(output, lambda out: out.write(text))


def _zero(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = text.split(",")
    if any(part not in ("0", "1") for part in parts):
        usage_error(f"--zero expects 0 and/or 1, got `{text}`", "e.g. --zero 1")
    return tuple(int(part) for part in parts)


def _mode(base: Program) -> str:
    return "training" if base.training is not None else base.mode.value


def _objective_fits(objective: Any, base: Program) -> bool:
    mode = _mode(base)
    allowed = {
        "prefill": {"latency"},
        "decode": {"latency", "throughput"},
        "serve": {"latency", "throughput"},
        "training": {"iteration"},
    }[mode]
    return str(objective.value) in allowed


def _file_gpus(base: Program, from_hf: bool) -> int:
    if from_hf:
        return 8
    from dagc.analysis.serving import layout_gpus

    replicas = base.training.dp if base.training is not None else 1
    return len(layout_gpus(base)) * replicas


def _base(
    file: Path | None,
    hf: Path | None,
    mode: str,
    batch: int,
    seq: int,
    context: int | None,
    input_length: int | None,
    output_length: int | None,
    dtype: str,
) -> Program:
    """The base program: the file's, or one GPU's layout of the Hugging Face config."""
    from dagc.compiler import compile_file, compile_text

    if file is not None:
        return compile_file(file).program
    assert hf is not None
    from dagc.hf import Layout, new_from_hf

    layout = Layout(
        1,
        1,
        1,
        None,
        "h100",
        batch,
        seq,
        1,
        dtype,
        None,
        mode,
        context,
        input_length,
        output_length,
    )
    text = new_from_hf(hf, layout).text
    program = compile_text(text, path=str(hf)).program
    return program


class _progress:
    """A progress bar on stderr (terminals only): bounds, then the evaluation waves."""

    def __enter__(self) -> Callable[[str, int, int], None]:
        self.bar: Any = None
        if not sys.stderr.isatty():
            return lambda phase, done, total: None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.start()
        self.tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in self.tasks:
                self.tasks[phase] = self.bar.add_task(phase, total=total)
            self.bar.update(self.tasks[phase], completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
