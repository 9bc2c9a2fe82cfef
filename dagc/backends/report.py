"""Reports of `dagc analyze` and `dagc compare`: text (80 columns), markdown and JSON.

The JSON schema is documented in docs/analyze.md.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from dagc.analysis.analyze import Analysis, GpuFigures, Share
from dagc.analysis.capacity import largest_context
from dagc.analysis.serving import ServingFigures, Sweep, SweepRow, describe_mode
from dagc.ir.logical import Mode, Program, format_gpus

JSON_VERSION = 1


@dataclass(frozen=True)
class FormulaSection:
    """The runtime formula, when a report includes it (`dagc analyze --formula`)."""

    text: str
    python: str
    exact: bool
    notes: tuple[str, ...]


def _seconds(value: float) -> str:
    """A duration with a unit that keeps 4 significant digits readable."""
    if value == 0:
        return "0 s"
    if value >= 1:
        return f"{value:.4f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3f} ms"
    return f"{value * 1e6:.2f} us"


def _bytes(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def _count(value: int) -> str:
    """A count in 4 significant digits with a suffix (`805.3M`, `671.0B`) for tables."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.4g}{suffix}"
    return str(value)


def _kv(value: int) -> str:
    """KV-cache bytes per token, in KB (1000 bytes) as memory is in GB."""
    return f"{value / 1e3:.2f} KB"


def summary_lines(program: Program) -> list[str]:
    """The configuration in a few lines."""
    m, w, hw = program.model, program.workload, program.hardware
    parts = [f"{m.layers} layers", f"hidden {m.hidden}"]
    if m.heads:
        kv = f" ({m.kv_heads} kv)" if m.kv_heads != m.heads else ""
        parts.append(f"{m.heads} heads x {m.head_dim}{kv}")
    if m.ffn:
        parts.append(f"ffn {m.ffn}")
    if m.experts:
        parts.append(f"{m.experts} experts top-{m.top_k} x {m.expert_ffn}")
    parts.append(m.activation.value)
    groups = ", ".join(f"{g.name} {format_gpus(g.gpus)}" for g in program.groups)
    gpus = len({gpu for g in program.groups for gpu in g.gpus})
    context = f" at context {w.context}" if w.context is not None else ""
    return [
        f"model     {m.name}: " + ", ".join(parts),
        f"workload  batch {w.batch} x seq {w.seq}{context}, {w.dtype.value}, {w.microbatches}"
        f" micro-batch{'es' if w.microbatches > 1 else ''} of {w.tokens_per_microbatch} tokens",
        f"devices   {gpus} x {hw.gpu} (node size {hw.node_size}): {groups}",
    ]


def gpu_rows(gpus: Sequence[GpuFigures]) -> list[tuple[str, GpuFigures]]:
    """GPUs with identical rounded figures merged into one row, labelled by their range."""
    rows: list[tuple[list[int], GpuFigures]] = []
    for figures in gpus:
        key = _row_key(figures)
        if rows and _row_key(rows[-1][1]) == key and rows[-1][0][-1] == figures.gpu - 1:
            rows[-1][0].append(figures.gpu)
        else:
            rows.append(([figures.gpu], figures))
    return [
        (f"gpu{ids[0]}" if len(ids) == 1 else format_gpus(tuple(ids)), figures)
        for ids, figures in rows
    ]


def _row_key(g: GpuFigures) -> tuple[str, ...]:
    return (f"{g.busy_s:.6g}", f"{g.tflops:.4g}", f"{g.memory_bytes:.4g}")


