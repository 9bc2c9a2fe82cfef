"""`dagc render`: a configuration as a graphviz picture, in one of three views.

- device: every operation, one cluster per GPU inside one cluster per device group; the
  products of one node (`qkv` .q/.k/.v, an expert's up/act/down) are merged into one node;
- block: one node per block, GPU, layer and micro-batch with its summed time;
- logical: the layer ranges and blocks of the logical IR, before expansion.

Collectives and transfers are drawn once, in the cluster of the group that holds all their
participants (else outside every group), and joined to each participant by edges. Node shape
and fill say the kind of work; the critical path has thick vermillion outlines and edges.
The DOT text is deterministic: nodes, clusters and edges are emitted in sorted order.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dagc.backends.atomic import temporary_beside, write_text_atomically
from dagc.backends.schedule import (
    KINDS,
    Filters,
    IntArray,
    Schedule,
    format_span,
    input_error,
    write_error,
)
from dagc.ir.device import DATA_EDGE
from dagc.ir.logical import Program, format_gpus

VIEWS = ("device", "block", "logical")
FORMATS = ("svg", "png", "pdf", "dot")
DEFAULT_MAX_NODES = 2000
DOT_TIMEOUT_S = 600
PNG_DPI = 96

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/).
FILL = {
    "matmul": "#56B4E9",  # sky blue
    "elementwise": "#F0E442",  # yellow
    "collective": "#CC79A7",  # reddish purple
    "transfer": "#7FCEB9",  # bluish green (#009E73) at half strength, for black text
}
SHAPE = {"matmul": "box", "elementwise": "ellipse", "collective": "hexagon", "transfer": "cds"}
MARGIN = {"transfer": "0.2,0.12"}  # the arrow shape needs room for three lines
CRITICAL = "#D55E00"  # vermillion
EDGE = "#6E6E6E"
FONT = "Helvetica"


@dataclass(frozen=True)
class Node:
    """One picture node: a DOT id, label lines, kind and where it is drawn.

    `order` sorts nodes in time: (earliest start in seconds, first operation id). On one
    GPU that is program order, which operation ids are not (ping-pong runs a layer's
    micro-batches before the next layer)."""

    id: str
    lines: tuple[str, ...]
    kind: str
    cluster: tuple[str, ...]
    critical: bool
    order: tuple[float, int]


@dataclass(frozen=True)
class Edge:
    """A picture edge; `data` is False when it only carries program order; `back` labels
    an edge drawn against the flow (the logical view's "next layer")."""

    src: str
    dst: str
    data: bool = True
    critical: bool = False
    back: str = ""


@dataclass(frozen=True)
class View:
    """What one picture shows, before it becomes DOT text."""

    name: str
    title: tuple[str, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    cluster_labels: dict[tuple[str, ...], str] = field(default_factory=dict)
    rankdir: str = "TB"


# -- grouping operations into picture nodes -------------------------------------------------


@dataclass(frozen=True)
class Grouping:
    """The picture node of every template operation; micro-batch j's copy of template
    node k is node j·size + k. `names[k]` is the (DOT id stem, label lines) of template
    node k when the grouping names its nodes itself (the block view's runs)."""

    key: IntArray
    size: int
    names: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def nodes_of(self, ops: IntArray) -> IntArray:
        micro, template = np.divmod(ops, len(self.key))
        return micro * self.size + self.key[template]


def _intern(keys: Sequence[object]) -> Grouping:
    ids: dict[object, int] = {}
    key = np.asarray([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
    return Grouping(key, len(ids))


def device_grouping(schedule: Schedule) -> Grouping:
    """One node per node name: the products of `qkv_l0_gpu3` share one."""
    graph = schedule.graph
    return _intern([graph.node_name(t) for t in range(graph.template_size)])


def block_grouping(schedule: Schedule) -> Grouping:
    """One node per run of a GPU's operations between two of its collectives or transfers
    (per micro-batch); every collective or transfer is a node of its own.

    Cutting at the GPU's collectives, not at block boundaries, keeps every drawn edge a
    path of the device DAG: an MoE block's router, experts and residual add, which its
    dispatch and combine separate, become three nodes, and the residual add after an
    all-reduce joins the next block's node instead of pretending to precede the
    all-reduce. The template is in execution order on every GPU (edges inside a
    micro-batch go from lower to higher template index), so counting a GPU's joint
    operations while sweeping the template numbers its runs."""
    graph = schedule.graph
    seen: dict[int, int] = defaultdict(int)  # GPU -> joint operations met so far
    keys: list[object] = []
    for t in range(graph.template_size):
        gpus = graph.gpus_of(t)
        if graph.steps[int(graph.template_step[t])].joint:
            keys.append(("joint", t))
            for gpu in gpus:
                seen[gpu] += 1
        else:
            keys.append((gpus[0], seen[gpus[0]]))
    grouping = _intern(keys)
    return replace(grouping, names=_run_names(schedule, grouping))


def _run_names(schedule: Schedule, grouping: Grouping) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(DOT id stem, label lines) of every template node of the block grouping: a run is
    named after the block that takes most of its time (`moe l23 gpu0`), numbered when
    that block is cut into several runs (`moe l23 gpu0 (2/3)`: its experts), and says
    which other blocks' operations it holds (`+ part of attention l0`)."""
    graph = schedule.graph
    members: dict[int, list[int]] = defaultdict(list)
    for t in range(graph.template_size):
        members[int(grouping.key[t])].append(t)
    main: dict[int, int] = {}
    for node, ts in members.items():
        seconds: dict[int, float] = defaultdict(float)
        for t in ts:
            seconds[schedule.block_of(t)] += float(schedule.costs[t])
        main[node] = min(seconds, key=lambda b: (-seconds[b], b))
    parts: dict[tuple[int, int], list[int]] = defaultdict(list)  # (block, gpu) -> its runs
    for node, ts in sorted(members.items()):
        if not graph.step_of(ts[0]).joint:
            parts[(main[node], graph.gpus_of(ts[0])[0])].append(node)
    names: list[tuple[str, tuple[str, ...]]] = []
    for node in range(grouping.size):
        ts = members[node]
        if graph.step_of(ts[0]).joint:
            names.append((graph.node_name(ts[0]), ()))
            continue
        names.append(_run_name(schedule, node, ts, main[node], parts))
    return tuple(names)


def _run_name(
    schedule: Schedule,
    node: int,
    ts: list[int],
    main: int,
    parts: dict[tuple[int, int], list[int]],
) -> tuple[str, tuple[str, ...]]:
    gpu = schedule.graph.gpus_of(ts[0])[0]
    block = schedule.blocks[main]
    ident = f"b{main}_{block.kind}_l{block.layer}_gpu{gpu}"
    name = f"{block.kind} l{block.layer} gpu{gpu}"
    runs = parts[(main, gpu)]
    if len(runs) > 1:
        ident += f"_p{runs.index(node) + 1}"
        name += f" ({runs.index(node) + 1}/{len(runs)})"
    extra = [_part_of(schedule, [t for t in ts if schedule.block_of(t) == b], b)
             for b in sorted({schedule.block_of(t) for t in ts} - {main})]  # fmt: skip
    return ident, (name, *extra)


def _part_of(schedule: Schedule, ts: list[int], index: int) -> str:
    """`+ res1 of attention l0`: another block's operations in a run (named when few)."""
    block = schedule.blocks[index]
    graph = schedule.graph
    stems = list(dict.fromkeys(graph.node_name(t).split(f"_l{block.layer}")[0] for t in ts))
    what = " ".join(stems) if len(stems) <= 2 else "part"
    return f"+ {what} of {block.kind} l{block.layer}"


def grouping_for(schedule: Schedule, view: str) -> Grouping:
    return device_grouping(schedule) if view == "device" else block_grouping(schedule)


def count_nodes(grouping: Grouping, ops: IntArray) -> int:
    """How many picture nodes the operations `ops` make."""
    return int(np.unique(grouping.nodes_of(ops)).size)


# -- labels ---------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A duration with three significant digits: `38.1 ms`, `2.12 s`, `0 s`."""
    if seconds == 0:
        return "0 s"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale or unit == "us":
            return f"{seconds / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def _terms_text(schedule: Schedule, members: IntArray) -> list[str]:
    """`3 × Get_Time(...)` for identical products, else one line per distinct term."""
    terms = [schedule.graph.term_of(int(op)) for op in members]
    distinct = list(dict.fromkeys(terms))
    if len(distinct) == 1:
        prefix = f"{len(terms)} × " if len(terms) > 1 else ""
        return [prefix + distinct[0].pretty()]
    return [term.pretty() for term in terms]


def _device_label(schedule: Schedule, grouping: Grouping, members: IntArray) -> tuple[str, ...]:
    graph = schedule.graph
    name = graph.node_name(int(members[0]))
    terms = _terms_text(schedule, members)
    if len(terms) > 1:
        name += f" ({len(terms)} ops)"
    return (name, *terms, duration(float(schedule.costs[members].sum())))


def _block_label(schedule: Schedule, grouping: Grouping, members: IntArray) -> tuple[str, ...]:
    graph = schedule.graph
    op = int(members[0])
    step = graph.step_of(op)
    time = duration(float(schedule.costs[members].sum()))
    if step.joint:
        return (graph.node_name(op), _terms_text(schedule, members)[0], time)
    name, *extra = grouping.names[int(grouping.key[op % graph.template_size])][1]
    if graph.microbatches > 1:
        name += f" mb{graph.split_id(op)[0]}"
    return (name, *extra, time)


def _node_id(schedule: Schedule, grouping: Grouping, members: IntArray) -> str:
    graph = schedule.graph
    op = int(members[0])
    if not grouping.names or graph.step_of(op).joint:
        return graph.node_name(op)
    ident = grouping.names[int(grouping.key[op % graph.template_size])][0]
    return ident + (f"_mb{graph.split_id(op)[0]}" if graph.microbatches > 1 else "")


def _dominant_kind(schedule: Schedule, members: IntArray) -> str:
    """The kind with the largest share of the node's time (the first op's kind on a tie)."""
    size = schedule.graph.template_size
    kinds = [schedule.template_kind[int(op) % size] for op in members]
    seconds: dict[str, float] = defaultdict(float)
    for kind, op in zip(kinds, members, strict=True):
        seconds[kind] += float(schedule.costs[op])
    best = max(seconds.values())
    return next(kind for kind in kinds if seconds[kind] == best)


def _cluster(schedule: Schedule, members: IntArray) -> tuple[str, ...]:
    graph = schedule.graph
    gpus = graph.gpus_of(int(members[0]))
    home = schedule.group_of_gpu
    groups = {home.get(g, "") for g in gpus}
    if graph.step_of(int(members[0])).joint:
        return (groups.pop(),) if len(groups) == 1 else ()
    return (home.get(gpus[0], ""), f"gpu{gpus[0]}")


# -- device and block views -------------------------------------------------------------------


def _groups(grouping: Grouping, ops: IntArray) -> tuple[list[int], list[IntArray]]:
    """The picture nodes the operations `ops` make, ascending, and each one's operations."""
    nodes = grouping.nodes_of(ops)
    order = np.argsort(nodes, kind="stable")
    ids, starts = np.unique(nodes[order], return_index=True)
    return ids.tolist(), np.split(ops[order], starts[1:])


def node_members(schedule: Schedule, view: str, ops: IntArray) -> dict[str, IntArray]:
    """The operations behind every node the device or block view draws, by DOT id (for
    tests that check each drawn edge against the device DAG)."""
    grouping = grouping_for(schedule, view)
    _, groups = _groups(grouping, ops)
    return {_node_id(schedule, grouping, members): members for members in groups}


def operation_view(schedule: Schedule, view: str, ops: IntArray) -> View:
    """The device or block view of the operations `ops`."""
    grouping = grouping_for(schedule, view)
    node_of = np.full(schedule.graph.num_ops, -1, dtype=np.int64)
    node_of[ops] = grouping.nodes_of(ops)
    ids, groups = _groups(grouping, ops)
    label = _device_label if view == "device" else _block_label
    nodes = {
        int(node): Node(
            id=_node_id(schedule, grouping, members),
            lines=label(schedule, grouping, members),
            kind=_dominant_kind(schedule, members),
            cluster=_cluster(schedule, members),
            critical=bool(schedule.critical[members].any()),
            order=(float(schedule.path.start[members].min()), int(members[0])),
        )
        for node, members in zip(ids, groups, strict=True)
    }
    edges = _contracted_edges(schedule, node_of)
    if view == "block":
        edges = _reduce(edges)
    critical = _critical_pairs(schedule, node_of)
    return View(
        name=view,
        title=(),
        nodes=tuple(sorted(nodes.values(), key=lambda n: n.order)),
        edges=_edges(nodes, edges, critical),
        cluster_labels=_cluster_labels(schedule),
    )


def _contracted_edges(schedule: Schedule, node_of: IntArray) -> dict[tuple[int, int], bool]:
    """(node, node) -> carries data, for the device edges between two drawn nodes."""
    graph = schedule.graph
    a, b = node_of[graph.src], node_of[graph.dst]
    keep = (a >= 0) & (b >= 0) & (a != b)
    pairs: dict[tuple[int, int], bool] = {}
    for s, d, k in zip(
        a[keep].tolist(), b[keep].tolist(), graph.edge_kind[keep].tolist(), strict=True
    ):
        pairs[(s, d)] = pairs.get((s, d), False) or k == DATA_EDGE
    return pairs


def _reduce(edges: dict[tuple[int, int], bool]) -> dict[tuple[int, int], bool]:
    """Block view: edges implied by longer paths go (each stays a path of the picture)."""
    import networkx as nx

    digraph = nx.DiGraph(list(edges))
    if not nx.is_directed_acyclic_graph(digraph):
        return edges
    reduced = nx.transitive_reduction(digraph)
    return {pair: data for pair, data in edges.items() if reduced.has_edge(*pair)}


def _critical_pairs(schedule: Schedule, node_of: IntArray) -> list[tuple[int, int]]:
    """Consecutive drawn nodes along the critical path (a node is entered only once)."""
    sequence: list[int] = []
    seen: set[int] = set()
    for op in schedule.path.ops:
        node = int(node_of[op])
        if node >= 0 and node not in seen:
            sequence.append(node)
            seen.add(node)
    return list(itertools.pairwise(sequence))


def _edges(
    nodes: dict[int, Node],
    pairs: dict[tuple[int, int], bool],
    critical: list[tuple[int, int]],
) -> tuple[Edge, ...]:
    hot = set(critical)
    every = {**pairs, **{pair: pairs.get(pair, True) for pair in hot}}
    edges = [Edge(nodes[s].id, nodes[d].id, data, (s, d) in hot) for (s, d), data in every.items()]
    rank = {node.id: node.order for node in nodes.values()}
    return tuple(sorted(edges, key=lambda e: (rank[e.src], rank[e.dst])))


def _cluster_labels(schedule: Schedule) -> dict[tuple[str, ...], str]:
    labels: dict[tuple[str, ...], str] = {}
    for group in schedule.graph.program.groups:
        labels[(group.name,)] = f"{group.name}  {format_gpus(group.gpus)}"
    for gpu, home in schedule.group_of_gpu.items():
        labels[(home, f"gpu{gpu}")] = f"gpu{gpu}"
    return labels


# -- logical view ---------------------------------------------------------------------------


def logical_view(schedule: Schedule) -> View:
    """Layer ranges and their blocks as the file places them, with their critical time."""
    program = schedule.graph.program
    where = _logical_index(schedule)
    size = schedule.graph.template_size
    critical: dict[int, float] = defaultdict(float)
    for op in schedule.path.ops:
        critical[where[int(schedule.graph.template_step[op % size])]] += float(schedule.costs[op])
    compute = _compute_kinds(schedule, where)
    nodes = [
        _logical_node(schedule, r, b, index, critical[index], compute.get(index, "matmul"))
        for index, (r, b) in enumerate(_logical_blocks(program))
    ]
    labels: dict[tuple[str, ...], str] = {
        (g.name,): f"{g.name}  {format_gpus(g.gpus)}" for g in program.groups
    }
    edges = _logical_edges(schedule, nodes, where)
    return View("logical", (), tuple(nodes), edges, labels, rankdir="LR")


def _logical_node(
    schedule: Schedule, r: int, b: int, index: int, critical_s: float, kind: str
) -> Node:
    layer_range = schedule.graph.program.ranges[r]
    block = layer_range.blocks[b]
    degree = f" {block.kind.degree_key}={block.degree}" if block.kind.degree_key else ""
    lines = [
        f"layers {format_span((layer_range.first, layer_range.last))}",
        f"{block.kind.value}{degree}{' fused_qkv' if block.fused_qkv else ''}",
    ]
    if critical_s:
        share = critical_s / (schedule.total_s or 1.0)
        lines.append(f"critical {duration(critical_s)} ({share:.0%})")
    ident = f"r{r}_{block.kind.value}_{b}"
    return Node(ident, tuple(lines), kind, (block.group,), bool(critical_s), (index, index))


def _compute_kinds(schedule: Schedule, where: list[int]) -> dict[int, str]:
    """matmul or elementwise: which takes more of a logical block's compute time."""
    graph = schedule.graph
    seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for t in range(graph.template_size):
        kind = schedule.template_kind[t]
        if kind in ("matmul", "elementwise"):
            seconds[where[int(graph.template_step[t])]][kind] += float(schedule.costs[t])
    return {
        index: max(("matmul", "elementwise"), key=lambda k: by_kind.get(k, 0.0))
        for index, by_kind in seconds.items()
    }


def _logical_blocks(program: Program) -> list[tuple[int, int]]:
    """(range, block) index pairs in file order."""
    ranges = program.ranges
    return [(r, b) for r, layer_range in enumerate(ranges) for b in range(len(layer_range.blocks))]


def _logical_index(schedule: Schedule) -> list[int]:
    """For every step, the index of the logical (range, block) it was expanded from."""
    program = schedule.graph.program
    position = {pair: i for i, pair in enumerate(_logical_blocks(program))}
    of_block: list[int] = []
    for block in schedule.blocks:
        found = 0
        for r, layer_range in enumerate(program.ranges):
            if layer_range.first <= block.layer <= layer_range.last:
                kinds = [(b.kind.value, b.group) for b in layer_range.blocks]
                key = (block.kind, block.group)
                found = position[(r, kinds.index(key) if key in kinds else 0)]
        of_block.append(found)
    return [of_block[int(b)] for b in schedule.step_block]


def _logical_edges(schedule: Schedule, nodes: list[Node], where: list[int]) -> tuple[Edge, ...]:
    """Execution order between logical blocks; critical where the path goes that way."""
    steps = _runs(where)
    pairs = dict.fromkeys(itertools.pairwise(steps))
    size = schedule.graph.template_size
    path = _runs([where[int(schedule.graph.template_step[op % size])] for op in schedule.path.ops])
    hot = set(itertools.pairwise(path))
    return tuple(
        Edge(nodes[s].id, nodes[d].id, True, (s, d) in hot, "next layer" if d <= s else "")
        for s, d in sorted(pairs)
    )


def _runs(sequence: list[int]) -> list[int]:
    """`sequence` without consecutive repeats."""
    return [x for i, x in enumerate(sequence) if i == 0 or sequence[i - 1] != x]


# -- the size cap -----------------------------------------------------------------------------


def plan(
    schedule: Schedule, view: str, filters: Filters, max_nodes: int
) -> tuple[str, Filters, IntArray, str | None]:
    """The view, filters and operations to draw, collapsed when there would be more than
    `max_nodes` nodes: the block view, then fewer layers, then micro-batch 0, then fewer
    GPUs. The last item says what was collapsed (None when nothing was)."""
    if view == "logical" and filters.describe():
        raise input_error(
            "the logical view draws the whole file: it takes no --layers, --gpus or --microbatch",
            "filter the device or block view instead, e.g. --view block --layers 0..1",
        )
    ops = schedule.select(filters)
    if view == "logical":
        return view, filters, ops, None
    count = count_nodes(grouping_for(schedule, view), ops)
    if count <= max_nodes:
        return view, filters, ops, None
    chosen, narrowed = _collapse(schedule, view, filters, max_nodes)
    ops = schedule.select(narrowed)
    drawn = count_nodes(grouping_for(schedule, chosen), ops)
    what = narrowed.describe()
    note = (
        f"the {view} view would have {count:,} nodes, more than --max-nodes {max_nodes:,};"
        f" drawing the {chosen} view{' of ' + what if what else ''} ({drawn:,} nodes) instead"
        " (raise --max-nodes or choose with --view, --layers, --gpus, --microbatch)"
    )
    return chosen, narrowed, ops, note


def _collapse(
    schedule: Schedule, view: str, filters: Filters, max_nodes: int
) -> tuple[str, Filters]:
    graph = schedule.graph
    grouping = block_grouping(schedule)

    def fits(candidate: Filters) -> bool:
        return count_nodes(grouping, schedule.select(candidate)) <= max_nodes

    if fits(filters):
        return "block", filters
    layers = filters.layers or (0, graph.program.model.layers - 1)
    gpus = filters.gpus or (graph.gpus()[0], graph.gpus()[-1])
    first_mb = (filters.microbatches or (0, 0))[0]
    for candidate in (filters, replace(filters, microbatches=(first_mb, first_mb))):
        found = _widest(candidate, "layers", layers, fits)
        if found is not None:
            return "block", found
    one = replace(filters, microbatches=(first_mb, first_mb), layers=(layers[0], layers[0]))
    return "block", _widest(one, "gpus", gpus, fits) or replace(one, gpus=(gpus[0], gpus[0]))


def _widest(
    filters: Filters, name: str, span: tuple[int, int], fits: Callable[[Filters], bool]
) -> Filters | None:
    """The filters with `name` narrowed to the longest prefix of `span` that fits."""
    low, high, best = span[0], span[1], None
    while low <= high:
        middle = (low + high) // 2
        candidate = replace(filters, **{name: (span[0], middle)})
        if fits(candidate):
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best


# -- DOT text -------------------------------------------------------------------------------


def title_lines(schedule: Schedule, view: str, filters: Filters) -> tuple[str, ...]:
    """The configuration, the view and the total time, as the picture's title."""
    program = schedule.graph.program
    m = program.workload.microbatches
    gpus = len(schedule.graph.gpus())
    groups = ", ".join(f"{g.name} {format_gpus(g.gpus)}" for g in program.groups)
    shown = filters.describe()
    return (
        f"{program.model.name}: {gpus} GPUs ({schedule.gpu_preset}; {groups}),"
        f" {m} micro-batch{'es' if m > 1 else ''}",
        f"{view} view{' of ' + shown if shown else ''}; critical path"
        f" {duration(schedule.total_s)} under {schedule.cost_model}",
    )


def dot_source(view: View) -> str:
    """The view as deterministic DOT text."""
    import graphviz

    dot = graphviz.Digraph(
        "dagc",
        graph_attr={
            "label": "\\n".join(view.title) + "\\n ",
            "labelloc": "t",
            "fontname": FONT,
            "fontsize": "22",
            "rankdir": view.rankdir,
            # Rank globally (not cluster by cluster): a GPU's edges leave its cluster for
            # every collective, and cluster-wise ranking fails on such graphs (init_rank).
            "newrank": "true",
            "nodesep": "0.18",
            "ranksep": "0.35",
            "compound": "true",
        },
        node_attr={"fontname": FONT, "fontsize": "11", "style": "filled", "penwidth": "1"},
        edge_attr={"color": EDGE, "arrowsize": "0.6"},
    )
    _add_clusters(dot, view)
    for edge in view.edges:
        dot.edge(edge.src, edge.dst, **_edge_attributes(edge))
    _add_legend(dot, view)
    return str(dot.source)


def _add_clusters(dot: object, view: View) -> None:
    """Nodes inside nested clusters: device group, then GPU; root nodes last."""
    by_cluster: dict[tuple[str, ...], list[Node]] = defaultdict(list)
    for node in view.nodes:
        by_cluster[node.cluster].append(node)
    groups = sorted({c[0] for c in by_cluster if c}, key=lambda g: _first(by_cluster, g))
    for group in groups:
        with dot.subgraph(name=f"cluster_{group}") as outer:  # type: ignore[attr-defined]
            _style_cluster(outer, view.cluster_labels.get((group,), group), "#F4F4F4")
            gpus = sorted((c for c in by_cluster if len(c) == 2 and c[0] == group),
                          key=lambda c: int(c[1][3:]))  # fmt: skip
            for gpu in gpus:
                with outer.subgraph(name=f"cluster_{group}_{gpu[1]}") as inner:
                    _style_cluster(inner, view.cluster_labels.get(gpu, gpu[1]), "#FFFFFF")
                    _add_nodes(inner, by_cluster[gpu], chain=True)
            _anchor(outer, group, [min(by_cluster[gpu], key=lambda n: n.order) for gpu in gpus])
            _add_nodes(outer, by_cluster.get((group,), []))
    _add_nodes(dot, by_cluster.get((), []))


def _anchor(cluster: object, group: str, firsts: list[Node]) -> None:
    """An invisible node above a group's GPU columns that keeps them in GPU order (dot's
    crossing minimisation otherwise may rotate symmetric columns)."""
    if len(firsts) < 2:
        return
    anchor = f"anchor_{group}"
    cluster.node(anchor, label="", shape="point", style="invis", width="0", height="0")  # type: ignore[attr-defined]
    for node in firsts:
        cluster.edge(anchor, node.id, style="invis")  # type: ignore[attr-defined]


def _first(by_cluster: dict[tuple[str, ...], list[Node]], group: str) -> tuple[float, int]:
    return min(n.order for c, nodes in by_cluster.items() if c and c[0] == group for n in nodes)


def _style_cluster(cluster: object, label: str, fill: str) -> None:
    cluster.attr(  # type: ignore[attr-defined]
        label=label, style="rounded,filled", fillcolor=fill, color="#9A9A9A",
        fontname=FONT, fontsize="14", labeljust="l",
    )  # fmt: skip


def _add_nodes(dot: object, nodes: list[Node], *, chain: bool = False) -> None:
    """The nodes in order. With `chain` (a GPU's cluster), invisible heavy edges join them
    in program order, which keeps the GPU's column straight. (A minlen above 1 on these
    edges makes dot 2.43 fail with "trouble in init_rank" on large pictures.)"""
    ordered = sorted(nodes, key=lambda n: n.order)
    for node in ordered:
        dot.node(node.id, **_node_attributes(node))  # type: ignore[attr-defined]
    if chain:
        for a, b in itertools.pairwise(ordered):
            dot.edge(a.id, b.id, style="invis", weight="10")  # type: ignore[attr-defined]


def _node_attributes(node: Node) -> dict[str, str]:
    attributes = {
        "label": "\\n".join(node.lines),
        "shape": SHAPE[node.kind],
        "fillcolor": FILL[node.kind],
    }
    if node.kind in MARGIN:
        attributes["margin"] = MARGIN[node.kind]
    if node.critical:
        attributes.update(color=CRITICAL, penwidth="3.5")
    return attributes


def _edge_attributes(edge: Edge) -> dict[str, str]:
    attributes: dict[str, str] = {}
    if not edge.data:
        attributes.update(style="dashed", color="#AAAAAA")
    if edge.back:
        attributes.update(xlabel=edge.back, style="dashed", constraint="false", fontname=FONT,
                          fontsize="10", tailport="s", headport="s")  # fmt: skip
    if edge.critical:
        attributes.update(color=CRITICAL, penwidth="3.5", arrowsize="0.8")
    return attributes


def _add_legend(dot: object, view: View) -> None:
    """The kinds drawn (shape and fill), the critical path and program-order edges."""
    with dot.subgraph(name="cluster_legend") as legend:  # type: ignore[attr-defined]
        _style_cluster(legend, "legend", "#FFFFFF")
        shown = [kind for kind in KINDS if any(node.kind == kind for node in view.nodes)]
        items = [f"legend_{kind}" for kind in shown]
        for kind, name in zip(shown, items, strict=True):
            legend.node(name, label=kind, shape=SHAPE[kind], fillcolor=FILL[kind])
        samples = [("critical", "critical path", _edge_attributes(Edge("", "", critical=True)))]
        if any(not edge.data for edge in view.edges):
            samples.append(("order", "program order only", _edge_attributes(Edge("", "", False))))
        for key, text, style in samples:
            outline = {"color": CRITICAL, "penwidth": "3.5"} if key == "critical" else {}
            legend.node(f"legend_{key}_from", label="", shape="point", width="0.06")
            legend.node(f"legend_{key}", label=text, shape="box", fillcolor="#FFFFFF", **outline)
            legend.edge(f"legend_{key}_from", f"legend_{key}", **style)
            items += [f"legend_{key}_from", f"legend_{key}"]
        for a, b in itertools.pairwise(items):
            if not (a.endswith("_from") and b == a.removesuffix("_from")):
                legend.edge(a, b, style="invis")


# -- writing --------------------------------------------------------------------------------


def build_view(schedule: Schedule, view: str, filters: Filters, ops: IntArray) -> View:
    """The titled view of the selected operations."""
    built = logical_view(schedule) if view == "logical" else operation_view(schedule, view, ops)
    return replace(built, title=title_lines(schedule, view, filters))


def render(
    schedule: Schedule,
    output: str | os.PathLike[str],
    *,
    view: str = "device",
    filters: Filters | None = None,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> list[str]:
    """Draw `schedule` to `output` (.svg, .png, .pdf or .dot); returns notes for stderr."""
    chosen, narrowed, ops, note = plan(schedule, view, filters or Filters(), max_nodes)
    source = dot_source(build_view(schedule, chosen, narrowed, ops))
    write_picture(source, output)
    return [note] if note else []


def write_picture(source: str, output: str | os.PathLike[str]) -> None:
    """Write DOT text, or the picture `dot` draws from it, atomically to `output`."""
    fmt = Path(output).suffix.lower().lstrip(".")
    try:
        if fmt == "dot":
            write_text_atomically(output, lambda stream: stream.write(source))
        else:
            run_dot(source, fmt, output)
    except OSError as error:
        raise write_error(output, error) from None


def find_dot(fmt: str = "png") -> str:
    """The path of graphviz's `dot` program; a diagnostic with the install hint if absent."""
    found = shutil.which("dot")
    if found is None:
        raise input_error(
            f"graphviz's `dot` program is needed to draw .{fmt} pictures and is not installed",
            "install graphviz (`apt-get install graphviz` on Debian/Ubuntu, `brew install"
            " graphviz` on macOS), or write the DOT text with `-o picture.dot`",
        )
    return found


def run_dot(source: str, fmt: str, output: str | os.PathLike[str]) -> None:
    """Run `dot -T<fmt>` into a temporary file beside `output`, then rename it over it."""
    program = find_dot(fmt)
    dpi = [f"-Gdpi={PNG_DPI}"] if fmt == "png" else []
    with temporary_beside(output) as temporary:
        command = [program, f"-T{fmt}", *dpi, "-o", str(temporary)]
        try:
            done = subprocess.run(
                command, input=source.encode(), capture_output=True, timeout=DOT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise input_error(
                f"graphviz's dot took more than {DOT_TIMEOUT_S} s",
                "draw less: --view block, --layers, --gpus or --microbatch, or a lower --max-nodes",
            ) from None
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            raise input_error(
                f"graphviz's dot failed: {detail[-1] if detail else done.returncode}",
                "try a smaller picture: --view block, --layers, --gpus or --microbatch",
            )
