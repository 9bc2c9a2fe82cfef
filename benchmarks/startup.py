"""Start-up of the `dagc` command: wall time of small commands, process start included.

Run by hand:

    .venv/bin/python benchmarks/startup.py [--runs 11]

Each command runs `--runs` times (interleaved, so that a burst of load from elsewhere hits
them all alike); the median and the minimum of the wall time are printed, and the median of
the CPU time (user + system, of the child), which a loaded machine inflates less than the
wall time. `python -c pass` is the floor: no command can start faster than the interpreter
itself. The figures go in docs/performance.md
("Start-up"); they are never asserted by a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAGC = str(Path(sys.executable).with_name("dagc"))
SEEDS = ROOT / "examples" / "seed"

COMMANDS = {
    "python -c pass (the floor)": [sys.executable, "-c", "pass"],
    "dagc analyze examples/seed/ma_separation.dag": [
        DAGC,
        "analyze",
        str(SEEDS / "ma_separation.dag"),
    ],
    "dagc analyze examples/seed/baseline_tp8_pp2.dag": [
        DAGC,
        "analyze",
        str(SEEDS / "baseline_tp8_pp2.dag"),
    ],
    "dagc check examples/seed/ma_separation.dag": [DAGC, "check", str(SEEDS / "ma_separation.dag")],
    "dagc --help": [DAGC, "--help"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--only", help="commands whose label contains this")
    args = parser.parse_args()
    chosen = {k: v for k, v in COMMANDS.items() if not args.only or args.only in k}
    times: dict[str, list[float]] = {label: [] for label in chosen}
    cpu: dict[str, list[float]] = {label: [] for label in chosen}
    for command in chosen.values():  # one untimed run each: warm the disk cache
        subprocess.run(command, check=True, capture_output=True)
    for _ in range(args.runs):
        for label, command in chosen.items():
            before = _child_cpu()
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[label].append(time.perf_counter() - started)
            cpu[label].append(_child_cpu() - before)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.runs} runs each, load average {load:.2f}, {os.cpu_count()} CPUs")
    for label, seconds in times.items():
        print(
            f"  {label}: median {statistics.median(seconds):.3f} s,"
            f" min {min(seconds):.3f} s, max {max(seconds):.3f} s;"
            f" CPU median {statistics.median(cpu[label]):.3f} s"
        )


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
