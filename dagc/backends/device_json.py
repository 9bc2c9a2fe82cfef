"""The device DAG as node-link JSON (networkx's `node_link_graph(data, edges="edges")` reads it).

Written one node per line, so that large graphs stream instead of building one big string.
The format is documented in docs/device-json.md.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from dagc.ir.device import DATA_EDGE, DeviceGraph

FORMAT_VERSION = 1


def graph_attributes(graph: DeviceGraph) -> dict[str, Any]:
    """Graph-level facts: model, workload and sizes."""
    program = graph.program
    attributes = {
        "format": "dagc-device-graph",
        "version": FORMAT_VERSION,
        "model": program.model.name,
        "source": program.source_path,
        "microbatches": graph.microbatches,
        "tokens_per_microbatch": program.workload.tokens_per_microbatch,
        "dtype": program.workload.dtype.value,
        "gpu": program.hardware.gpu,
        "node_size": program.hardware.node_size,
        "gpus": graph.gpus(),
        "ops": graph.num_ops,
        "edges": graph.num_edges,
    }
    if graph.tail_size:  # training: operations once per iteration, after m·W per micro-batch
        attributes["iteration_ops"] = graph.tail_size
    return attributes


def node_record(graph: DeviceGraph, op: int) -> dict[str, Any]:
    """One operation as a JSON object."""
    operation = graph.operation(op)
    return {
        "id": operation.name,
        "node": operation.node,
        "kind": operation.kind,
        "gpus": list(operation.gpus),
        "layer": operation.layer,
        "microbatch": operation.microbatch,
        "term": str(operation.term),
        "function": operation.term.kind.value,
        "args": list(operation.term.args),
        "term_nodes": operation.term.nodes,
        "flops": operation.flops,
        "bytes": operation.bytes,
    }


def write_device_json(graph: DeviceGraph, stream: TextIO) -> None:
    """Write `graph` as node-link JSON to `stream`."""
    stream.write('{"directed": true, "multigraph": false,\n "graph": ')
    stream.write(json.dumps(graph_attributes(graph), sort_keys=True))
    stream.write(',\n "nodes": [')
    for op in range(graph.num_ops):
        stream.write(",\n  " if op else "\n  ")
        stream.write(json.dumps(node_record(graph, op), sort_keys=True))
    stream.write('\n ],\n "edges": [')
    for i, (s, d, k) in enumerate(
        zip(graph.src.tolist(), graph.dst.tolist(), graph.edge_kind.tolist(), strict=True)
    ):
        stream.write(",\n  " if i else "\n  ")
        kind = "data" if k == DATA_EDGE else "order"
        # Names are made on demand: a list of them all would cost ~100 B per operation.
        record = {"source": graph.name(s), "target": graph.name(d), "kind": kind}
        stream.write(json.dumps(record))
    stream.write("\n ]\n}\n")


def to_networkx(graph: DeviceGraph) -> Any:
    """The device DAG as a networkx DiGraph keyed by operation name (for users' analyses).

    Node attributes are those of the JSON export; edges carry `kind` ("data" or "order").
    """
    import networkx as nx

    digraph = nx.DiGraph(**graph_attributes(graph))
    names = [graph.name(op) for op in range(graph.num_ops)]
    for op in range(graph.num_ops):
        record = node_record(graph, op)
        digraph.add_node(record.pop("id"), **record)
    for s, d, k in zip(
        graph.src.tolist(), graph.dst.tolist(), graph.edge_kind.tolist(), strict=True
    ):
        digraph.add_edge(names[s], names[d], kind="data" if k == DATA_EDGE else "order")
    return digraph
