"""Narayanan et al. 2021 (SC'21), Table 1, against dagc's training mode: one command.

    .venv/bin/python benchmarks/validation.py            # write the files, analyse, write the table
    .venv/bin/python benchmarks/validation.py --write    # only (re)write examples/validation/*.dag
    .venv/bin/python benchmarks/validation.py --only 1008.0
    .venv/bin/python benchmarks/validation.py --set matmul_efficiency=0.75   # try a value

Reads examples/validation/narayanan2021_table1.csv (a copy of
../shared/validation/narayanan2021_table1.csv), writes one `.dag` file per row under
examples/validation/, runs `dagc analyze --format json --symmetry on` on each (under
`/usr/bin/time -v` when it exists, for the wall time and peak memory), and replaces the
table between the markers in docs/validation.md: predicted against measured TFLOP/s per GPU,
the error per row, the mean absolute error and the largest.

Both sides count FLOPs as the paper does (its Eq. 3, activation recomputation included):
predicted TFLOP/s per GPU = F / (dagc's iteration time x GPUs), with
F = 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)) = 96·B·s·l·h² + 16·B·s²·l·h + 6·B·s·h·V.

What the table leaves open (micro-batch size, schedule, virtual stages, recomputation, the
DDP implementation) comes from Megatron-LM's examples/sc21/run_table_1.sh, the script the
authors published to reproduce Table 1; docs/validation.md cites it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "examples" / "validation"
CSV = FOLDER / "narayanan2021_table1.csv"
DOC = ROOT / "docs" / "validation.md"
TABLE_BEGIN = "<!-- validation-table: begin (written by benchmarks/validation.py) -->"
TABLE_END = "<!-- validation-table: end -->"

SEQ = 2048
VOCAB = 51200
NODE_SIZE = 8

# Megatron-LM examples/sc21/run_table_1.sh, per model size: micro-batch size (MBS), layers
# per virtual pipeline stage (--num-layers-per-virtual-pipeline-stage; None: not
# interleaved) and the DDP implementation (`torch`: PyTorch DDP, whose bucketed all-reduce
# overlaps the backward; `local`: Megatron's own, which all-reduces after the backward).
# Every row runs `--recompute-method uniform` (full recomputation of every layer).
RUN_TABLE_1: dict[str, tuple[int, int | None, str]] = {
    "1.7": (16, None, "torch"),
    "3.6": (16, None, "torch"),
    "7.5": (16, None, "torch"),
    "18.4": (8, None, "torch"),
    "39.1": (4, None, "local"),
    "76.1": (2, 5, "local"),
    "145.6": (2, 5, "local"),
    "310.1": (1, 3, "local"),
    "529.6": (1, 1, "local"),
    "1008.0": (1, None, "local"),
}

# The a100 figures every row uses, beyond the preset (docs/validation.md, "Calibration",
# says where each value comes from). The same for every row: no per-row factor.
CALIBRATION: dict[str, str] = {
    "network_bandwidth": "25e9",
    "link_efficiency": "0.70",
}
CALIBRATION_NOTES: dict[str, str] = {
    "network_bandwidth": "8 x 200 Gb/s HDR InfiniBand per DGX A100 = 25 GB/s per GPU",
    "link_efficiency": "nccl-tests all-reduce on 8 A100s: 200-210 of 300 GB/s",
}


@dataclass(frozen=True)
class Row:
    """One row of Table 1."""

    params_b: str
    heads: int
    hidden: int
    layers: int
    t: int
    p: int
    gpus: int
    batch: int
    tflops_per_gpu: float
    percent_peak: int
    aggregate_pflops: float

    @property
    def dp(self) -> int:
        return self.gpus // (self.t * self.p)

    @property
    def microbatch_size(self) -> int:
        return RUN_TABLE_1[self.params_b][0]

    @property
    def virtual_stages(self) -> int:
        per_chunk = RUN_TABLE_1[self.params_b][1]
        return 1 if per_chunk is None else self.layers // (self.p * per_chunk)

    @property
    def ddp(self) -> str:
        return RUN_TABLE_1[self.params_b][2]

    @property
    def microbatches(self) -> int:
        return self.batch // (self.dp * self.microbatch_size)

    @property
    def name(self) -> str:
        return "gpt_" + self.params_b.replace(".", "_") + "b"

    @property
    def path(self) -> Path:
        return FOLDER / f"{self.name}.dag"

    def paper_flops(self) -> int:
        """The paper's Eq. 3 (FLOPs per iteration with activation recomputation), exactly."""
        b, s, lay, h, v = self.batch, SEQ, self.layers, self.hidden, VOCAB
        return 96 * b * s * lay * h * h + 16 * b * s * s * lay * h + 6 * b * s * h * v


