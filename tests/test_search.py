"""`dagc search`: the space's Programs, the exact bounds, pruning against brute force, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dagc.analysis.selection import cost_model
from dagc.api import analyze_compiled
from dagc.backends.dagfile import program_to_dag
from dagc.cli import app
from dagc.compiler import compile_text
from dagc.ir.logical import Program, Training
from dagc.search import Axes, Options, Space, search
from dagc.search.evaluate import compiled, evaluate
from dagc.search.prune import lower_bound, reduce, step_bound, step_ir
from dagc.search.space import Invalid, layout_program, layouts

runner = CliRunner()


def model_text(
    layers: int = 6,
    hidden: int = 512,
    heads: int = 8,
    moe: bool = False,
    experts: int = 8,
    dense_first: int = 0,
) -> str:
    lines = [
        "model toy {",
        f"  layers = {layers}",
        f"  hidden = {hidden}",
        f"  heads = {heads}",
        "  kv_heads = 2",
        f"  ffn = {hidden * 4}",
        "  activation = swiglu",
        "  vocab = 8000",
        "  attention_kernel = fused",
        "  attention_mask = causal",
    ]
    if moe:
        lines += [f"  experts = {experts}", "  top_k = 2", f"  expert_ffn = {hidden}"]
    return "\n".join([*lines, "}"])


def program(
    workload: str = "batch = 8; seq = 512",
    moe: bool = False,
    dense_first: int = 0,
    layers: int = 6,
    training: bool = False,
    gpus: int = 4,
    **model: int,
) -> Program:
    """A small program on `gpus` GPUs (its layout, which the search ignores: every GPU an
    attention replica)."""
    dp = f"dp={gpus}"
    ffn = f"moe ep={gpus}" if moe else f"mlp tp=1 {dp}"
    body = [model_text(layers=layers, moe=moe, **model), f"workload {{ {workload} }}"]
    body.append(f"devices {{\n gpu = h100\n group g = gpu[0..{gpus - 1}]\n}}")
    last = layers - 1

    def statement(first: int, last: int, blocks: list[str]) -> str:
        return f"layers {first}..{last} on g {{\n" + "\n".join(blocks) + "\n}"

    attention, head = f"attention tp=1 {dp}", f"lm_head tp=1 {dp}"
    if dense_first:
        body.append(statement(0, dense_first - 1, [f"embed {dp}", attention, f"mlp tp=1 {dp}"]))
        body.append(statement(dense_first, last, [attention, ffn, head]))
    else:
        body.append(statement(0, last, [f"embed {dp}", attention, ffn, head]))
    base = compile_text("\n".join(body)).program
    return replace(base, training=Training()) if training else base


PREFILL = "batch = 8; seq = 512"
DECODE = "mode = decode; batch = 16; context = 1024"
SERVE = "mode = serve; batch = 8; input = 256; output = 4"


def spaces() -> list[Space]:
    return [
        Space(program(PREFILL), 4),
        Space(program(DECODE, moe=True), 4),
        Space(program(DECODE, moe=True, dense_first=1), 4),
        Space(program(SERVE), 4),
        Space(program("batch = 8; seq = 256", training=True), 4),
    ]


@pytest.mark.parametrize(
    "space", spaces(), ids=["prefill", "decode-moe", "decode-dense-first", "serve", "train"]
)
def test_every_layout_program_compiles_back_equal(space: Space) -> None:
    built = 0
    for layout in layouts(space):
        try:
            made = layout_program(space, layout)
        except Invalid:
            continue
        built += 1
        assert compile_text(program_to_dag(made)).program == made, layout
    assert built > 3


def test_space_holds_the_axes() -> None:
    decode = Space(program(DECODE, moe=True), 4)
    found = list(layouts(decode))
    assert any(layout.attention_dp for layout in found)
    assert {layout.attention_gpus for layout in found} >= {2, 3}  # 8 experts over 2 and 1
    assert any(layout.tp == 4 and layout.overlap for layout in found)
    train = Space(program("batch = 8; seq = 256", training=True), 4)
    found = list(layouts(train))
    assert {layout.schedule.value for layout in found} == {"1f1b", "interleaved", "zb_h1"}
    assert {layout.zero for layout in found} == {0, 1}
    assert any(layout.sequence_parallel for layout in found)
    narrow = Space(train.base, 4, Axes(tp=(2,), zero=(1,)))
    assert {(layout.tp, layout.zero) for layout in layouts(narrow)} == {(2, 1)}


def _full_bound(made: Program) -> float:
    model, _ = cost_model(made)
    return step_bound(step_ir(made), (1,) * made.model.layers, model, made).time_s


@pytest.mark.parametrize(
    "space", spaces(), ids=["prefill", "decode-moe", "decode-dense-first", "serve", "train"]
)
def test_bounds_are_lower_bounds(space: Space) -> None:
    """The reduced program's bound equals the unreduced one's, and neither the time nor the
    memory bound exceeds what `dagc analyze` gives."""
    checked = 0
    for layout in list(layouts(space))[:: 12 if space.training else 3]:
        try:
            made = layout_program(space, layout)
        except Invalid:
            continue
        model, _ = cost_model(made)
        found = lower_bound(made, model)
        if made.mode.value == "prefill":  # serve and decode bound their phases
            assert found.time_s == pytest.approx(_full_bound(made), rel=1e-12)
        analysis = analyze_compiled(compiled(made), symmetric=True).analysis
        memory = max(g.memory_bytes for g in analysis.gpus)
        assert found.memory_bytes <= memory
        serving = analysis.serving
        if serving is None:
            assert found.time_s <= analysis.total_s * (1 + 1e-12)
        else:
            if serving.tpot_s is not None and found.tpot_s is not None:
                assert found.tpot_s <= serving.tpot_s * (1 + 1e-12)
            if serving.e2e_s is not None:
                assert found.time_s <= serving.e2e_s * (1 + 1e-12)
        checked += 1
    assert checked >= 2


def test_reduced_program_keeps_three_layers_a_range() -> None:
    space = Space(program(PREFILL, layers=12), 4)
    made = layout_program(space, next(iter(layouts(space))))
    reduced = reduce(made)
    assert reduced.program.model.layers <= 3 * len(made.ranges)
    assert sum(reduced.multiplicity) == made.model.layers


def _top(space: Space, prune: bool, **options: object) -> list[tuple[str, float]]:
    result = search(space, Options(prune=prune, top=3, **options))  # type: ignore[arg-type]
    result.counts.check()
    return [(r.evaluation.layout.summary(space.training), r.score) for r in result.ranked]


@pytest.mark.parametrize(
    "space", spaces()[:2] + spaces()[4:], ids=["prefill", "decode-moe", "train"]
)
def test_pruned_search_equals_brute_force(space: Space) -> None:
    if space.training:
        space = Space(
            space.base,
            4,
            Axes(recompute=(space.base.training.recompute,), sequence_parallel=(False,)),
        )  # type: ignore[union-attr]
    assert _top(space, True, wave=2) == _top(space, False)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.integers(2, 5),
    heads=st.sampled_from([4, 8]),
    batch=st.sampled_from([4, 8, 16]),
    mode=st.sampled_from(["prefill", "decode"]),
    moe=st.booleans(),
)
def test_pruning_never_drops_the_winner(
    layers: int, heads: int, batch: int, mode: str, moe: bool
) -> None:
    workload = (
        f"batch = {batch}; seq = 256"
        if mode == "prefill"
        else f"mode = decode; batch = {batch}; context = 512"
    )
    base = program(workload, moe=moe, layers=layers, heads=heads, hidden=64 * heads)
    space = Space(base, 4)
    pruned = search(space, Options(top=1, wave=1))
    brute = search(space, Options(top=1, prune=False))
    assert [r.evaluation for r in pruned.ranked] == [r.evaluation for r in brute.ranked]
    assert pruned.counts.evaluated <= brute.counts.evaluated


def test_sla_and_memory_are_counted() -> None:
    space = Space(program(DECODE, moe=True), 4)
    result = search(space, Options(tpot_max_s=1e-9))
    counts = result.counts
    assert result.ranked == ()
    assert counts.over_sla_bound + counts.over_sla > 0


def test_workers_give_the_same_result() -> None:
    space = Space(program(PREFILL), 4)
    one = search(space, Options(top=4, wave=2))
    two = search(space, Options(top=4, wave=2, workers=2))
    assert one.ranked == two.ranked and one.counts == two.counts


def test_cli_best_layout_reproduces(tmp_path: Path) -> None:
    source = tmp_path / "toy.dag"
    source.write_text(program_to_dag(program(PREFILL)), encoding="utf-8")
    best = tmp_path / "best.dag"
    result = runner.invoke(
        app, ["search", str(source), "--format", "json", "--top", "2", "-o", str(best)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    analysed = runner.invoke(app, ["analyze", str(best), "--format", "json"])
    assert analysed.exit_code == 0, analysed.output
    assert json.loads(analysed.stdout)["critical_path"]["time_s"] == report["ranked"][0]["time_s"]
    counts = report["counts"]
    assert counts["considered"] == (
        sum(counts["invalid"].values())
        + counts["over_memory_bound"]
        + counts["over_sla_bound"]
        + counts["pruned_by_bound"]
        + counts["evaluated"]
    )


def test_cli_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["search"])
    assert result.exit_code == 2 and "one of them" in result.output
    bad = tmp_path / "bad.dag"
    bad.write_text("model m {\n  layers = x\n}\n", encoding="utf-8")
    result = runner.invoke(app, ["search", str(bad)])
    assert result.exit_code == 2 and f"{bad}:2:" in result.output
    source = tmp_path / "toy.dag"
    source.write_text(program_to_dag(program(PREFILL)), encoding="utf-8")
    result = runner.invoke(app, ["search", str(source), "--tp", "x"])
    assert result.exit_code == 2 and "--tp expects" in result.output
    result = runner.invoke(app, ["search", str(source), "--objective", "throughput"])
    assert result.exit_code == 2
    assert runner.invoke(app, ["search", str(source), "--tpot-max", "5"]).exit_code == 2


def test_evaluate_matches_analyze() -> None:
    space = Space(program(DECODE, moe=True), 4)
    layout = next(layout for layout in layouts(space) if layout.attention_dp)
    evaluation = evaluate(space, layout, None)
    analysis = analyze_compiled(compiled(layout_program(space, layout))).analysis
    assert analysis.serving is not None
    assert evaluation.tpot_s == analysis.serving.tpot_s  # type: ignore[union-attr]


def test_plot_is_deterministic(tmp_path: Path) -> None:
    source = tmp_path / "toy.dag"
    source.write_text(program_to_dag(program(DECODE, moe=True)), encoding="utf-8")
    pictures = []
    for workers in ("1", "2"):
        plot = tmp_path / f"front{workers}.svg"
        result = runner.invoke(
            app, ["search", str(source), "--plot", str(plot), "--workers", workers, "--top", "3"]
        )
        assert result.exit_code == 0, result.output
        pictures.append(plot.read_text(encoding="utf-8"))
    assert pictures[0] == pictures[1] and pictures[0].startswith("<svg")
    assert "tokens/s per GPU" in pictures[0]


def test_ray_gives_the_same_result() -> None:
    """`--ray local` starts Ray on this machine; the result is the in-process one."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dagc[ray]')")
    space = Space(program(PREFILL), 4)
    try:
        remote = search(space, Options(top=3, wave=2, ray="local"))
    finally:
        ray.shutdown()
    local = search(space, Options(top=3, wave=2))
    assert remote.ranked == local.ranked and remote.counts == local.counts


def test_fill_and_drain_tighten_a_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipelined training layout: the bound with fill and drain is strictly above the
    busiest stream alone, and still below the critical path."""
    from dagc.search import prune
    from dagc.search.space import Layout

    space = Space(program("batch = 8; seq = 256", training=True), 4)
    layout = Layout(pp=4, microbatches=4)
    made = layout_program(space, layout)
    model, _ = cost_model(made)
    new = lower_bound(made, model).time_s
    monkeypatch.setattr(prune._Ends, "bounds", lambda self: {})
    old = lower_bound(made, model).time_s
    actual = evaluate(space, layout, None).time_s
    print(
        f"busiest stream {old:.6g} s, with fill and drain {new:.6g} s, critical path {actual:.6g} s"
    )
    assert old < new <= actual * (1 + 1e-9)
