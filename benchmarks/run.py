"""dagc's benchmark suite: run by hand, never as a test.

    .venv/bin/python benchmarks/run.py            # everything (about two minutes)
    .venv/bin/python benchmarks/run.py --quick    # the small configurations
    .venv/bin/python benchmarks/run.py --only deepseek

For each configuration, in a fresh process so that its peak memory is its own: device
operations and edges, then wall time and peak resident memory after each phase (parse,
expand, cost, critical path, verify, formula, collapsed render), the expansion rate, memory
per operation, and networkx's `dag_longest_path` on the same graph for comparison. Then the
end-to-end time of `dagc analyze` on a seed example, process start included. The figures
are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NETWORKX_LIMIT = 1_100_000  # networkx needs ~1 kB per node: larger graphs are skipped


def deepseek_like(stages: int, gpus_per_stage: int, microbatches: int) -> str:
    """A DeepSeek-V3-class MoE: 61 layers (3 dense), 256 experts top-8, `stages` stages."""
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
  gpu = h200
{groups}
}}
layers 0..2 on s0 {{ embed; attention; mlp }}
layers 3..60 on {names} pp={stages} {{ attention; moe; lm_head }}
"""


MIXTRAL_8X22B = """
model mixtral_8x22b { layers = 56; hidden = 6144; heads = 48; kv_heads = 8; experts = 8
  top_k = 2; expert_ffn = 16384; activation = swiglu; vocab = 32768 }
workload { batch = 64; seq = 4096; dtype = bf16; microbatches = 8 }
devices { group s0 = gpu[0..7]; group s1 = gpu[8..15] }
layers 0..55 on s0, s1 pp=2 { embed; attention; moe ep=8; lm_head }
"""


def example(path: str) -> Callable[[], str]:
    return lambda: (ROOT / path).read_text()