def write_text(
    analysis: Analysis,
    stream: TextIO,
    *,
    path_limit: int = 60,
    formula: FormulaSection | None = None,
) -> None:
    """The human report, at most 80 columns wide."""
    graph = analysis.graph
    header = f"dagc analyze: {graph.program.source_path}{_scope(analysis.serving)}"
    out = [header, *summary_lines(graph.program)]
    out.append(f"cost      {analysis.cost_model}")
    out += [f"          note: {note}" for note in analysis.cost_notes]
    out.append(f"graph     {_graph_size(graph)}")
    out.append("")
    if analysis.serving is not None:
        out += [*_serving_text(analysis.serving), ""]
    total = analysis.total_s
    comm = analysis.communication_s / total if total else 0.0
    out.append(
        f"critical path  {_seconds(total)}   compute {1 - comm:.1%}, communication {comm:.1%}"
    )
    family, share = analysis.bottleneck()
    out.append(f"bottleneck     {family} ({share:.1%} of the critical path)")
    out.append(f"by kind        {_shares(analysis.by_kind)}")
    out.append(f"by block       {_shares(analysis.by_block)}")
    out.append(f"throughput     {_throughput(analysis)}")
    out.append(f"params         {analysis.params:,} (active {analysis.active_params:,})")
    out.append(f"KV cache       {analysis.kv_cache_bytes_per_token:,} bytes per token")
    if analysis.training is None:
        out.append(f"model FLOPs    {analysis.model_flops:.4e}   MFU {analysis.mfu:.1%}")
        out.append(f"executed FLOPs {analysis.executed_flops:.4e}   HFU {analysis.hfu:.1%}")
    else:  # the iteration's FLOPs and utilisations are in the training section
        out.append(f"model FLOPs    {analysis.model_flops:.4e} (forward of the global batch)")
        out.append(f"executed FLOPs {analysis.executed_flops:.4e} (one replica's iteration)")
    out += _training_text(analysis)
    out.append("")
    out.append(f"  {'#':>4}  {'node':<34} {'kind':<11} {'time':>12} {'share':>6}")
    shown = analysis.path if path_limit <= 0 else analysis.path[:path_limit]
    for index, node in enumerate(shown, start=1):
        out.append(
            f"  {index:>4}  {_clip(node.name, 34):<34} {node.kind:<11}"
            f" {_seconds(node.time_s):>12} {node.share:>6.1%}"
        )
    hidden = len(analysis.path) - len(shown)
    if hidden > 0:
        out.append(f"  ... {hidden} more nodes (--path-limit 0 shows all)")
    out.append("")
    out.append("per GPU   (idle: waiting for other GPUs; HFU: executed FLOP/s over peak)")
    out.append(
        f"  {'gpus':<14} {'busy':>11} {'idle':>11} {'bubble':>7} {'TFLOP/s':>8}"
        f" {'HFU':>6} {'memory':>10}"
    )
    for label, g in gpu_rows(analysis.gpus):
        out.append(
            f"  {_clip(label, 14):<14} {_seconds(g.busy_s):>11} {_seconds(g.idle_s):>11}"
            f" {g.bubble:>7.1%} {g.tflops:>8.1f} {g.hfu:>6.1%} {_bytes(g.memory_bytes):>10}"
        )
    if analysis.notes:
        out.append("")
        out += [f"note: {n}" for n in analysis.notes]
    if analysis.warnings:
        out.append("")
        out += [f"warning: {w}" for w in analysis.warnings]
    lines = [line for long in out for line in _wrap(long)]
    if formula is not None:  # laid out by the formula printer, not re-wrapped
        exact = "exact for every monotone cost model" if formula.exact else "not exact"
        lines += ["", f"formula ({exact})", *formula.text.splitlines()]
        lines += [f"note: {note}" for note in formula.notes]
    stream.write("\n".join(lines) + "\n")


def _scope(serving: ServingFigures | None) -> str:
    """What the report's critical path, per-GPU and totals describe, for the header line
    ("" for a prefill file, whose report is as it always was)."""
    if serving is None:
        return ""
    if serving.mode is Mode.DECODE:
        return f" (one decode step at context {serving.context:,})"
    if serving.steps is None:
        return " (serve with one output token: the report below is its prefill)"
    return f" (serve; the report below is its last decode step, at context {serving.context:,})"


def _serving_rows(serving: ServingFigures) -> list[tuple[str, str]]:
    """The serving figures as (label, text) rows, shared by the text and markdown reports."""
    rows = [("serving", describe_mode(serving))]
    gpus = f"{serving.gpus} GPU{'s' if serving.gpus > 1 else ''}"
    if serving.mode is Mode.DECODE:
        tpot = _maybe_seconds(serving.tpot_s)
        rows.append(("TPOT", f"{tpot} (one decode step: the critical path below)"))
        rate = f"{_rate(serving.tokens_per_s)} (batch / TPOT)"
    else:
        ttft = _maybe_seconds(serving.ttft_s)
        if serving.disaggregated:
            rows.append(("TTFT", f"{ttft} (end of the prefill's last block)"))
            rows.append(
                (
                    "KV handoff",
                    f"{_maybe_seconds(serving.handoff_s)} (end of the last kv_send); prefill"
                    f" makespan {_maybe_seconds(serving.prefill_makespan_s)}",
                )
            )
        else:
            rows.append(("TTFT", f"{ttft} (the prefill's critical path)"))
        steps = serving.steps
        if steps is None:
            rows.append(("TPOT", "- (one output token: no decode step)"))
        else:
            rows.append(
                (
                    "TPOT",
                    f"{_maybe_seconds(serving.tpot_s)} (mean of {steps.steps:,} decode steps;"
                    f" first {_seconds(steps.first_s)}, last {_seconds(steps.last_s)})",
                )
            )
        start = "max(TTFT, KV handoff)" if serving.disaggregated else "TTFT"
        rows.append(("end to end", f"{_maybe_seconds(serving.e2e_s)} ({start} + decode steps)"))
        if serving.disaggregated:
            how = (
                "steady state: batch x output / max(prefill makespan, decode steps), one"
                " batch prefilling while the previous one decodes"
            )
        else:
            how = "batch x output / end to end"
        rate = f"{_rate(serving.tokens_per_s)} ({how})"
    rows.append(("tokens/s", f"{rate}, {_rate(serving.tokens_per_s_per_gpu)} per GPU ({gpus})"))
    rows.append(("max batch", _max_batch(serving)))
    rows.append(("approximation", serving.approximation))
    return rows


