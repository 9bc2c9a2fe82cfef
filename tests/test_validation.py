"""The validation against Narayanan et al. 2021, Table 1 (benchmarks/validation.py).

The files under examples/validation/ must be exactly what the generator writes from the
CSV, every one must compile into the configuration the paper describes, and the paper's FLOP
count (its Eq. 3), which turns dagc's iteration time into TFLOP/s per GPU, is checked here by
hand arithmetic. Nothing here runs an analysis or depends on timing.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

import dagc
from dagc.ir.logical import Recompute, Schedule
from helpers import EXAMPLES, REPO

FOLDER = EXAMPLES / "validation"
SHARED_CSV = REPO.parent / "shared" / "validation" / "narayanan2021_table1.csv"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "validation", REPO / "benchmarks" / "validation.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["validation"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


V = _generator()
ROWS = V.read_rows()


def test_the_csv_is_the_papers_table_1() -> None:
    # Ten rows, 1.7 B to 1 T parameters, as the paper's Table 1.
    assert [r.params_b for r in ROWS] == [
        "1.7", "3.6", "7.5", "18.4", "39.1", "76.1", "145.6", "310.1", "529.6", "1008.0"
    ]  # fmt: skip
    assert [r.tflops_per_gpu for r in ROWS] == [137, 138, 142, 135, 138, 140, 148, 155, 163, 163]


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="no ../shared checkout beside the repo")
def test_the_csv_is_a_verbatim_copy_of_the_shared_one() -> None:
    assert (FOLDER / "narayanan2021_table1.csv").read_bytes() == SHARED_CSV.read_bytes()


def test_the_files_are_what_the_generator_writes() -> None:
    written = sorted(p.name for p in FOLDER.glob("*.dag"))
    assert written == sorted(r.path.name for r in ROWS)
    for row in ROWS:
        assert row.path.read_text() == V.render(row), f"{row.path.name}: rerun the generator"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_file_compiles_to_the_papers_configuration(row: Any) -> None:
    r = row
    program = dagc.compile_file(str(r.path)).program
    model, workload, training = program.model, program.workload, program.training
    assert (model.layers, model.hidden, model.heads) == (r.layers, r.hidden, r.heads)
    assert (model.ffn, model.vocab) == (4 * r.hidden, 51200)
    assert model.tied_embeddings  # GPT ties its embedding and output layer
    assert (workload.batch, workload.seq) == (r.batch, 2048)
    assert training is not None
    # data-parallel size = GPUs / (t·p), and the layout itself holds t·p GPUs
    assert training.dp * r.t * r.p == r.gpus
    assert len({g for group in program.groups for g in group.gpus}) == r.t * r.p
    assert workload.replicas == training.dp
    assert training.recompute is Recompute.FULL
    assert program.hardware.gpu == "a100"
    # micro-batch size from Megatron-LM's examples/sc21/run_table_1.sh
    mbs = {"1.7": 16, "3.6": 16, "7.5": 16, "18.4": 8, "39.1": 4, "76.1": 2, "145.6": 2}
    assert workload.microbatch_size == mbs.get(r.params_b, 1)
    # interleaved where the script sets layers per virtual stage: 76.1B 5 of 15 layers per
    # stage (v = 3), 145.6B 5 of 10 (v = 2), 310.1B 3 of 6 (v = 2), 529.6B 1 of 3 (v = 3)
    v = {"76.1": 3, "145.6": 2, "310.1": 2, "529.6": 3}.get(r.params_b, 1)
    assert training.virtual_stages == v
    assert training.schedule is (Schedule.INTERLEAVED if v > 1 else Schedule.ONE_F_ONE_B)
    assert program.hardware.split_sends is (r.p > 1)
    # PyTorch DDP (overlapping the backward) for the p = 1 rows, Megatron's local DDP after
    assert training.grad_overlap is (r.p == 1)


def test_the_papers_flop_count_for_the_1t_row_by_hand() -> None:
    # Eq. 3: F = 96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h)) = 96·B·s·l·h² + 16·B·s²·l·h + 6·B·s·h·V
    # with B = 3072, s = 2048, l = 128, h = 25600, V = 51200. In powers of two and odd
    # factors: 96 = 2^5·3, 3072 = 2^10·3, 2048 = 2^11, 128 = 2^7, 25600 = 2^10·25,
    # 51200 = 2^11·25, so the three terms are
    #   96·B·s·l·h²  = 2^(5+10+11+7+20)·(3·3·25·25) = 2^53·5625
    #   16·B·s²·l·h  = 2^(4+10+22+7+10)·(3·25)      = 2^53·75
    #   6·B·s·h·V    = 2^(1+10+11+10+11)·(3·3·25·25) = 2^43·5625
    # and 2^53 = 9,007,199,254,740,992, 2^43 = 8,796,093,022,208:
    main = 50_665_495_807_918_080_000  # 9,007,199,254,740,992 · 5625
    attention = 675_539_944_105_574_400  # 9,007,199,254,740,992 · 75
    logits = 49_478_023_249_920_000  # 8,796,093,022,208 · 5625
    total = main + attention + logits
    assert total == 51_390_513_775_273_574_400
    row = ROWS[-1]
    assert row.params_b == "1008.0"
    assert row.paper_flops() == total
    # 163 TFLOP/s on 3,072 GPUs is then an iteration of F / (163e12 · 3072) ≈ 102.6 s
    assert 102.6 < total / (163e12 * 3072) < 102.7


def test_the_paper_parameter_count_matches_every_row() -> None:
    # Eq. 2: P = 12·l·h²·(1 + 13/(12h) + (V + s)/(12·l·h)); Table 1 prints it in billions.
    for r in ROWS:
        params = 12 * r.layers * r.hidden**2 + 13 * r.layers * r.hidden
        params += (51200 + 2048) * r.hidden
        assert f"{params / 1e9:.1f}" == r.params_b, r.name
