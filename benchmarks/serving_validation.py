"""Published decode and serving measurements against dagc's decode and serve modes: one command.

    .venv/bin/python benchmarks/serving_validation.py          # write, analyse, write the table
    .venv/bin/python benchmarks/serving_validation.py --write  # only (re)write the .dag files
    .venv/bin/python benchmarks/serving_validation.py --only sglang-dsv3-ep72-decode

Reads examples/validation/serving/measurements.csv (one published measurement a row, with
its source), writes one `.dag` file per configuration under examples/validation/serving/
with `dagc new --hf` (the layout the source ran; `devices` lines the preset lacks, such as
H800's NVLink, added after `gpu =`), runs `dagc analyze --format json` on each, and
replaces the table between the markers in docs/validation.md ("Serving"): dagc's figure
against the measured one, the error per row, the mean absolute error and the largest.

The figure compared depends on what the source measured (the `metric` column):

    tokens_per_s_per_gpu    serving.tokens_per_s_per_gpu
    tokens_per_s_per_node   serving.tokens_per_s_per_gpu x 8 (GPUs per node)
    tokens_per_s_per_user   1 / serving.tpot_s (one sequence's output speed)
    ttft_s                  serving.ttft_s

The error is predicted / measured - 1: positive when dagc's figure is larger (for a
throughput, dagc too fast; for a time to first token, dagc too slow). No row is fitted:
every file uses the preset's figures and dagc's default efficiencies.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "examples" / "validation" / "serving"
CSV = FOLDER / "measurements.csv"
DOC = ROOT / "docs" / "validation.md"
TABLE_BEGIN = "<!-- serving-table: begin (written by benchmarks/serving_validation.py) -->"
TABLE_END = "<!-- serving-table: end -->"
NODE_SIZE = 8

METRICS: dict[str, str] = {
    "tokens_per_s_per_gpu": "output tok/s per GPU",
    "tokens_per_s_per_node": "output tok/s per node",
    "tokens_per_s_per_user": "output tok/s per user",
    "ttft_s": "TTFT (ms)",
}


@dataclass(frozen=True)
class Row:
    id: str
    file: str
    metric: str
    measured: float
    system: str
    hardware: str
    model: str
    config: str
    gpus: int
    tp: int
    attention_dp: bool
    gpu: str
    dtype: str
    mode: str
    batch: int
    microbatches: int
    input: int | None
    output: int | None
    context: int | None
    devices: str
    source: str
    notes: str

    @property
    def path(self) -> Path:
        return FOLDER / self.file

    def layout(self) -> tuple[Any, ...]:
        """Everything the .dag file depends on: rows sharing a file must agree on it."""
        return (
            self.config, self.gpus, self.tp, self.attention_dp, self.gpu, self.dtype,
            self.mode, self.batch, self.microbatches, self.input, self.output, self.context,
            self.devices, self.model,
        )  # fmt: skip


def _optional(value: str) -> int | None:
    return int(value) if value else None


def read_rows() -> list[Row]:
    with CSV.open(newline="") as handle:
        rows = [
            Row(
                id=r["id"],
                file=r["file"],
                metric=r["metric"],
                measured=float(r["measured"]),
                system=r["system"],
                hardware=r["hardware"],
                model=r["model"],
                config=r["config"],
                gpus=int(r["gpus"]),
                tp=int(r["tp"]),
                attention_dp=r["attention_dp"] == "yes",
                gpu=r["gpu"],
                dtype=r["dtype"],
                mode=r["mode"],
                batch=int(r["batch"]),
                microbatches=int(r["microbatches"]),
                input=_optional(r["input"]),
                output=_optional(r["output"]),
                context=_optional(r["context"]),
                devices=r["devices"],
                source=r["source"],
                notes=r["notes"],
            )
            for r in csv.DictReader(handle)
        ]
    for row in rows:
        if row.metric not in METRICS:
            raise ValueError(f"{row.id}: unknown metric {row.metric!r}")
        first = next(r for r in rows if r.file == row.file)
        if first.layout() != row.layout():
            raise ValueError(f"{row.id}: shares {row.file} with {first.id} but not its layout")
    return rows


def files(rows: list[Row]) -> dict[str, list[Row]]:
    """Each .dag file with the rows it answers, in the CSV's order."""
    by_file: dict[str, list[Row]] = {}
    for row in rows:
        by_file.setdefault(row.file, []).append(row)
    return by_file


def new_command(row: Row) -> list[str]:
    """The `dagc new` command that writes the row's file (without the header it gets)."""
    command = [
        "new", "--hf", row.config, "--gpus", str(row.gpus), "--tp", str(row.tp), "--pp", "1",
        "--gpu", row.gpu, "--batch", str(row.batch), "--microbatches", str(row.microbatches),
        "--dtype", row.dtype, "--mode", row.mode, "--name", Path(row.config).name.split(".")[0],
    ]  # fmt: skip
    if row.mode == "decode":
        assert row.context is not None
        command += ["--context", str(row.context)]
    else:
        assert row.input is not None and row.output is not None
        command += ["--input", str(row.input), "--output-tokens", str(row.output)]
    if row.attention_dp:
        command.append("--attention-dp")
    return command


