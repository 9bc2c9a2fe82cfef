"""Topological sorting of the device DAG with numpy, level by level (Kahn's algorithm)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def csr(num_nodes: int, keys: IntArray, values: IntArray) -> tuple[IntArray, IntArray]:
    """(offsets, values sorted by key): values of node v are values[offsets[v]:offsets[v+1]]."""
    sort = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=num_nodes)
    offsets = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, values[sort]


def gather(offsets: IntArray, values: IntArray, nodes: IntArray) -> tuple[IntArray, IntArray]:
    """(owner position, value) for every CSR value of `nodes`."""
    starts, ends = offsets[nodes], offsets[nodes + 1]
    counts = ends - starts
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(nodes), dtype=np.int64), counts)
    first = np.repeat(starts - np.cumsum(counts) + counts, counts)
    index = np.arange(total, dtype=np.int64) + first
    return owner, values[index]


def gather_values(offsets: IntArray, values: IntArray, nodes: IntArray) -> IntArray:
    """Every CSR value of `nodes` (gather without the owners: fewer numpy calls per level)."""
    starts = offsets[nodes]
    counts = offsets[nodes + 1] - starts
    ends = np.cumsum(counts)
    index = np.arange(int(ends[-1]) if ends.size else 0, dtype=np.int64)
    index += np.repeat(starts - ends + counts, counts)
    return values[index]


# Below this many nodes a level is processed one node at a time in Python: numpy's cost per
# call (some microseconds) would dominate. A deep program's graph is a chain of levels of
# one or two operations each, as many levels as operations.
NARROW = 16


def topological_levels(num_nodes: int, src: IntArray, dst: IntArray) -> list[IntArray] | None:
    """Nodes grouped by level (a node's level exceeds its predecessors'); None on a cycle.

    Each level is sorted. Wide levels are processed with numpy, narrow ones (fewer than
    NARROW nodes) node by node: the same levels either way."""
    indegree = np.bincount(dst, minlength=num_nodes).astype(np.int64)
    offsets, successors = csr(num_nodes, src, dst)
    frontier = np.flatnonzero(indegree == 0).astype(np.int64)
    levels: list[IntArray] = []
    seen = 0
    while frontier.size:
        levels.append(frontier)
        seen += frontier.size
        if frontier.size < NARROW:
            frontier = _narrow_step(offsets, successors, indegree, frontier.tolist())
            continue
        nxt = gather_values(offsets, successors, frontier)
        if nxt.size == 0:
            break
        np.subtract.at(indegree, nxt, 1)
        ready = nxt[indegree[nxt] == 0]
        # A node reached by several edges of this level appears once per edge.
        frontier = _sorted_unique(ready) if ready.size > 1 else ready
    return levels if seen == num_nodes else None


def _narrow_step(
    offsets: IntArray, successors: IntArray, indegree: IntArray, frontier: list[int]
) -> IntArray:
    """The next level after `frontier`, counting down `indegree` (sorted, as np.unique
    gives it). Scalar numpy access: no Python copy of the graph (memory stays per edge)."""
    ready: list[int] = []
    for node in frontier:
        for succ in successors[offsets[node] : offsets[node + 1]].tolist():
            left = int(indegree[succ]) - 1
            indegree[succ] = left
            if left == 0:
                ready.append(succ)
    ready.sort()
    return np.asarray(ready, dtype=np.int64)


def _sorted_unique(values: IntArray) -> IntArray:
    """np.unique(values), without np.unique: in numpy 2.4 its first call imports numpy.ma
    (~10 ms, more than a whole small analysis spends sorting)."""
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def nodes_on_cycles(num_nodes: int, src: IntArray, dst: IntArray) -> IntArray:
    """Nodes that cannot be sorted: those on a cycle or after one."""
    indegree = np.bincount(dst, minlength=num_nodes).astype(np.int64)
    offsets, successors = csr(num_nodes, src, dst)
    frontier = np.flatnonzero(indegree == 0).astype(np.int64)
    while frontier.size:
        _, nxt = gather(offsets, successors, frontier)
        unique, counts = np.unique(nxt, return_counts=True)
        indegree[unique] -= counts
        frontier = unique[indegree[unique] == 0]
    return np.flatnonzero(indegree > 0).astype(np.int64)


def find_cycle(num_nodes: int, src: IntArray, dst: IntArray) -> list[int]:
    """One cycle of the graph, as nodes in edge order; [] when there is none.

    Every node that Kahn's algorithm cannot remove has a predecessor it cannot remove either,
    so walking from one such node to such a predecessor, again and again, must come back to
    a node already seen: that closes a cycle. Memory is linear in the edges (a CSR of
    predecessors), whatever the graph's size.
    """
    stuck = np.zeros(num_nodes, dtype=bool)
    stuck[nodes_on_cycles(num_nodes, src, dst)] = True
    if not stuck.any():
        return []
    keep = stuck[src] & stuck[dst]
    offsets, predecessors = csr(num_nodes, dst[keep], src[keep])
    position: dict[int, int] = {}
    walk: list[int] = []
    node = int(np.flatnonzero(stuck)[0])
    while node not in position:
        position[node] = len(walk)
        walk.append(node)
        node = int(predecessors[offsets[node]])  # the first of its stuck predecessors
    cycle = walk[position[node] :]
    cycle.reverse()  # the walk went against the edges
    return cycle
