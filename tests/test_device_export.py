"""Exporting the device DAG: `dagc lower --emit json|device|steps`, `--print-after`, `-o`,
networkx, and the golden device IR of the seed files.

Regenerate the golden files with
`DAGC_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_device_export.py`, then read every changed
line against the reference semantics before committing it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest
from typer.testing import CliRunner

import dagc
from dagc.backends.device_json import to_networkx
from dagc.cli import app
from dagc.expand import expand
from dagc.ir.terms import TermKind
from helpers import EXAMPLES, REPO, check_golden

SEED = EXAMPLES / "seed"
BASELINE = SEED / "baseline_tp8_pp2.dag"
MA = SEED / "ma_separation.dag"
GOLDEN = Path(__file__).resolve().parent / "golden" / "device"

runner = CliRunner()


def lower(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["lower", *args])
    return result.exit_code, result.stdout, result.stderr


# -- JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BASELINE, MA], ids=lambda p: p.stem)
def test_json_round_trips_through_networkx(path: Path) -> None:
    code, out, err = lower(str(path), "--emit", "json")
    assert code == 0, err
    data = json.loads(out)
    rebuilt = nx.node_link_graph(data, edges="edges")
    graph = expand(dagc.compile_file(str(path))).graph
    assert rebuilt.is_directed() and not rebuilt.is_multigraph()
    assert rebuilt.number_of_nodes() == graph.num_ops
    assert rebuilt.number_of_edges() == graph.num_edges
    assert data["graph"]["ops"] == graph.num_ops and data["graph"]["edges"] == graph.num_edges
    assert set(rebuilt.nodes) == {graph.name(op) for op in range(graph.num_ops)}
    kinds = Counter(kind for _, _, kind in rebuilt.edges(data="kind"))
    assert kinds["data"] + kinds["order"] == graph.num_edges
    assert kinds["order"] == int(graph.edge_kind.sum())
    assert nx.utils.graphs_equal(rebuilt, to_networkx(graph))


def test_json_node_attributes() -> None:
    code, out, _ = lower(str(BASELINE), "--emit", "json")
    assert code == 0
    rebuilt = nx.node_link_graph(json.loads(out), edges="edges")
    w = 2
    q = rebuilt.nodes["qkv_l0_gpu3.q"]
    assert q["node"] == "qkv_l0_gpu3" and q["kind"] == "matmul" and q["gpus"] == [3]
    assert q["function"] == "Get_Time" and q["args"] == [2097152, 4096, 512]
    assert q["term"] == "Get_Time(2097152, 4096, 512)"
    assert q["flops"] == 2 * 2097152 * 4096 * 512
    assert q["bytes"] == (2097152 * 4096 + 4096 * 512 + 2097152 * 512) * w
    assert q["layer"] == 0 and q["microbatch"] == 0
    reduce = rebuilt.nodes["all_reduce_mlp_l2"]
    assert reduce["kind"] == "collective" and reduce["gpus"] == list(range(8, 16))
    assert reduce["bytes"] == 2097152 * 4096 * w and reduce["flops"] == 0
    assert reduce["term_nodes"] == 1
    send = rebuilt.nodes["send_stage1"]
    assert send["kind"] == "transfer" and send["function"] == TermKind.P2P.value
    assert send["term"] == f"P2P_Time({2097152 * 4096 * w}, nodes=2)"
    assert rebuilt.edges["send_stage1", "recv_stage1"]["kind"] == "data"
    softmax = rebuilt.nodes["softmax_l1_gpu7"]
    assert softmax["bytes"] == 2 * (1024 * 4 * 2048 * 2048) * w  # one read, one write


# -- the other emitters ------------------------------------------------------------------------


def test_emit_device_prints_the_device_ir() -> None:
    code, out, err = lower(str(BASELINE), "--emit", "device")
    assert code == 0, err
    lines = out.splitlines()
    # 458 ops and 729 edges, both counted by hand in test_expansion.py and test_analyze.py.
    assert lines[0] == "device @dense_4l gpus=16 microbatches=1 ops=458 edges=729 {"
    assert lines[-1] == "}" and len(lines) == 458 + 2
    assert "  recv_stage1 = transfer Sync() on gpu[8..15] <- send_stage1" in lines
    assert err == ""


def test_emit_steps_prints_the_step_ir() -> None:
    code, out, err = lower(str(MA), "--emit", "steps")
    assert code == 0
    assert out.startswith("steps @moe_4l {\n")
    assert "    broadcast_l0 = Broadcast_Time(17179869184, 5, nodes=2) joining gpu[0..11]" in out
    # each step names the values it reads and writes
    assert (
        "    qkv.v = Get_Time(2097152, 4096, 384) on gpu[0..7] | Get_Time(2097152, 4096, 256)"
        " on gpu[8..11] reads ln1_l0 writes v_l0\n"
    ) in out
    assert (
        "    all_reduce_attn_l0 = AllReduce_Time(17179869184, 12, nodes=2) joining gpu[0..11]"
        " reads o_l0 writes o_l0_sum\n"
    ) in out
    assert (
        "    res2 = Elem_Time(8589934592) on gpu[0..11] reads moe_ret_l0, x_l0_attention"
        " writes x_l0_moe\n"
    ) in out
    assert "warning: 32 heads do not split evenly" in err  # warnings go to stderr only
    assert "warning" not in out


def test_print_after_prints_that_pass() -> None:
    code, out, err = lower(str(BASELINE), "--emit", "steps", "--print-after", "shard-attention")
    assert code == 0, err
    marker = "// ----- IR after shard-attention -----\n"
    assert out.count(marker) == 1
    after = out.split(marker)[1].split("\n}\n")[0]
    assert after.startswith("steps @dense_4l {")
    # After shard-attention: attention has its ops; mlp is not sharded yet, and no
    # collectives or transfers exist yet.
    assert "    qkv.q = Get_Time(2097152, 4096, 512) on gpu[0..7]" in after
    assert "mlp_up" not in after and "all_reduce" not in after and "send_stage" not in after
    # The requested output (the complete step IR) follows.
    final = out.split(marker)[1].split("\n}\n", 1)[1]
    assert "all_reduce_mlp_l3 = AllReduce_Time(17179869184, 8) joining gpu[8..15]" in final


PASSES = (
    "place",
    "shard-attention",
    "shard-mlp",
    "shard-moe",
    "shard-embed-head",
    "insert-collectives",
    "insert-transfers",
    "backward",
    "data-parallel",
    "assign-streams",
    "microbatch",
    "order",
)


def test_print_after_all_and_verify() -> None:
    code, out, err = lower(str(MA), "--emit", "device", "--print-after", "all", "--verify")
    assert code == 0, err
    markers = [line for line in out.splitlines() if line.startswith("// ----- IR after ")]
    assert markers == [f"// ----- IR after {name} -----" for name in PASSES]
    # After `microbatch` the device IR has data edges only; `order` adds program order.
    after_microbatch = out.split("// ----- IR after microbatch -----\n")[1].split("\n}\n")[0]
    assert " after " not in after_microbatch
    _, plain, _ = lower(str(MA), "--emit", "device")
    assert out.endswith(plain)


def test_print_after_unknown_pass_exits_2() -> None:
    code, out, err = lower(str(BASELINE), "--emit", "device", "--print-after", "shard-nothing")
    assert code == 2
    assert out == ""
    assert "shard-nothing" in err and "Traceback" not in err


def test_output_file_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "graph.json"
    code, out, err = lower(str(MA), "--emit", "json", "-o", str(target))
    assert code == 0, err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.json"]  # no temporary file
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["graph"]["ops"] == len(data["nodes"])


def test_output_to_a_missing_folder_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "graph.txt"
    code, out, err = lower(str(BASELINE), "--emit", "device", "-o", str(target))
    assert code == 2 and out == ""
    assert "cannot write" in err
    assert list(tmp_path.iterdir()) == []


# -- golden device IR ---------------------------------------------------------------------------

SEEDS = sorted(SEED.glob("*.dag"))


def golden_path(example: Path) -> Path:
    return GOLDEN / example.with_suffix(".txt").name


@pytest.mark.parametrize("example", SEEDS, ids=lambda p: p.stem)
def test_golden_device_ir(example: Path) -> None:
    relative = example.relative_to(REPO)
    code, actual, err = lower(str(example), "--emit", "device")
    assert code == 0, err
    check_golden(
        golden_path(example), actual, f"`dagc lower {relative} --emit device` line by line"
    )


def test_no_stale_golden_device_files() -> None:
    expected = {golden_path(example) for example in SEEDS}
    stale = sorted(p.name for p in GOLDEN.glob("*.txt") if p not in expected)
    assert not stale, f"golden device files without a seed (delete them): {stale}"