CONFIGS: dict[str, Callable[[], str]] = {
    "seed-baseline-tp8-pp2": example("examples/seed/baseline_tp8_pp2.dag"),
    "seed-ma-separation": example("examples/seed/ma_separation.dag"),
    "llama70b-tp8-pp4-mb8": example("examples/llama70b_tp8_pp4.dag"),
    "mixtral8x22b-ep8-pp2-mb8": lambda: MIXTRAL_8X22B,
    "deepseek-4x32gpu-mb12": lambda: deepseek_like(4, 32, 12),
    "deepseek-16x128gpu-mb32": lambda: deepseek_like(16, 128, 32),
}
QUICK = ("seed-baseline-tp8-pp2", "seed-ma-separation", "llama70b-tp8-pp4-mb8")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str) -> dict[str, Any]:
    """Run every phase on one configuration (in this process) and return the figures."""
    import dagc
    from dagc.analysis.critical_path import critical_path, op_costs
    from dagc.api import cost_model, formula_compiled
    from dagc.expand import expand
    from dagc.ir.verify import verify_device

    phases: dict[str, tuple[float, float]] = {}

    def phase(label: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = action()
        phases[label] = (time.perf_counter() - started, _rss_mib())
        return result

    text = CONFIGS[name]()
    rss_start = _rss_mib()
    compiled = phase("parse", lambda: dagc.compile_text(text, f"{name}.dag"))
    graph = phase("expand", lambda: expand(compiled, max_ops=10**9, symmetric=False).graph)
    model, _ = cost_model(compiled.program)
    costs = phase("cost", lambda: op_costs(graph, model.term_costs(graph.terms.terms)))
    path = phase("critical path", lambda: critical_path(graph, costs))
    rss_graph = _rss_mib()
    # A copy without the cached topological levels: the verifier sorts the graph itself.
    unsorted = graph.with_edges(graph.src, graph.dst, graph.edge_kind)
    phase("verify", lambda: verify_device(unsorted))
    formula = phase("formula", lambda: formula_compiled(compiled, max_ops=10**9))
    phase("render", lambda: _render(compiled))
    figures: dict[str, Any] = {
        "name": name,
        "ops": graph.num_ops,
        "edges": graph.num_edges,
        "time_s": path.time,
        "formula_exact": formula.exact,
        "phases": phases,
        "bytes_per_op": (rss_graph - rss_start) * 2**20 / max(graph.num_ops, 1),
    }
    build = phases["expand"][0] + phases["critical path"][0]
    figures["ops_per_s"] = graph.num_ops / build
    figures["networkx"] = (
        _networkx(graph, costs, path.time) if graph.num_ops <= NETWORKX_LIMIT else None
    )
    if figures["networkx"]:
        figures["networkx"]["ratio"] = figures["networkx"]["seconds"] / build
    return figures


def _render(compiled: Any) -> list[str]:
    """The default render (`dagc render FILE -o x.svg`): collapsed above the size cap."""
    import tempfile

    from dagc.api import build_schedule
    from dagc.backends.render import render

    schedule, _ = build_schedule(compiled, max_ops=10**9)
    with tempfile.TemporaryDirectory() as folder:
        return render(schedule, Path(folder) / "picture.svg", view="block")


def _networkx(graph: Any, costs: Any, expected: float) -> dict[str, Any]:
    """networkx's longest path on the same DAG (node costs moved onto edges), timed."""
    import networkx as nx

    started = time.perf_counter()
    digraph = nx.DiGraph()
    weight = costs.tolist()
    sink = graph.num_ops
    digraph.add_weighted_edges_from(
        (s, d, weight[s]) for s, d in zip(graph.src.tolist(), graph.dst.tolist(), strict=True)
    )
    digraph.add_weighted_edges_from((op, sink, weight[op]) for op in range(graph.num_ops))
    nodes = nx.dag_longest_path(digraph, weight="weight")
    seconds = time.perf_counter() - started
    length = sum(digraph[a][b]["weight"] for a, b in itertools.pairwise(nodes))
    return {"seconds": seconds, "agrees": abs(length - expected) <= 1e-9 * max(expected, 1)}


def end_to_end(runs: int = 11) -> dict[str, float]:
    """Wall time of `dagc analyze` on the MA separation seed, process start included."""
    dagc_bin = str(Path(sys.executable).with_name("dagc"))
    command = [dagc_bin, "analyze", str(ROOT / "examples/seed/ma_separation.dag")]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def print_row(f: dict[str, Any]) -> None:
    phases = "  ".join(
        f"{label} {seconds:.2f}s/{rss:.0f}M" for label, (seconds, rss) in f["phases"].items()
    )
    nx_text = "networkx: skipped (too large)"
    if f["networkx"]:
        nx_text = (
            f"networkx {f['networkx']['seconds']:.2f}s, dagc {f['networkx']['ratio']:.1f}x"
            f" faster{'' if f['networkx']['agrees'] else ' (LENGTHS DIFFER)'}"
        )
    print(
        f"{f['name']}\n  ops {f['ops']:,}  edges {f['edges']:,}  "
        f"{f['ops_per_s'] / 1e6:.2f} M ops/s  {f['bytes_per_op']:.0f} B/op  "
        f"T = {f['time_s']:.6f} s\n  {phases}\n  {nx_text}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="dagc's benchmark suite")
    parser.add_argument("--quick", action="store_true", help="only the small configurations")
    parser.add_argument("--only", help="configurations whose name contains this")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    for name in CONFIGS:
        if (args.quick and name not in QUICK) or (args.only and args.only not in name):
            continue
        child = subprocess.run(
            [sys.executable, __file__, "--one", name], check=True, capture_output=True, text=True
        )
        print_row(json.loads(child.stdout))
    e2e = end_to_end()
    print(
        f"dagc analyze examples/seed/ma_separation.dag, process start included:"
        f" median {e2e['median_s']:.3f} s, min {e2e['min_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
