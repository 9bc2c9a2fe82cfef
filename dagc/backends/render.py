"""`dagc render`: a configuration as a graphviz picture, in one of three views.

- device: every operation, one cluster per GPU inside one cluster per device group; the
  products of one node (`qkv` .q/.k/.v, an expert's up/act/down) are merged into one node;
- block: one node per run of a GPU's work between two of its collectives or transfers
  (a block, or a part of one), per micro-batch, with its summed time;
- logical: the layer ranges and blocks of the logical IR, before expansion.

Collectives and transfers are drawn once, in the cluster of the group that holds all their
participants (else outside every group), and joined to each participant by edges. Node shape
and fill say the kind of work; the critical path has thick vermillion outlines and edges.
The DOT text is deterministic: nodes, clusters and edges are emitted in sorted order.
A picture too large to read (plan) becomes a representative slice, with a note.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dagc.backends.grouping import Grouping, count_nodes, grouping_for
from dagc.backends.schedule import Filters, IntArray, Schedule, format_set, format_span
from dagc.backends.style import CRITICAL, KINDS
from dagc.diagnostics import option_error as input_error
from dagc.ir.device import DATA_EDGE
from dagc.ir.logical import Program, format_gpus
from dagc.ir.terms import OpKind
from dagc.outputs import temporary_beside, write_error, write_text_atomically

VIEWS = ("device", "block", "logical")
FORMATS = ("svg", "png", "pdf", "dot")
DEFAULT_MAX_NODES = 2000
MAX_PX = 4000  # the long side of a picture drawn without --all, in pixels at PNG_DPI
ESTIMATE_PX = 3600  # what estimate_px may give: it is off by up to a tenth
DOT_TIMEOUT_S = 600
PNG_DPI = 96

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/).
FILL = {
    OpKind.MATMUL: "#56B4E9",  # sky blue
    OpKind.ELEMENTWISE: "#F0E442",  # yellow
    OpKind.COLLECTIVE: "#CC79A7",  # reddish purple
    OpKind.TRANSFER: "#7FCEB9",  # bluish green (#009E73) at half strength, for black text
}
SHAPE = {
    OpKind.MATMUL: "box",
    OpKind.ELEMENTWISE: "ellipse",
    OpKind.COLLECTIVE: "hexagon",
    OpKind.TRANSFER: "cds",
}
MARGIN = {OpKind.TRANSFER: "0.2,0.12"}  # the arrow shape needs room for three lines
COMPUTE_KINDS = (OpKind.MATMUL, OpKind.ELEMENTWISE)  # the logical view's fill: the larger
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
    kind: OpKind
    cluster: tuple[str, ...]
    critical: bool
    order: tuple[float, int]


@dataclass(frozen=True)
class Edge:
    """A picture edge; `data` is False when it only carries program order; `back` labels
    an edge drawn against the flow (the logical view's "next layer"); `via` labels a
    critical edge that stands for a stretch of the path the picture leaves out."""

    src: str
    dst: str
    data: bool = True
    critical: bool = False
    back: str = ""
    via: str = ""


@dataclass(frozen=True)
class View:
    """What one picture shows, before it becomes DOT text."""

    name: str
    title: tuple[str, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    cluster_labels: dict[tuple[str, ...], str] = field(default_factory=dict)
    rankdir: str = "TB"


# -- block runs (the grouping itself is in backends/grouping.py) ----------------------------


def _block_ops(schedule: Schedule, members: IntArray, index: int) -> str:
    """`res1 of attention l0`: a block's operations in a run (named when they are few)."""
    block = schedule.blocks[index]
    graph = schedule.graph
    stems = [graph.node_name(int(op)).split(f"_l{block.layer}")[0] for op in members]
    unique = list(dict.fromkeys(stems))
    what = " ".join(unique) if len(unique) <= 2 else "part"
    return f"{what} of {block.kind} l{block.layer}"


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
    _, name, main = grouping.names[int(grouping.key[graph.template_of(op)])]
    owner = np.asarray([schedule.block_of(int(m)) for m in members])
    seconds = {int(b): float(schedule.costs[members[owner == b]].sum()) for b in np.unique(owner)}
    drawn = min(seconds, key=lambda b: (-seconds[b], b))
    if drawn != main:  # the filters keep only part of the run: name what is drawn
        name = f"{_block_ops(schedule, members[owner == drawn], drawn)} gpu{graph.gpus_of(op)[0]}"
    microbatch = graph.microbatch_of(op)
    if graph.microbatches > 1 and microbatch is not None:
        name += f" mb{microbatch}"
    extra = [f"+ {_block_ops(schedule, members[owner == b], b)}" for b in sorted(seconds)
             if b != drawn]  # fmt: skip
    return (name, *extra, time)


def _node_id(schedule: Schedule, grouping: Grouping, members: IntArray) -> str:
    graph = schedule.graph
    op = int(members[0])
    if not grouping.names or graph.step_of(op).joint:
        return graph.node_name(op)
    ident = grouping.names[int(grouping.key[graph.template_of(op)])][0]
    microbatch = graph.microbatch_of(op)
    return ident + (f"_mb{microbatch}" if graph.microbatches > 1 and microbatch is not None else "")


def _dominant_kind(schedule: Schedule, members: IntArray) -> OpKind:
    """The kind with the largest share of the node's time (the first op's kind on a tie)."""
    of = schedule.graph.template_of
    kinds = [schedule.template_kind[of(int(op))] for op in members]
    seconds: dict[OpKind, float] = defaultdict(float)
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


def operation_view(schedule: Schedule, view: str, ops: IntArray, *, reduce: bool = True) -> View:
    """The device or block view of the operations `ops`; `reduce`: leave out the block
    view's edges that longer paths imply (estimate_px needs no such care)."""
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
    if view == "block" and reduce:
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


def _critical_pairs(schedule: Schedule, node_of: IntArray) -> dict[tuple[int, int], int]:
    """Consecutive drawn nodes along the critical path (a node is entered only once), each
    with how many of the path's operations between them are not drawn."""
    sequence: list[int] = []
    skipped: list[int] = [0]
    seen: set[int] = set()
    for op in schedule.path.ops:
        node = int(node_of[op])
        if node < 0:
            skipped[-1] += 1
        elif node not in seen:
            sequence.append(node)
            skipped.append(0)
            seen.add(node)
    return dict(zip(itertools.pairwise(sequence), skipped[1:], strict=False))


def _edges(
    nodes: dict[int, Node],
    pairs: dict[tuple[int, int], bool],
    critical: dict[tuple[int, int], int],
) -> tuple[Edge, ...]:
    every = {**pairs, **{pair: pairs.get(pair, True) for pair in critical}}
    edges = [
        Edge(nodes[s].id, nodes[d].id, data, (s, d) in critical, via=_via(critical.get((s, d))))
        for (s, d), data in every.items()
    ]
    rank = {node.id: node.order for node in nodes.values()}
    return tuple(sorted(edges, key=lambda e: (rank[e.src], rank[e.dst])))


def _via(skipped: int | None) -> str:
    """`via 57 ops not drawn` for a critical edge over operations the filters leave out."""
    if not skipped:
        return ""
    return f"via {skipped:,} op{'s' if skipped > 1 else ''} not drawn"


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
    of = schedule.graph.template_of
    critical: dict[int, float] = defaultdict(float)
    for op in schedule.path.ops:
        critical[where[int(schedule.graph.template_step[of(int(op))])]] += float(schedule.costs[op])
    compute = _compute_kinds(schedule, where)
    nodes = [
        _logical_node(schedule, r, b, index, critical[index], compute.get(index, OpKind.MATMUL))
        for index, (r, b) in enumerate(_logical_blocks(program))
    ]
    labels: dict[tuple[str, ...], str] = {
        (g.name,): f"{g.name}  {format_gpus(g.gpus)}" for g in program.groups
    }
    edges = _logical_edges(schedule, nodes, where)
    return View("logical", (), tuple(nodes), edges, labels, rankdir="LR")


def _logical_node(
    schedule: Schedule, r: int, b: int, index: int, critical_s: float, kind: OpKind
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


def _compute_kinds(schedule: Schedule, where: list[int]) -> dict[int, OpKind]:
    """matmul or elementwise: which takes more of a logical block's compute time."""
    graph = schedule.graph
    seconds: dict[int, dict[OpKind, float]] = defaultdict(lambda: defaultdict(float))
    for t in range(graph.template_size):
        kind = schedule.template_kind[t]
        if not kind.is_communication:
            seconds[where[int(graph.template_step[t])]][kind] += float(schedule.costs[t])
    return {
        index: max(COMPUTE_KINDS, key=lambda k: by_kind.get(k, 0.0))
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
                kinds = [(b.kind, b.group) for b in layer_range.blocks]
                key = (block.kind, block.group)
                found = position[(r, kinds.index(key) if key in kinds else 0)]
        of_block.append(found)
    return [of_block[int(b)] for b in schedule.step_block]


def _logical_edges(schedule: Schedule, nodes: list[Node], where: list[int]) -> tuple[Edge, ...]:
    """Execution order between logical blocks; critical where the path goes that way."""
    steps = _runs(where)
    pairs = dict.fromkeys(itertools.pairwise(steps))
    of = schedule.graph.template_of
    path = _runs(
        [where[int(schedule.graph.template_step[of(int(op))])] for op in schedule.path.ops]
    )
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
    schedule: Schedule,
    view: str,
    filters: Filters,
    max_nodes: int,
    *,
    whole: bool = False,
) -> tuple[str, Filters, IntArray, str | None]:
    """The view, filters and operations to draw, and a note saying what was left out
    (None when nothing was).

    Unless `whole`, a picture of more than `max_nodes` nodes, or one that would be more
    than MAX_PX pixels on its long side, becomes a representative slice (see _slice)."""
    if view == "logical" and filters.describe():
        raise input_error(
            "the logical view draws the whole file: it takes no --layers, --gpus or --microbatch",
            "filter the device or block view instead, e.g. --view block --layers 0..1",
        )
    ops = schedule.select(filters)
    if view == "logical" or whole:
        return view, filters, ops, None
    count = count_nodes(grouping_for(schedule, view), ops)
    if count <= max_nodes and max(estimate_px(schedule, view, ops)) <= ESTIMATE_PX:
        return view, filters, ops, None
    chosen, narrowed = _slice(schedule, view, filters, max_nodes)
    kept = schedule.select(narrowed)
    drawn = count_nodes(grouping_for(schedule, chosen), kept)
    return chosen, narrowed, kept, _note(schedule, view, count, chosen, narrowed, drawn)


def _note(
    schedule: Schedule, view: str, count: int, chosen: str, narrowed: Filters, drawn: int
) -> str:
    """What the automatic slice drew, what it left out, and how to draw more."""
    what = narrowed.describe()
    left = _left_out(schedule, narrowed)
    return (
        f"the {view} view has {count:,} nodes, too many for one legible picture; drawing the"
        f" {chosen} view{' of ' + what if what else ''} ({drawn:,} nodes) instead"
        + (f", leaving out {left}" if left else "")
        + " (choose with --view, --layers, --gpus, --microbatch, raise --max-nodes,"
        " or draw everything with --all)"
    )


def _left_out(schedule: Schedule, filters: Filters) -> str:
    """`layers 1..18, 21..38; micro-batches 1..7`: what the filters do not draw."""
    graph = schedule.graph
    parts = []
    for many, every, span, chosen in (
        ("layers", range(graph.program.model.layers), filters.layers, filters.layer_set),
        ("gpus", graph.gpus(), filters.gpus, filters.gpu_set),
        ("micro-batches", range(graph.microbatches), filters.microbatches, None),
    ):
        kept = set(every)
        if span is not None:
            kept &= set(range(span[0], span[1] + 1))
        if chosen is not None:
            kept &= set(chosen)
        missing = tuple(sorted(set(every) - kept))
        if missing:
            parts.append(f"{many} {format_set(missing)}")
    return "; ".join(parts)


def _slice(schedule: Schedule, view: str, filters: Filters, max_nodes: int) -> tuple[str, Filters]:
    """The block view of the first slice that fits (at most `max_nodes` nodes and, by
    estimate_px, about ESTIMATE_PX pixels), trying fewer layers, then fewer GPUs for each:

    - layers: those asked for; the first and last layer of every stage (device group);
      the first layer, the first stage boundary (its last layer, the next stage's first)
      and the last layer; the first and the last layer; the first layer;
    - GPUs: those asked for; the GPUs the critical path runs on in the slice and the
      first and last GPU of every group; the critical ones and the first of every group;
    - the first micro-batch asked for (unless everything asked for fits).

    The critical path's operations within the slice's layers and micro-batch are always
    drawn: the GPUs they run on are kept."""
    grouping = grouping_for(schedule, "block")
    microbatch = (filters.microbatches or (0, 0))[0]
    first = replace(filters, microbatches=(microbatch, microbatch))
    candidates = [filters] + [
        replace(first, layer_set=layers) for layers in _layer_choices(schedule, filters)
    ]
    tried: list[Filters] = []
    for layers in candidates:
        tried += [
            layers,
            replace(layers, gpu_set=_gpus_to_keep(schedule, layers, both=True)),
            replace(layers, gpu_set=_gpus_to_keep(schedule, layers, both=False)),
        ]
    for candidate in tried:
        ops = schedule.select(candidate)
        fits = count_nodes(grouping, ops) <= max_nodes
        if fits and max(estimate_px(schedule, "block", ops)) <= ESTIMATE_PX:
            return "block", candidate
    return "block", tried[-1]


def _layer_choices(schedule: Schedule, filters: Filters) -> list[tuple[int, ...]]:
    """Ever fewer layers (within the filters) for a slice, each one sorted."""
    span = filters.layers or (0, schedule.graph.program.model.layers - 1)
    wanted = set(range(span[0], span[1] + 1)) & set(filters.layer_set or range(span[1] + 1))
    stages: dict[str, list[int]] = defaultdict(list)
    for block in schedule.blocks:
        if block.layer in wanted and block.block_kind is not None:
            stages[block.group].append(block.layer)
    spans = sorted((min(layers), max(layers)) for layers in stages.values())
    if not spans:
        return []
    low, high = spans[0][0], max(end for _, end in spans)
    boundary = {low, high, spans[0][1]} | ({spans[1][0]} if len(spans) > 1 else set())
    choices = [{x for pair in spans for x in pair}, boundary, {low, high}, {low}]
    return list(dict.fromkeys(tuple(sorted(choice)) for choice in choices))


def _gpus_to_keep(schedule: Schedule, filters: Filters, *, both: bool) -> tuple[int, ...]:
    """The GPUs of the critical path's operations that `filters` keep, and the first (and,
    with `both`, the last) kept GPU of every device group."""
    graph = schedule.graph
    ops = schedule.select(filters)
    kept = np.zeros(graph.num_ops, dtype=np.bool_)
    kept[ops] = True
    gpus: set[int] = set()
    for op in schedule.path.ops:
        if kept[op] and not graph.step_of(op).joint:
            gpus.add(graph.gpus_of(op)[0])
    allowed = set(filters.gpu_set or graph.gpus())
    if filters.gpus is not None:
        allowed &= set(range(filters.gpus[0], filters.gpus[1] + 1))
    for group in graph.program.groups:
        members = [g for g in group.gpus if g in allowed and g in schedule.group_of_gpu]
        if members:
            gpus |= {members[0], members[-1]} if both else {members[0]}
    return tuple(sorted(gpus))


# -- the size of a picture ------------------------------------------------------------------

RANK_PX = 115  # a rank of nodes and the gap below it, at PNG_DPI
CHAR_PX = 7.0  # one character of a node label (Helvetica 11 pt at 96 dpi)
COLUMN_PX = 130  # a GPU cluster's margins and the gap to the next column
WIDE = {
    OpKind.COLLECTIVE: 1.8,
    OpKind.TRANSFER: 1.4,
}  # hexagons and arrows are wider than their text
LEGEND_PX = 200
TITLE_PX = 150


def estimate_px(schedule: Schedule, view: str, ops: IntArray) -> tuple[int, int]:
    """The (width, height) in pixels dot will give the device or block view of `ops`,
    estimated without running dot (so that the .dot text does not depend on it).

    Height: one rank per node on the longest path, GPU columns included. Width: each GPU
    cluster is a column as wide as its widest label, each collective or transfer one of
    its own; the widest rank adds up the columns that span it."""
    built = operation_view(schedule, view, ops, reduce=False)
    rank = _ranks(built)
    if rank is None:
        return (0, TITLE_PX + RANK_PX * len(built.nodes))
    columns: dict[object, tuple[int, int, float]] = {}
    for node in built.nodes:
        key = node.cluster if len(node.cluster) == 2 else node.id
        width = max(len(line) for line in node.lines) * CHAR_PX * WIDE.get(node.kind, 1.0)
        low, high, widest = columns.get(key, (rank[node.id], rank[node.id], 0.0))
        columns[key] = (min(low, rank[node.id]), max(high, rank[node.id]), max(widest, width))
    ranks = max(rank.values(), default=0) + 1
    spans = np.zeros(ranks + 1)
    for low, high, widest in columns.values():
        spans[low] += widest + COLUMN_PX
        spans[high + 1] -= widest + COLUMN_PX
    width = float(np.cumsum(spans).max()) + LEGEND_PX
    return int(width), TITLE_PX + RANK_PX * ranks


def _ranks(built: View) -> dict[str, int] | None:
    """Each node's rank: the longest path to it, GPU columns included (None if cyclic)."""
    import networkx as nx

    digraph = nx.DiGraph()
    digraph.add_nodes_from(node.id for node in built.nodes)
    digraph.add_edges_from((edge.src, edge.dst) for edge in built.edges)
    by_cluster: dict[tuple[str, ...], list[Node]] = defaultdict(list)
    for node in built.nodes:
        by_cluster[node.cluster].append(node)
    for cluster, nodes in by_cluster.items():
        if len(cluster) == 2:
            ordered = sorted(nodes, key=lambda n: n.order)
            digraph.add_edges_from((a.id, b.id) for a, b in itertools.pairwise(ordered))
    if not nx.is_directed_acyclic_graph(digraph):
        return None
    rank: dict[str, int] = {}
    for name in nx.topological_sort(digraph):
        rank[name] = max((rank[p] + 1 for p in digraph.predecessors(name)), default=0)
    return rank


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
    if edge.via:
        attributes.update(xlabel=edge.via, style="dashed", fontname=FONT, fontsize="10",
                          fontcolor=CRITICAL)  # fmt: skip
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
    whole: bool = False,
) -> list[str]:
    """Draw `schedule` to `output` (.svg, .png, .pdf or .dot); returns notes for stderr.
    `whole`: draw what `view` and `filters` select, however large (`--all`)."""
    chosen, narrowed, ops, note = plan(schedule, view, filters or Filters(), max_nodes, whole=whole)
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