def _run(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagc", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def render(rows: list[Row]) -> str:
    """The .dag file of `rows` (which share it): `dagc new`'s text under a header."""
    row = rows[0]
    done = _run(new_command(row))
    if done.returncode != 0:
        raise RuntimeError(f"{row.file}: dagc new failed: {done.stderr.strip()}")
    header = [
        f"# Validation row(s) {', '.join(r.id for r in rows)}: {row.model}",
        f"# measured with {row.system}",
        f"# on {row.hardware}.",
        f"# Source: {row.source}",
        "# Generated by benchmarks/serving_validation.py from measurements.csv",
        "# (docs/validation.md, 'Serving', says how the row is expressed); do not edit.",
        "# The command:",
        "#   dagc " + " ".join(new_command(row)),
        "",
    ]
    lines = done.stdout.splitlines()
    if row.devices:
        at = next(i for i, line in enumerate(lines) if line.strip().startswith("gpu ="))
        extra = [f"  {part.strip()}" for part in row.devices.split(";")]
        lines[at + 1 : at + 1] = extra
    return "\n".join(header + lines) + "\n"


def write_files(rows: list[Row]) -> None:
    for name, shared in files(rows).items():
        (FOLDER / name).write_text(render(shared))


def analyse(path: Path) -> dict[str, Any]:
    """`dagc analyze --format json` of one file."""
    done = _run(["analyze", str(path.relative_to(ROOT)), "--format", "json"])
    if done.returncode != 0:
        raise RuntimeError(f"{path.name}: dagc analyze failed: {done.stderr.strip()}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def predicted(row: Row, report: dict[str, Any]) -> float:
    """dagc's figure for the row's metric (module docstring), from its JSON report."""
    serving = report["serving"]
    if row.metric == "tokens_per_s_per_gpu":
        return float(serving["tokens_per_s_per_gpu"])
    if row.metric == "tokens_per_s_per_node":
        return float(serving["tokens_per_s_per_gpu"]) * NODE_SIZE
    if row.metric == "tokens_per_s_per_user":
        return 1.0 / float(serving["tpot_s"])
    return float(serving["ttft_s"])


def shown(row: Row, value: float) -> str:
    """A figure as the table prints it (TTFT in ms)."""
    if row.metric == "ttft_s":
        return f"{1000 * value:.1f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def error(row: Row, value: float) -> float:
    return value / row.measured - 1.0


def _layout(row: Row) -> str:
    if row.attention_dp:
        return f"attention dp={row.gpus}, experts ep={row.gpus}, m={row.microbatches}"
    return f"tp={row.tp}"


def _workload(row: Row) -> str:
    if row.mode == "decode":
        return f"decode, B={row.batch:,}, C={row.context:,}"
    return f"serve, B={row.batch:,}, I={row.input:,}, O={row.output:,}"


def table(rows: list[Row], reports: dict[str, dict[str, Any]]) -> str:
    """The Markdown table (and summary line) docs/validation.md shows."""
    lines = [
        "| row | model | measured on | expressed as (dagc) | workload | figure | measured"
        " | predicted | error | step's critical path: collective / matmul / elementwise |",
        "|---|---|---|---|---|---|--:|--:|--:|---|",
    ]
    errors: list[tuple[float, Row]] = []
    for row in rows:
        report = reports[row.file]
        value = predicted(row, report)
        err = error(row, value)
        errors.append((abs(err), row))
        kinds = report["critical_path"].get("by_kind", {})
        shares = " / ".join(
            f"{100 * float(kinds.get(k, {}).get('share', 0.0)):.0f}%"
            for k in ("collective", "matmul", "elementwise")
        )
        lines.append(
            f"| {row.id} | {row.model} | {row.hardware}, {row.dtype} | {row.gpus} x {row.gpu},"
            f" {_layout(row)} | {_workload(row)} | {METRICS[row.metric]}"
            f" | {shown(row, row.measured)} | {shown(row, value)} | {100 * err:+.1f}% | {shares} |"
        )
    mean = 100 * sum(e for e, _ in errors) / len(errors)
    worst, worst_row = max(errors, key=lambda pair: pair[0])
    lines += [
        "",
        f"Mean absolute error {mean:.1f}%; largest {100 * worst:.1f}% ({worst_row.id}).",
    ]
    return "\n".join(lines)


def write_table(text: str) -> None:
    doc = DOC.read_text()
    start, end = doc.index(TABLE_BEGIN) + len(TABLE_BEGIN), doc.index(TABLE_END)
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="only write the .dag files")
    parser.add_argument("--only", help="analyse only this row (its id)")
    args = parser.parse_args()
    rows = read_rows()
    write_files(rows)
    if args.write:
        return
    chosen = [r for r in rows if args.only in (None, r.id)]
    reports: dict[str, dict[str, Any]] = {}
    for row in chosen:
        if row.file not in reports:
            reports[row.file] = analyse(row.path)
        value = predicted(row, reports[row.file])
        print(
            f"{row.id}: predicted {shown(row, value)} {METRICS[row.metric]}"
            f" (measured {shown(row, row.measured)}), error {100 * error(row, value):+.1f}%",
            flush=True,
        )
    text = table(chosen, reports)
    print(text)
    if args.only is None:
        write_table(text)


if __name__ == "__main__":
    main()
