"""Expansion speed per shape of configuration: run by hand, never as a test.

    .venv/bin/python benchmarks/shapes.py               # every shape (a few minutes)
    .venv/bin/python benchmarks/shapes.py --only deep   # shapes whose name contains `deep`
    .venv/bin/python benchmarks/shapes.py --no-analyze  # expansion only

A fast expansion of wide configurations (thousands of GPUs, few layers) says nothing about
deep ones (tens of thousands of layers on two GPUs), many micro-batches or many experts: a
step that is linear in one dimension may be quadratic in another. For each shape, in a
fresh process so that its peak memory is its own: the device operations `expand` builds, its
wall time, operations per second and peak resident memory (`resource.getrusage`, over the
process's start after parsing); then the whole `dagc analyze FILE` as a user runs it (a
fresh process, process start included, its own peak memory from `os.wait4`). The figures
are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def deep(layers: int) -> str:
    """A small dense model `layers` deep, tensor parallel over 2 GPUs, one micro-batch."""
    return f"""
model deep {{ layers = {layers}; hidden = 1024; heads = 8; head_dim = 128; ffn = 4096
  vocab = 32000 }}
workload {{ batch = 8; seq = 1024; dtype = bf16 }}
devices {{ group g = gpu[0..1] }}
layers 0..{layers - 1} on g {{ embed; attention tp=2; mlp tp=2; lm_head tp=2 }}
"""


def many_microbatches(microbatches: int) -> str:
    """The seed's baseline (4 layers, TP8 inside each of two stages) with many micro-batches."""
    text = (ROOT / "examples/seed/baseline_tp8_pp2.dag").read_text()
    return text.replace("  dtype = bf16\n", f"  dtype = bf16\n  microbatches = {microbatches}\n")


def many_experts(experts: int, ep: int) -> str:
    """An MoE of 16 layers, `experts` experts per layer, `ep`-way expert parallel."""
    return f"""
model many_experts {{ layers = 16; hidden = 4096; heads = 32; head_dim = 128
  experts = {experts}; top_k = 8; expert_ffn = 1024; activation = swiglu; vocab = 32000 }}
workload {{ batch = 1024; seq = 1024; dtype = bf16; microbatches = 8 }}
devices {{ group g = gpu[0..{ep - 1}] }}
layers 0..15 on g {{ embed dp={ep}; attention dp={ep}; moe ep={ep}
  lm_head dp={ep} }}
"""


def example(path: str) -> Callable[[], str]:
    return lambda: (ROOT / path).read_text()


# name -> (the .dag text, the `symmetric` argument of expand)
SHAPES: dict[str, tuple[Callable[[], str], bool | None]] = {
    # wide: 3,072 GPUs (replica 0's 512 expanded); collapsed, as `dagc analyze` does
    "wide-gpt1t-3072gpu": (example("examples/validation/gpt_1008_0b.dag"), None),
    "deep-4000-layers-2gpu": (lambda: deep(4_000), False),
    "deep-10000-layers-2gpu": (lambda: deep(10_000), False),
    "deep-40000-layers-2gpu": (lambda: deep(40_000), False),
    "microbatches-1024": (lambda: many_microbatches(1_024), False),
    "experts-512-ep64": (lambda: many_experts(512, 64), False),
    "decode-deepseek-v3-320gpu": (example("examples/serving/deepseek_v3_decode_320gpu.dag"), False),
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_expand(name: str) -> dict[str, Any]:
    """Parse and expand one shape in this process; the figures of the expansion."""
    import dagc
    from dagc.expand import expand
    from dagc.ir.logical import Mode, decode_phase

    make, symmetric = SHAPES[name]
    compiled = dagc.compile_text(make(), f"{name}.dag")
    if compiled.program.mode is Mode.DECODE:
        from dataclasses import replace

        from dagc.analysis.serving import reported_context

        program = compiled.program
        compiled = replace(compiled, program=decode_phase(program, reported_context(program)))
    rss_start = _rss_mib()
    started = time.perf_counter()
    graph = expand(compiled, max_ops=10**9, symmetric=symmetric).graph
    seconds = time.perf_counter() - started
    rss = _rss_mib()
    return {
        "ops": graph.num_ops,
        "edges": graph.num_edges,
        "seconds": seconds,
        "ops_per_s": graph.num_ops / seconds,
        "peak_mib": rss,
        "bytes_per_op": (rss - rss_start) * 2**20 / max(graph.num_ops, 1),
    }


def measure_analyze(name: str) -> dict[str, Any]:
    """`dagc analyze FILE` in a fresh process: wall time and that process's peak memory."""
    make, _ = SHAPES[name]
    dagc_bin = str(Path(sys.executable).with_name("dagc"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}.dag"
        path.write_text(make())
        started = time.perf_counter()
        child = subprocess.Popen(
            [dagc_bin, "analyze", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            assert child.stderr is not None
            raise RuntimeError(f"dagc analyze failed on {name}: {child.stderr.read().decode()}")
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description="expansion speed per shape of configuration")
    parser.add_argument("--only", help="shapes whose name contains this")
    parser.add_argument("--no-analyze", action="store_true", help="skip `dagc analyze`")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: expand in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_expand(args.one)))
        return
    print(f"{'shape':28} {'ops':>11} {'expand s':>9} {'ops/s':>10} {'MB':>6} {'B/op':>5}", end="")
    print("" if args.no_analyze else f" {'analyze s':>10} {'MB':>6}")
    for name in SHAPES:
        if args.only and args.only not in name:
            continue
        child = subprocess.run(
            [sys.executable, __file__, "--one", name], check=True, capture_output=True, text=True
        )
        f = json.loads(child.stdout)
        row = (
            f"{name:28} {f['ops']:>11,} {f['seconds']:>9.2f} {f['ops_per_s']:>10,.0f}"
            f" {f['peak_mib']:>6.0f} {f['bytes_per_op']:>5.0f}"
        )
        if not args.no_analyze:
            a = measure_analyze(name)
            row += f" {a['seconds']:>10.2f} {a['peak_mib']:>6.0f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
