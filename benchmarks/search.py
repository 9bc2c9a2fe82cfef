"""`dagc search`'s speed: run by hand, never as a test (figures in docs/performance.md).

    .venv/bin/python benchmarks/search.py                 # both worked examples
    .venv/bin/python benchmarks/search.py --only deepseek

For each worked example of docs/search.md: the layouts considered and valid, the time of
the whole search and its parts (bounds, evaluations), layouts bounded per second, the
evaluations it made, the median time of one evaluation over a sample of the valid layouts,
and from it the time evaluating every valid layout would take (brute force, estimated:
evaluating all of them takes hours for the training example) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from dagc.compiler import compile_file
from dagc.search import Options, Space
from dagc.search.evaluate import bound, evaluate
from dagc.search.run import bound_key, search
from dagc.search.space import Invalid, layout_program, layouts

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    "deepseek": (ROOT / "examples/serving/deepseek_v3_decode_320gpu.dag", 320, 0.050),
    "llama": (ROOT / "examples/training/llama_3_1_70b_train.dag", 64, None),
}
SAMPLE = 7  # layouts whose evaluation is timed for the brute-force estimate


def measure(name: str) -> None:
    path, gpus, tpot = EXAMPLES[name]
    space = Space(compile_file(path).program, gpus)
    valid = []
    for layout in layouts(space):
        try:
            layout_program(space, layout)
        except Invalid:
            continue
        valid.append(layout)
    unique = list(dict.fromkeys(bound_key(layout) for layout in valid))
    started = time.perf_counter()
    for layout in unique:
        bound(space, layout, None)
    bounds_s = time.perf_counter() - started
    result = search(space, Options(top=5, tpot_max_s=tpot))
    step = max(1, len(valid) // SAMPLE)
    times = []
    for layout in valid[::step][:SAMPLE]:
        started = time.perf_counter()
        evaluate(space, layout, None)
        times.append(time.perf_counter() - started)
    one = statistics.median(times)
    brute = one * len(valid)
    counts = result.counts
    print(f"{name}: {counts.considered} layouts, {len(valid)} valid, {len(unique)} bounds")
    print(f"  bounds        {bounds_s:8.2f} s  ({len(unique) / bounds_s:,.0f} layouts/s)")
    print(
        f"  search        {counts.seconds:8.2f} s  ({counts.evaluated} evaluated,"
        f" {counts.pruned_by_bound} pruned by bound)"
    )
    print(f"  one evaluation {one:7.2f} s  (median of {len(times)})")
    print(f"  brute force   {brute:8.0f} s  (estimated)  ratio {brute / counts.seconds:,.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(EXAMPLES))
    args = parser.parse_args()
    for name in [args.only] if args.only else sorted(EXAMPLES):
        measure(name)


if __name__ == "__main__":
    main()
