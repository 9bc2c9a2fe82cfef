"""Benchmark: expansion and critical path of large generated configurations.

Run by hand (never as a test):  .venv/bin/python benchmarks/bench_expand.py [--quick]
Prints, per configuration: device operations, edges, wall time of each phase, peak
memory of the expansion (tracemalloc) and bytes per operation. Figures are recorded in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import dagc
from dagc.analysis.critical_path import critical_path, op_costs
from dagc.expand import expand
from dagc.ir.terms import TermKind


def deepseek_like(stages: int, gpus_per_stage: int, microbatches: int) -> str:
    """A DeepSeek-V3-class MoE: 61 layers, 256 experts top-8, `stages` pipeline stages."""
    groups = "\n".join(
        f"  group s{i} = gpu[{i * gpus_per_stage}..{(i + 1) * gpus_per_stage - 1}]"
        for i in range(stages)
    )
    names = ", ".join(f"s{i}" for i in range(stages))
    return f"""
model deepseek_v3 {{ layers = 61; hidden = 7168; heads = 128; head_dim = 128; ffn = 18432
  experts = 256; top_k = 8; expert_ffn = 2048; activation = swiglu; vocab = 129280 }}
workload {{ batch = {microbatches * 4}; seq = 4096; dtype = fp8; microbatches = {microbatches} }}
devices {{
{groups}
}}
layers 0..2 on s0 {{ embed; attention; mlp }}
layers 3..60 on {names} pp={stages} {{ attention; moe; lm_head }}
"""


CONFIGS: dict[str, Callable[[], str]] = {
    "seed-baseline": lambda: Path("examples/seed/baseline_tp8_pp2.dag").read_text(),
    "seed-ma-separation": lambda: Path("examples/seed/ma_separation.dag").read_text(),
    "llama70b-tp8-pp4-mb8": lambda: Path("examples/llama70b_tp8_pp4.dag").read_text(),
    "deepseek-4x32-mb12 (~1M ops)": lambda: deepseek_like(4, 32, 12),
    "deepseek-16x128-mb32 (2048 GPUs)": lambda: deepseek_like(16, 128, 32),
}
QUICK = ("seed-baseline", "seed-ma-separation", "llama70b-tp8-pp4-mb8")


def timed(label: str, times: dict[str, float], action: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = action()
    times[label] = time.perf_counter() - started
    return result


def peak_memory(action: Callable[[], Any]) -> int:
    """Peak bytes allocated while `action` runs (tracemalloc; slows it, so timed apart)."""
    gc.collect()
    tracemalloc.start()
    action()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def matmul_only_costs(graph: Any) -> np.ndarray:
    per_term = np.array(
        [
            2.0 * t.args[0] * t.args[1] * t.args[2] / 1e15 if t.kind is TermKind.MATMUL else 0.0
            for t in graph.terms.terms
        ]
    )
    return op_costs(graph, per_term)


def run(name: str, text: str) -> None:
    times: dict[str, float] = {}
    compiled = timed("compile", times, lambda: dagc.compile_text(text, f"{name}.dag"))
    gc.collect()
    expansion = timed("expand", times, lambda: expand(compiled, max_ops=10**9))
    graph = expansion.graph
    costs = matmul_only_costs(graph)
    path = timed("critical path", times, lambda: critical_path(graph, costs))
    peak = peak_memory(lambda: critical_path(expand(compiled, max_ops=10**9).graph, costs))
    ops = graph.num_ops
    rate = ops / (times["expand"] + times["critical path"])
    print(
        f"{name:34} ops={ops:>10,} edges={graph.num_edges:>10,}"
        f" compile={times['compile']:6.3f}s expand={times['expand']:6.2f}s"
        f" path={times['critical path']:6.2f}s ({rate / 1e6:5.2f} M ops/s)"
        f" peak={peak / 2**20:8.1f} MiB ({peak / max(ops, 1):6.1f} B/op)"
        f" T={path.time:.6f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small configurations")
    parser.add_argument("--only", help="run configurations whose name contains this")
    args = parser.parse_args()
    for name, make in CONFIGS.items():
        if args.quick and name not in QUICK:
            continue
        if args.only and args.only not in name:
            continue
        run(name, make())


if __name__ == "__main__":
    main()