def read_rows(path: Path = CSV) -> list[Row]:
    """The table's rows, in the CSV's order."""
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    rows = []
    for record in csv.DictReader(lines):
        rows.append(
            Row(
                params_b=record["params_b"],
                heads=int(record["heads"]),
                hidden=int(record["hidden"]),
                layers=int(record["layers"]),
                t=int(record["t"]),
                p=int(record["p"]),
                gpus=int(record["gpus"]),
                batch=int(record["batch"]),
                tflops_per_gpu=float(record["tflops_per_gpu"]),
                percent_peak=int(record["percent_peak"]),
                aggregate_pflops=float(record["aggregate_pflops"]),
            )
        )
    return rows


def render(row: Row) -> str:
    """The `.dag` file of one row (deterministic: the test regenerates it byte for byte)."""
    t, p, v = row.t, row.p, row.virtual_stages
    if p > 1 and row.layers % (p * v):
        raise ValueError(f"{row.name}: {row.layers} layers do not cut into {p}x{v} chunks")
    per_chunk = RUN_TABLE_1[row.params_b][1]
    interleave = f", {per_chunk} layers per virtual stage" if per_chunk else ""
    lines = [
        "# Generated by benchmarks/validation.py from narayanan2021_table1.csv: do not edit.",
        f"# Narayanan et al., SC'21, Table 1: GPT {row.params_b}B on {row.gpus} A100s"
        f" (t={t}, p={p}, dp={row.dp}), measured {row.tflops_per_gpu:g} TFLOP/s per GPU.",
        f"# Megatron-LM examples/sc21/run_table_1.sh: micro-batch {row.microbatch_size}"
        f"{interleave}, full recomputation, {row.ddp} DDP.",
        f"model {row.name} {{",
        f"  layers         = {row.layers}",
        f"  hidden         = {row.hidden}",
        f"  heads          = {row.heads}",
        f"  ffn            = {4 * row.hidden}",
        "  activation     = gelu",
        f"  vocab          = {VOCAB}",
        "  attention_mask = causal",
        "  tied_embeddings = true",
        "  attention_dropout = 0.1   # Megatron-LM's defaults, which run_table_1.sh keeps",
        "  hidden_dropout    = 0.1",
        "}",
        "",
        "workload {",
        f"  batch           = {row.batch}",
        f"  seq             = {SEQ}",
        "  dtype           = fp16",
        f"  microbatch_size = {row.microbatch_size}   # {row.microbatches} micro-batches"
        " per replica",
        "}",
        "",
        "training {",
        f"  dp        = {row.dp}",
    ]
    if v > 1:
        lines.append("  schedule  = interleaved")
    elif p > 1:
        lines.append("  schedule  = 1f1b")
    if v > 1:
        lines.append(f"  virtual_stages = {v}")
    lines.append("  recompute = full")
    if row.ddp == "torch":
        lines.append(
            "  grad_overlap = true   # PyTorch DDP: bucketed all-reduce during the backward"
        )
    lines += ["}", "", "devices {", "  gpu = a100"]
    for key, value in CALIBRATION.items():
        lines.append(f"  {key} = {value}   # {CALIBRATION_NOTES[key]}")
    if p > 1:
        lines.append("  split_sends = true   # Megatron's scatter/gather of pipeline sends")
    groups = [f"stage{s}" for s in range(p)] if p > 1 else ["all"]
    for index, group in enumerate(groups):
        first, last = index * t, (index + 1) * t - 1
        members = f"{first}..{last}" if last > first else f"{first}"
        lines.append(f"  group {group} = gpu[{members}]")
    lines.append("}")
    lines.append("")
    placement = f"on {', '.join(groups)} pp={p}" if p > 1 else "on all"
    tp = f" tp={t}" if t > 1 else ""
    embed = "embed vocab_parallel" if t > 1 else "embed"
    lines += [
        f"layers 0..{row.layers - 1} {placement} {{",
        f"  {embed}",
        f"  attention{tp}",
        f"  mlp{tp}",
        f"  lm_head{tp}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def write_files(rows: list[Row]) -> None:
    for row in rows:
        row.path.write_text(render(row))


@dataclass
class Result:
    row: Row
    iteration_s: float | None
    wall_s: float
    peak_rss_mb: float | None
    ops: int | None
    error: str | None = None
    bubble: float | None = None  # the report's idle share of the busiest GPU
    exposed_communication_s: float | None = None
    by_kind: dict[str, float] | None = None  # the critical path's share per kind of step
    executed_flops: int | None = None  # every replica's, as dagc counts them
    memory_bytes: float | None = None  # the training report's peak memory per GPU

    @property
    def predicted(self) -> float | None:
        if self.iteration_s is None:
            return None
        return self.row.paper_flops() / (self.iteration_s * self.row.gpus) / 1e12

    @property
    def relative_error(self) -> float | None:
        predicted = self.predicted
        if predicted is None:
            return None
        return (predicted - self.row.tflops_per_gpu) / self.row.tflops_per_gpu


def _executed_flops(report: dict[str, Any], row: Row) -> int | None:
    """Every replica's executed FLOPs: the training report's, else dp x the device DAG's."""
    training = report.get("training")
    if isinstance(training, dict) and "executed_flops" in training:
        return int(training["executed_flops"])
    replica = report.get("totals", {}).get("executed_flops")
    return None if replica is None else int(replica) * row.dp


def _has_backward(row: Row) -> bool:
    """Whether dagc lowers the row's file with a backward (the training mode's passes)."""
    done = subprocess.run(
        [sys.executable, "-m", "dagc", "lower", str(row.path.relative_to(ROOT)), "--emit", "steps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return "[backward]" in done.stdout


def analyse(row: Row, overrides: tuple[str, ...] = ()) -> Result:
    """`dagc analyze --format json` on the row's file, timed (`overrides`: `--set` values)."""
    dagc = [sys.executable, "-m", "dagc"]
    command = [*dagc, "analyze", str(row.path.relative_to(ROOT)), "--format", "json"]
    command += ["--symmetry", "on"]
    for override in overrides:
        command += ["--set", override]
    timer = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    start = time.perf_counter()
    done = subprocess.run(timer + command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    peak = int(rss.group(1)) / 1024 if rss else None
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()
        return Result(row, None, wall, peak, None, message[0] if message else "failed")
    report = json.loads(done.stdout)
    training = report.get("training")
    ops = report.get("totals", {}).get("ops")
    path = report.get("critical_path", {})
    if not isinstance(training, dict) or "iteration_s" not in training:
        # Before the training report: the iteration is the critical path (docs/training.md)
        # once the backward is in the DAG; a forward-only DAG gives no prediction.
        if "time_s" not in path or not _has_backward(row):
            return Result(row, None, wall, peak, ops, "no backward in the DAG (forward only)")
        training = {"iteration_s": path["time_s"]}
    iteration = float(training["iteration_s"])
    kinds = path.get("by_kind", {})
    by_kind = {kind: float(part["share"]) for kind, part in kinds.items()}
    bubble, exposed = training.get("bubble"), training.get("exposed_communication_s")
    memory = training.get("peak_memory_bytes")
    return Result(
        row,
        iteration,
        wall,
        peak,
        ops,
        bubble=None if bubble is None else float(bubble),
        exposed_communication_s=None if exposed is None else float(exposed),
        by_kind=by_kind,
        executed_flops=_executed_flops(report, row),
        memory_bytes=None if memory is None else float(memory),
    )


def table(results: list[Result]) -> str:
    """The Markdown table (and summary lines) docs/validation.md shows."""
    head = (
        "| model | t | p | dp | GPUs | batch | micro-batch | schedule | measured TFLOP/s"
        " | predicted TFLOP/s | error | iteration (s) | bubble | exposed comm."
        " | memory per GPU (GB)"
        " | analysis wall (s) | peak RSS (MB) |\n"
        "|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    lines = [head]
    errors = []
    for r in results:
        row = r.row
        schedule = f"interleaved v={row.virtual_stages}" if row.virtual_stages > 1 else "1f1b"
        if row.p == 1:
            schedule = "none (p=1)"
        predicted = "pending" if r.predicted is None else f"{r.predicted:.1f}"
        error = "pending" if r.relative_error is None else f"{100 * r.relative_error:+.1f}%"
        iteration = "pending" if r.iteration_s is None else f"{r.iteration_s:.2f}"
        rss = "" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"
        bubble = "" if r.bubble is None else f"{100 * r.bubble:.1f}%"
        exposed = ""
        if r.exposed_communication_s is not None and r.iteration_s:
            exposed = f"{100 * r.exposed_communication_s / r.iteration_s:.1f}%"
        if r.relative_error is not None:
            errors.append(abs(r.relative_error))
        memory = "" if r.memory_bytes is None else f"{r.memory_bytes / 1e9:.1f}"
        lines.append(
            f"| GPT {row.params_b}B | {row.t} | {row.p} | {row.dp} | {row.gpus} | {row.batch}"
            f" | {row.microbatch_size} | {schedule} | {row.tflops_per_gpu:g} | {predicted}"
            f" | {error} | {iteration} | {bubble} | {exposed} | {memory}"
            f" | {r.wall_s:.1f} | {rss} |"
        )
    lines.append("")
    if len(errors) == len(results) and errors:
        mean = 100 * sum(errors) / len(errors)
        worst = max(results, key=lambda r: abs(r.relative_error or 0.0))
        lines.append(
            f"Mean absolute error {mean:.1f}%; largest {100 * max(errors):.1f}%"
            f" (GPT {worst.row.params_b}B)."
        )
    else:
        missing = [r for r in results if r.relative_error is None]
        reasons = sorted({r.error or "?" for r in missing})
        lines.append(
            f"Pending: {len(missing)} of {len(results)} rows have no prediction yet"
            f" ({'; '.join(reasons)})."
        )
    counted = [r for r in results if r.executed_flops is not None]
    if counted:
        same = [r for r in counted if r.executed_flops == r.row.paper_flops()]
        lines.append(
            f"dagc's executed FLOPs (every replica) equal the paper's Eq. 3 exactly on"
            f" {len(same)} of {len(counted)} rows"
            + (
                ""
                if len(same) == len(counted)
                else " (differing: "
                + ", ".join(f"GPT {r.row.params_b}B" for r in counted if r not in same)
                + ")"
            )
            + "."
        )
    lines.append("")
    shares = [r for r in results if r.by_kind]
    if shares:
        kinds = sorted({k for r in shares for k in r.by_kind or {}})
        lines.append("Where the critical path's time goes, by kind of step:")
        lines.append("")
        lines.append("| model | " + " | ".join(kinds) + " |")
        lines.append("|---|" + "--:|" * len(kinds))
        for r in shares:
            parts = r.by_kind or {}
            cells = " | ".join(f"{100 * parts.get(k, 0.0):.1f}%" for k in kinds)
            lines.append(f"| GPT {r.row.params_b}B | {cells} |")
        lines.append("")
    return "\n".join(lines)


def write_table(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.index(TABLE_BEGIN) + len(TABLE_BEGIN), doc.index(TABLE_END)
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="only write the .dag files")
    parser.add_argument("--only", help="analyse only this row (params_b, e.g. 1008.0)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a roofline value for every row, to try it (docs/validation.md is left alone)",
    )
    args = parser.parse_args()
    rows = read_rows()
    write_files(rows)
    if args.write:
        return
    chosen = [r for r in rows if args.only in (None, r.params_b)]
    results = []
    for row in chosen:
        result = analyse(row, tuple(args.set))
        results.append(result)
        shown = "pending" if result.predicted is None else f"{result.predicted:.1f}"
        print(
            f"{row.name}: predicted {shown} TFLOP/s (measured {row.tflops_per_gpu:g}),"
            f" {result.wall_s:.1f} s, {result.error or 'ok'}",
            flush=True,
        )
    text = table(results)
    print(text)
    if args.only is None and not args.set:
        write_table(text)


if __name__ == "__main__":
    main()