def _max_batch(serving: ServingFigures) -> str:
    if serving.max_batch is None:
        return "- (not computed)"
    context = serving.max_batch_context or serving.context
    if serving.max_batch == 0:
        return f"0 (not even the smallest batch fits every GPU's memory at context {context:,})"
    return (
        f"{serving.max_batch:,} (the largest that fits every GPU's memory at context {context:,})"
    )


def _maybe_seconds(value: float | None) -> str:
    return "-" if value is None else _seconds(value)


def _serving_text(serving: ServingFigures) -> list[str]:
    """The serving section of the text report."""
    return [f"{label:<14} {text}" for label, text in _serving_rows(serving)]


def _markdown_serving(serving: ServingFigures) -> list[str]:
    """The serving section of the markdown report."""
    rows = _serving_rows(serving)
    return ["| serving | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


def _json_serving(serving: ServingFigures) -> dict[str, Any]:
    """The `serving` object of the JSON report (decode and serve files only)."""
    steps = serving.steps
    approximation: dict[str, Any] = {
        "exact": steps is None or steps.exact,
        "text": serving.approximation,
        "steps": steps.steps if steps is not None else (1 if serving.mode is Mode.DECODE else 0),
        "priced_steps": steps.priced if steps is not None else None,
        "sum_s": steps.total_s if steps is not None else None,
        "sum_lower_s": steps.lower_s if steps is not None else None,
        "sum_upper_s": steps.upper_s if steps is not None else None,
        "monotone": steps.monotone if steps is not None else True,
    }
    return {
        "mode": serving.mode.value,
        "batch": serving.batch,
        "input": serving.input_tokens,
        "output": serving.output_tokens,
        "context": serving.context,
        "gpus": serving.gpus,
        "ttft_s": serving.ttft_s,
        "tpot_s": serving.tpot_s,
        "e2e_s": serving.e2e_s,
        "tokens_per_s": serving.tokens_per_s,
        "tokens_per_s_per_gpu": serving.tokens_per_s_per_gpu,
        "max_batch": serving.max_batch,
        "max_batch_context": serving.max_batch_context,
        "decode_step_first_s": serving.decode_step_first_s,
        "decode_step_last_s": serving.decode_step_last_s,
        "disaggregated": serving.disaggregated,
        "kv_handoff_s": serving.handoff_s,
        "prefill_makespan_s": serving.prefill_makespan_s,
        "approximation": approximation,
        "report": _scope(serving).strip(" ()"),
    }


def _training_text(analysis: Analysis) -> list[str]:
    """The training section of the text report (nothing for prefill)."""
    t = analysis.training
    if t is None:
        return []
    layout = t.gpus // t.dp
    out = [
        "",
        f"training       iteration {_seconds(t.iteration_s)} (the critical path),"
        f" dp {t.dp} x {layout} GPUs = {t.gpus} GPUs",
        f"tokens/s       {_rate(t.tokens_per_s)}, {_rate(t.tokens_per_s_per_gpu)} per GPU"
        f" ({t.tokens:,} tokens per iteration)",
        f"step FLOPs     model {t.model_flops:.4e} (3 x forward), MFU {t.mfu:.1%},"
        f" {t.model_tflops_per_gpu:.1f} TFLOP/s per GPU",
        f"               executed {t.executed_flops:.4e} (every replica), HFU {t.hfu:.1%}",
        f"bubble         {t.bubble:.1%} (idle share of the iteration on gpu{t.busiest_gpu},"
        " the busiest)",
        f"exposed comm   {_seconds(t.exposed_communication_s)}"
        f" ({_share(t.exposed_communication_s, t.iteration_s)} of the iteration:"
        " on the critical path)",
        "",
        f"memory per GPU (capacity {_bytes(analysis.memory_limit)}; activations: saved"
        " peak + working set)",
        f"  {'gpus':<14} {'weights':>9} {'grads':>9} {'optimizer':>9} {'activ.':>9}"
        f" {'total':>9} {'of cap.':>7}",
    ]
    for label, g in gpu_rows(analysis.gpus):
        out.append(
            f"  {_clip(label, 14):<14} {_bytes(g.weight_bytes):>9} {_bytes(g.gradient_bytes):>9}"
            f" {_bytes(g.optimizer_bytes):>9} {_bytes(g.activation_bytes):>9}"
            f" {_bytes(g.memory_bytes):>9} {_share(g.memory_bytes, analysis.memory_limit):>7}"
        )
    return out


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _shares(parts: Sequence[Share]) -> str:
    """`matmul 33.5%, collective 31.5%`: the parts that take time, largest first."""
    shown = [f"{p.name} {p.share:.1%}" for p in parts if p.time_s > 0]
    return ", ".join(shown) or "-"


def _rate(value: float | None) -> str:
    """Tokens per second as a whole number with thousands separators (`987,417`); `-` when
    the run takes no time."""
    return "-" if value is None else f"{value:,.0f}"


def _throughput(analysis: Analysis) -> str:
    if analysis.tokens_per_s is None:
        return f"unbounded: the critical path takes no time ({analysis.tokens:,} tokens)"
    return (
        f"{_rate(analysis.tokens_per_s)} tokens/s,"
        f" {_rate(analysis.tokens_per_s_per_gpu)} per GPU ({analysis.tokens:,} tokens)"
    )


def _wrap(line: str, width: int = 80) -> list[str]:
    """A line cut at spaces to `width` columns, continuations indented under its value
    (`model     ...`, `by block       ...`, `warning: ...`); a word longer than a line (a long
    path) is cut."""
    if len(line) <= width:
        return [line]
    label = re.match(r"\s*(?:dagc analyze:|by \S+|\S+)\s+", line)
    indent = " " * min(len(label.group()) if label else 0, width // 2)
    return textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)


def _graph_size(graph: Any) -> str:
    text = f"{graph.full_num_ops:,} operations, {graph.full_num_edges:,} edges"
    if graph.symmetry is not None:
        text += f" (analysed as {graph.num_ops:,} by symmetry)"
    return text


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def write_markdown(
    analysis: Analysis,
    stream: TextIO,
    *,
    path_limit: int = 0,
    formula: FormulaSection | None = None,
) -> None:
    """The report as GitHub-flavoured markdown."""
    graph = analysis.graph
    out = [f"# dagc analyze: `{graph.program.source_path}`{_scope(analysis.serving)}", ""]
    out += [
        f"- {line.split(maxsplit=1)[0]}: {line.split(maxsplit=1)[1]}"
        for line in summary_lines(graph.program)
    ]
    out.append(f"- cost model: {analysis.cost_model}")
    out += [f"  - note: {note}" for note in analysis.cost_notes]
    out.append(f"- graph: {_graph_size(graph)}")
    total = analysis.total_s
    comm = analysis.communication_s / total if total else 0.0
    family, share = analysis.bottleneck()
    out.append("")
    if analysis.serving is not None:
        out += _markdown_serving(analysis.serving)
    out += [
        f"**Critical path: {_seconds(total)}** (compute {1 - comm:.1%}, communication"
        f" {comm:.1%}); bottleneck `{family}` ({share:.1%}); MFU {analysis.mfu:.1%},"
        f" HFU {analysis.hfu:.1%}; throughput {_throughput(analysis)}.",
        "",
        *_markdown_totals(analysis),
        *_markdown_training(analysis),
        "",
        *_markdown_split("kind", analysis.by_kind),
        "",
        *_markdown_split("block", analysis.by_block),
        "",
        "| # | node | kind | term | time | share |",
        "|---:|---|---|---|---:|---:|",
    ]
    shown = analysis.path if path_limit <= 0 else analysis.path[:path_limit]
    for index, node in enumerate(shown, start=1):
        terms = " + ".join(f"`{t}`" for t in node.terms)
        out.append(
            f"| {index} | `{node.name}` | {node.kind} | {terms} | {_seconds(node.time_s)}"
            f" | {node.share:.1%} |"
        )
    out += [
        "",
        "| GPUs | busy | idle | bubble | TFLOP/s | HFU | memory |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, g in gpu_rows(analysis.gpus):
        out.append(
            f"| {label} | {_seconds(g.busy_s)} | {_seconds(g.idle_s)} | {g.bubble:.1%}"
            f" | {g.tflops:.1f} | {g.hfu:.1%} | {_bytes(g.memory_bytes)} |"
        )
    if analysis.notes:
        out += ["", *[f"> note: {n}" for n in analysis.notes]]
    if analysis.warnings:
        out += ["", *[f"> warning: {w}" for w in analysis.warnings]]
    if formula is not None:
        exact = "exact for every monotone cost model" if formula.exact else "not exact"
        out += ["", f"**Formula** ({exact}):", "", "```", formula.text, "```"]
        out += [f"> note: {note}" for note in formula.notes]
    stream.write("\n".join(out) + "\n")


def _markdown_totals(analysis: Analysis) -> list[str]:
    """The model's totals and the two utilisations as a markdown table."""
    rows = [
        ("params", f"{analysis.params:,}"),
        ("active params", f"{analysis.active_params:,}"),
        ("KV cache per token", f"{analysis.kv_cache_bytes_per_token:,} bytes"),
        ("model FLOPs", f"{analysis.model_flops:.4e}"),
        ("executed FLOPs", f"{analysis.executed_flops:.4e}"),
        ("MFU", f"{analysis.mfu:.1%}"),
        ("HFU", f"{analysis.hfu:.1%}"),
    ]
    return ["| total | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)]


def _markdown_training(analysis: Analysis) -> list[str]:
    """The training figures and memory per GPU as markdown tables (nothing for prefill)."""
    t = analysis.training
    if t is None:
        return []
    rows = [
        ("iteration (critical path)", _seconds(t.iteration_s)),
        ("GPUs (dp x layout)", f"{t.gpus} ({t.dp} x {t.gpus // t.dp})"),
        ("tokens per iteration", f"{t.tokens:,}"),
        ("tokens/s", _rate(t.tokens_per_s)),
        ("tokens/s per GPU", _rate(t.tokens_per_s_per_gpu)),
        ("model FLOPs (3 x forward)", f"{t.model_flops:.4e}"),
        ("executed FLOPs (every replica)", f"{t.executed_flops:.4e}"),
        ("model TFLOP/s per GPU", f"{t.model_tflops_per_gpu:.1f}"),
        ("MFU", f"{t.mfu:.1%}"),
        ("HFU", f"{t.hfu:.1%}"),
        ("bubble (busiest GPU's idle share)", f"{t.bubble:.1%} (gpu{t.busiest_gpu})"),
        ("exposed communication", _seconds(t.exposed_communication_s)),
    ]
    out = ["", "| training | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)]
    out += [
        "",
        f"Memory per GPU (capacity {_bytes(analysis.memory_limit)}):",
        "",
        "| GPUs | weights | gradients | optimizer states | activations (saved + working)"
        " | total | of capacity |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, g in gpu_rows(analysis.gpus):
        out.append(
            f"| {label} | {_bytes(g.weight_bytes)} | {_bytes(g.gradient_bytes)}"
            f" | {_bytes(g.optimizer_bytes)} | {_bytes(g.activation_bytes)}"
            f" ({_bytes(g.saved_activation_bytes)} + {_bytes(g.working_set_bytes)})"
            f" | {_bytes(g.memory_bytes)} | {_share(g.memory_bytes, analysis.memory_limit)} |"
        )
    return out


def _json_training(analysis: Analysis) -> dict[str, Any]:
    """The `training` object of the JSON report."""
    t = analysis.training
    assert t is not None
    return {
        "iteration_s": t.iteration_s,
        "dp": t.dp,
        "gpus": t.gpus,
        "tokens": t.tokens,
        "tokens_per_s": t.tokens_per_s,
        "tokens_per_s_per_gpu": t.tokens_per_s_per_gpu,
        "model_flops": t.model_flops,
        "executed_flops": t.executed_flops,
        "model_tflops_per_gpu": t.model_tflops_per_gpu,
        "mfu": t.mfu,
        "hfu": t.hfu,
        "bubble": t.bubble,
        "busiest_gpu": t.busiest_gpu,
        "exposed_communication_s": t.exposed_communication_s,
        "peak_memory_bytes": _peak_memory(analysis),
    }


def _json_memory(g: GpuFigures) -> dict[str, int]:
    """A GPU's `memory` object (training reports)."""
    return {
        "peak_bytes": g.memory_bytes,
        "weight_bytes": g.weight_bytes,
        "gradient_bytes": g.gradient_bytes,
        "optimizer_bytes": g.optimizer_bytes,
        "activation_bytes": g.activation_bytes,
        "saved_activation_bytes": g.saved_activation_bytes,
        "working_set_bytes": g.working_set_bytes,
    }


def _holds_cache(analysis: Analysis) -> bool:
    """Whether the program keeps a KV cache (decode, serve, a disaggregated prefill)."""
    return largest_context(analysis.graph.program) is not None


def _json_cache_memory(g: GpuFigures) -> dict[str, int]:
    """A GPU's `memory` object (decode and serve reports: a KV cache)."""
    return {
        "peak_bytes": g.memory_bytes,
        "weight_bytes": g.weight_bytes,
        "kv_cache_bytes": g.kv_cache_bytes,
        "working_set_bytes": g.working_set_bytes,
    }


def _json_gpu(g: GpuFigures, training: bool, cache: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "gpu": g.gpu,
        "busy_s": g.busy_s,
        "idle_s": g.idle_s,
        "bubble": g.bubble,
        "matmul_flops": g.matmul_flops,
        "tflops": g.tflops,
        "hfu": g.hfu,
        "weight_bytes": g.weight_bytes,
        "activation_bytes": g.activation_bytes,
        "memory_bytes": g.memory_bytes,
    }
    if training:
        entry["memory"] = _json_memory(g)
    elif cache:
        entry["memory"] = _json_cache_memory(g)
    return entry


def _markdown_split(what: str, parts: Sequence[Share]) -> list[str]:
    """The critical path's time per kind or block as a markdown table, largest first."""
    rows = [f"| {p.name} | {_seconds(p.time_s)} | {p.share:.1%} |" for p in parts]
    return [f"| {what} | time | share |", "|---|---:|---:|", *rows]


def _json_split(parts: Sequence[Share]) -> dict[str, dict[str, float]]:
    return {p.name: {"time_s": p.time_s, "share": p.share} for p in parts}


def _json_reach(analysis: Analysis) -> dict[str, Any] | None:
    """Products priced outside a cost table (None without a table, or all inside it)."""
    reach = analysis.table_reach
    if reach is None:
        return None
    return {
        "table": reach.table,
        "range": {axis: list(bounds) for axis, bounds in zip("mkn", reach.ranges, strict=True)},
        "fallback": reach.fallback,
        "terms": reach.terms,
        "priced_terms": reach.priced,
        "raised_to_edge": reach.raised,
        "lowered_to_edge": reach.lowered,
        "path_time_s": reach.path_s,
        "path_share": reach.share,
    }


def analysis_json(analysis: Analysis) -> dict[str, Any]:
    """The report as a JSON-ready dict (schema in docs/analyze.md)."""
    graph = analysis.graph
    program = graph.program
    family, share = analysis.bottleneck()
    document: dict[str, Any] = {
        "format": "dagc-analysis",
        "version": JSON_VERSION,
        "source": program.source_path,
        "model": program.model.name,
        "cost_model": analysis.cost_model,
        "cost_notes": list(analysis.cost_notes),
        "cost_extrapolation": _json_reach(analysis),
        "critical_path": {
            "time_s": analysis.total_s,
            "compute_s": analysis.compute_s,
            "communication_s": analysis.communication_s,
            "bottleneck": {"family": family, "share": share},
            "by_kind": _json_split(analysis.by_kind),
            "by_block": _json_split(analysis.by_block),
            "nodes": [node.name for node in analysis.path],
            "steps": [
                {
                    "node": node.name,
                    "kind": node.kind,
                    "ops": list(node.ops),
                    "terms": list(node.terms),
                    "start_s": node.start_s,
                    "time_s": node.time_s,
                    "share": node.share,
                }
                for node in analysis.path
            ],
        },
        "totals": {
            "ops": graph.full_num_ops,
            "edges": graph.full_num_edges,
            "matmul_flops": analysis.matmul_flops,
            "executed_flops": analysis.executed_flops,
            "model_flops": analysis.model_flops,
            "params": analysis.params,
            "active_params": analysis.active_params,
            "kv_cache_bytes_per_token": analysis.kv_cache_bytes_per_token,
            "mfu": analysis.mfu,
            "hfu": analysis.hfu,
            "gpus": len(analysis.gpus),
            "tokens": analysis.tokens,
            "tokens_per_s": analysis.tokens_per_s,
            "tokens_per_s_per_gpu": analysis.tokens_per_s_per_gpu,
        },
        "gpus": [
            _json_gpu(g, analysis.training is not None, _holds_cache(analysis))
            for g in analysis.gpus
        ],
        "memory_limit_bytes": analysis.memory_limit,
        "notes": list(analysis.notes),
        "warnings": list(analysis.warnings),
    }
    if analysis.training is not None:  # prefill reports keep their keys exactly
        document["training"] = _json_training(analysis)
    if analysis.serving is not None:
        document["serving"] = _json_serving(analysis.serving)
    return document


def write_json(
    analysis: Analysis, stream: TextIO, *, formula: FormulaSection | None = None
) -> None:
    """The report as JSON (with a `formula` object when one is given)."""
    document = analysis_json(analysis)
    if formula is not None:
        document["formula"] = {
            "text": formula.text,
            "python": formula.python,
            "exact": formula.exact,
            "notes": list(formula.notes),
        }
    json.dump(document, stream, indent=2, sort_keys=True)
    stream.write("\n")


def comparison_notes(analyses: Sequence[Analysis]) -> list[str]:
    """What a reader of a comparison must know: workloads or models that differ."""
    notes = []
    if not same_workload(analyses):
        sizes = ", ".join(
            f"{w.batch} x {w.seq} in {a.graph.program.source_path}"
            for a in analyses
            for w in [a.graph.program.workload]
        )
        notes.append(
            f"workloads differ (batch x seq: {sizes}): the times are for different numbers of"
            " tokens, so there is no speedup column; compare tokens/s"
        )
    models = sorted({a.graph.program.model.name for a in analyses})
    if len(models) > 1:
        notes.append(f"models differ ({', '.join(models)}): a token costs different work in each")
    training = [a.graph.program.source_path for a in analyses if a.training is not None]
    if training:
        notes.append(
            f"training ({', '.join(training)}): time is one iteration (the critical path:"
            " forward, backward and optimizer of the global batch), GPUs count every"
            " data-parallel replica, and MFU counts 3 x the forward's model FLOPs"
        )
    return notes


def _gpu_count(analysis: Analysis) -> int:
    """The configuration's GPUs: the layout's, times dp for training."""
    t = analysis.training
    return t.gpus if t is not None else len(analysis.gpus)


def same_workload(analyses: Sequence[Analysis]) -> bool:
    """Whether every configuration processes the same tokens (batch and seq)."""
    return (
        len({(a.graph.program.workload.batch, a.graph.program.workload.seq) for a in analyses}) == 1
    )


def _speedups(analyses: Sequence[Analysis]) -> list[float | None] | None:
    """Each time ratio over the first file, or None when the workloads differ (the ratio of
    times for different numbers of tokens is no speedup) or there is only one file."""
    if len(analyses) < 2 or not same_workload(analyses):
        return None
    base = analyses[0].total_s
    return [base / a.total_s if a.total_s else None for a in analyses]


def _comparison_rows(analyses: Sequence[Analysis]) -> tuple[list[str], list[list[str]]]:
    """The header and one row of cells per configuration."""
    speedups = _speedups(analyses)
    header = ["config", "time", "tokens/s", "tokens/s/GPU", "GPUs"]
    header += ["speedup"] if speedups is not None else []
    header += ["bottleneck", "MFU", "HFU", "params", "active", "model FLOPs", "executed FLOPs"]
    header += ["max memory", "KV/token"]
    rows = []
    for index, a in enumerate(analyses):
        family, share = a.bottleneck()
        row = [
            a.graph.program.source_path,
            _seconds(a.total_s),
            _rate(a.tokens_per_s),
            _rate(a.tokens_per_s_per_gpu),
            str(_gpu_count(a)),
        ]
        if speedups is not None:
            ratio = speedups[index]
            row.append("-" if ratio is None else f"{ratio:.2f}x")
        row += [
            f"{family} {share:.0%}",
            f"{a.mfu:.1%}",
            f"{a.hfu:.1%}",
            _count(a.params),
            _count(a.active_params),
            f"{a.model_flops:.3e}",
            f"{a.executed_flops:.3e}",
            _bytes(_peak_memory(a)),
            _kv(a.kv_cache_bytes_per_token),
        ]
        rows.append(row)
    return header, rows


def _peak_memory(analysis: Analysis) -> int:
    return max((g.memory_bytes for g in analysis.gpus), default=0)


def write_comparison(analyses: Sequence[Analysis], stream: TextIO, *, fmt: str = "text") -> None:
    """Configurations side by side (`fmt`: text, markdown or json); notes under the table."""
    if fmt == "json":
        json.dump(comparison_json(analyses), stream, indent=2, sort_keys=True)
        stream.write("\n")
        return
    header, rows = _comparison_rows(analyses)
    left = {0, header.index("bottleneck")}
    notes = comparison_notes(analyses)
    if fmt == "markdown":
        rule = "|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|"
        lines = ["| " + " | ".join(row) + " |" for row in [header, *rows]]
        lines.insert(1, rule)
        if notes:
            lines += ["", *(f"> note: {note}" for note in notes)]
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i in left else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [header, *rows]
        ]
        lines += [line for note in notes for line in _wrap(f"note: {note}")]
    stream.write("\n".join(lines) + "\n")


def comparison_json(analyses: Sequence[Analysis]) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (schema in docs/analyze.md)."""
    speedups = _speedups(analyses)
    configs = []
    for index, a in enumerate(analyses):
        family, share = a.bottleneck()
        workload = a.graph.program.workload
        configs.append(
            {
                "source": a.graph.program.source_path,
                "model": a.graph.program.model.name,
                "cost_model": a.cost_model,
                "batch": workload.batch,
                "seq": workload.seq,
                "tokens": a.tokens,
                "gpus": _gpu_count(a),
                "time_s": a.total_s,
                "tokens_per_s": a.tokens_per_s,
                "tokens_per_s_per_gpu": a.tokens_per_s_per_gpu,
                "speedup": None if speedups is None else speedups[index],
                "bottleneck": {"family": family, "share": share},
                "by_kind": _json_split(a.by_kind),
                "by_block": _json_split(a.by_block),
                "mfu": a.mfu,
                "hfu": a.hfu,
                "params": a.params,
                "active_params": a.active_params,
                "model_flops": a.model_flops,
                "executed_flops": a.executed_flops,
                "kv_cache_bytes_per_token": a.kv_cache_bytes_per_token,
                "max_memory_bytes": _peak_memory(a),
                "cost_extrapolation": _json_reach(a),
                "notes": list(a.notes),
                "warnings": list(a.warnings),
            }
        )
        if a.training is not None:  # prefill rows keep their keys exactly
            configs[-1]["training"] = {"iteration_s": a.training.iteration_s, "mfu": a.mfu}
    return {
        "format": "dagc-comparison",
        "version": JSON_VERSION,
        "same_workload": same_workload(analyses),
        "configs": configs,
        "notes": comparison_notes(analyses),
    }


def _sweep_cells(row: SweepRow) -> list[str]:
    tpot = "-" if row.tpot_s is None else f"{row.tpot_s * 1e3:.3f}"
    return [
        str(row.batch),
        _maybe_seconds(row.ttft_s),
        tpot,
        _rate(row.tokens_per_s),
        _rate(row.tokens_per_s_per_gpu),
        "yes" if row.fits else "no",
    ]


SWEEP_HEADER = ["batch", "TTFT", "TPOT ms", "tokens/s", "tokens/s/GPU", "fits"]


def write_sweep(sweep: Sweep, stream: TextIO, *, fmt: str = "text") -> None:
    """A batch sweep (`dagc analyze --batch-sweep`) as a table: text, markdown or json."""
    if fmt == "json":
        json.dump(sweep_json(sweep), stream, indent=2, sort_keys=True)
        stream.write("\n")
        return
    rows = [SWEEP_HEADER, *(_sweep_cells(row) for row in sweep.rows)]
    title = f"dagc analyze --batch-sweep: {sweep.source} ({sweep.mode.value}; {sweep.cost_model})"
    if fmt == "markdown":
        lines = [f"**{title}**", ""]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.insert(3, "|" + "|".join("---:" for _ in SWEEP_HEADER[:-1]) + "|---|")
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(len(SWEEP_HEADER))]
        lines = [line for line in _wrap(title)]
        lines += [
            "  ".join(
                cell.ljust(width) if i == len(row) - 1 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
    stream.write("\n".join(lines) + "\n")


def sweep_json(sweep: Sweep) -> dict[str, Any]:
    """The batch sweep as a JSON-ready dict (schema in docs/analyze.md)."""
    return {
        "format": "dagc-batch-sweep",
        "version": JSON_VERSION,
        "source": sweep.source,
        "mode": sweep.mode.value,
        "cost_model": sweep.cost_model,
        "rows": [
            {
                "batch": row.batch,
                "ttft_s": row.ttft_s,
                "tpot_s": row.tpot_s,
                "tokens_per_s": row.tokens_per_s,
                "tokens_per_s_per_gpu": row.tokens_per_s_per_gpu,
                "fits": row.fits,
            }
            for row in sweep.rows
        ],
        "skipped": [{"batch": batch, "reason": reason} for batch, reason in sweep.skipped],
    }
