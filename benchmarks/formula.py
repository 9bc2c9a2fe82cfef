"""`dagc formula` on configurations with many incomparable branches: run by hand, never as a test.

    .venv/bin/python benchmarks/formula.py                  # everything (a few minutes)
    .venv/bin/python benchmarks/formula.py --only train --repeat 3
    .venv/bin/python benchmarks/formula.py --formats text   # one format only

For each configuration: the operations of the whole program and of the collapsed graph that
the symbolic walk visits (`dagc formula` always collapses GPUs doing identical work), the
incomparable branches that met at one operation (from the formula's note; "exact" when they
fit the limit), then the wall time of `dagc formula FILE --format F -o /dev/null` for each
format, process start included: the median of --repeat runs, wall time and (after the
slash) the CPU time of the process, which other jobs on a shared machine inflate less. Each
format is a separate command, so each pays for the whole derivation. The figures are recorded in
docs/performance.md ("Formula").
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("text", "python", "latex", "json")

# name -> the arguments of `dagc formula`
CONFIGS: dict[str, list[str]] = {
    "deepseek-v3-decode-320gpu": ["examples/serving/deepseek_v3_decode_320gpu.dag"],
    "deepseek-v3-decode-320gpu-b1000": [
        "examples/serving/deepseek_v3_decode_320gpu.dag",
        "--max-branches",
        "1000",
    ],
    "llama-3.1-70b-train": ["examples/training/llama_3_1_70b_train.dag"],
    "llama-3.1-70b-disaggregated-prefill": [
        "examples/serving/llama_3_1_70b_disaggregated.dag",
        "--phase",
        "prefill",
    ],
    # Narayanan et al.'s GPT rows (benchmarks/validation.py): 1.8 M and 6.6 M operations.
    "gpt-145.6b-1536gpu": ["examples/validation/gpt_145_6b.dag"],
    "gpt-310.1b-1920gpu": ["examples/validation/gpt_310_1b.dag"],
}
BRANCHES = re.compile(r"(\d+) incomparable branches meet")


def sizes(arguments: list[str]) -> tuple[int, int]:
    """(operations of the whole program, operations of the collapsed graph)."""
    import dagc
    from dagc.cli.shared import PhaseChoice, select_phase
    from dagc.expand import expand

    compiled = dagc.compile_file(ROOT / arguments[0])
    if "--phase" in arguments:
        phase = PhaseChoice(arguments[arguments.index("--phase") + 1])
        compiled = select_phase(compiled, phase, None)
    graph = expand(compiled, max_ops=10**9, symmetric=True).graph
    return graph.full_num_ops, graph.num_ops


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(arguments: list[str], output_format: str) -> tuple[float, float, str]:
    """Wall and CPU seconds of one `dagc formula` command, and its stderr."""
    command = [str(ROOT / ".venv" / "bin" / "dagc"), "formula", *arguments]
    command += ["--format", output_format, "-o", "/dev/null"]
    started, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, _cpu() - cpu, done.stderr


def measure(name: str, formats: list[str], repeat: int) -> dict[str, Any]:
    arguments = CONFIGS[name]
    full, walked = sizes(arguments)
    seconds: dict[str, tuple[float, float]] = {}
    branches = "exact"
    for output_format in formats:
        walls, cpus = [], []
        for _ in range(repeat):
            wall, cpu, stderr = run(arguments, output_format)
            walls.append(wall)
            cpus.append(cpu)
            found = BRANCHES.search(stderr)
            if found:
                branches = found.group(1)
        seconds[output_format] = statistics.median(walls), statistics.median(cpus)
    return {"name": name, "ops": full, "walked": walked, "branches": branches, "s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="configurations whose name contains this")
    parser.add_argument("--repeat", type=int, default=3, help="runs per format (median)")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    args = parser.parse_args()
    names = [n for n in CONFIGS if not args.only or args.only in n]
    header = ["configuration", "ops", "walked", "branches", *args.formats]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for name in names:
        row = measure(name, args.formats, args.repeat)
        cells = [name, f"{row['ops']:,}", f"{row['walked']:,}", row["branches"]]
        cells += [f"{row['s'][f][0]:.2f} / {row['s'][f][1]:.2f} s" for f in args.formats]
        print("| " + " | ".join(cells) + " |", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
