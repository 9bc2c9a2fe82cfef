"""The layouts `dagc search` explores, and the logical Program of each.

A search starts from a base Program: its model, its workload and its hardware; its layout
(groups and layer ranges) is read only for which blocks each layer runs (attention and
mlp, or attention and moe; embed before layer 0, lm_head after the last). A `Layout` is
one point of the space (tp, pp, micro-batches, attention data parallelism, an
attention/expert separation, and for training dp, schedule, recomputation, ZeRO, sequence
parallelism), `layout_program` builds its Program directly in the logical IR (no text is
parsed), laid out as `dagc new --hf` lays out its files (dagc/hf.py): stage s of pp is
GPUs s·tp … s·tp + tp − 1, the layers split over the stages by `split_evenly` (the first
stages get more; with interleaving pp·v chunks, chunk c on stage c mod pp), the experts of
a stage over its GPUs (ep = tp), the embedding vocabulary-parallel when tp > 1.

A layout that cannot run is not built: `layout_program` raises `Invalid` with the reason
the search counts (`REASONS`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

from dagc.ir.logical import (
    Block,
    BlockKind,
    DeviceGroup,
    LayerRange,
    Mode,
    MoeDispatch,
    Program,
    Recompute,
    Schedule,
)
from dagc.split import split_evenly


class Objective(enum.StrEnum):
    """What a search minimises or maximises (docs/search.md)."""

    LATENCY = "latency"  # prefill: the critical path; decode/serve: TPOT
    THROUGHPUT = "throughput"  # decode/serve: tokens/s per GPU (maximised)
    ITERATION = "iteration"  # training: the iteration time


class Invalid(Exception):
    """A layout that cannot run; `reason` is one of REASONS (how the search counts it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Why a layout is invalid, in the order counts are listed.
REASONS = (
    "more pipeline stages than layers",
    "tp does not divide the heads",
    "ep does not divide the experts",
    "micro-batches do not divide the batch",
    "dp does not divide the batch",
    "fewer sequences per micro-batch than replicas",
    "does not expand",
)


@dataclass(frozen=True, slots=True)
class Layout:
    """One point of the space. `attention_gpus` set: attention/expert separation (that many
    GPUs run attention with dp, the others the experts, dispatch=routed). `attention_dp`:
    every GPU one attention replica (tp = 1), the experts over all of them."""

    tp: int = 1
    pp: int = 1
    microbatches: int = 1
    attention_dp: bool = False
    attention_gpus: int | None = None
    overlap: bool = False
    # training
    dp: int = 1
    schedule: Schedule = Schedule.ONE_F_ONE_B
    virtual_stages: int = 1
    recompute: Recompute = Recompute.NONE
    zero: int = 0
    sequence_parallel: bool = False

    def summary(self, training: bool = False) -> str:
        """`tp=8 pp=4 m=8`, …: what a ranked row says about the layout."""
        if self.attention_gpus is not None:
            parts = [f"attn={self.attention_gpus} dp", "experts=rest", f"m={self.microbatches}"]
        elif self.attention_dp:
            parts = ["attention-dp", f"m={self.microbatches}"]
        else:
            parts = [f"tp={self.tp}", f"pp={self.pp}", f"m={self.microbatches}"]
        if training:
            schedule = self.schedule.value
            if self.virtual_stages > 1:
                schedule += f"×{self.virtual_stages}"
            parts[2:2] = [f"dp={self.dp}"]
            parts += [schedule, f"rc={self.recompute.value}", f"zero={self.zero}"]
            if self.sequence_parallel:
                parts.append("sp")
        if self.overlap:
            parts.append("overlap")
        return " ".join(parts)

    def key(self) -> tuple[object, ...]:
        """A total order of layouts (ties in the ranking break by it)."""
        return (
            self.attention_gpus or 0, self.attention_dp, self.tp, self.pp, self.dp,
            self.microbatches, self.schedule.value, self.virtual_stages, self.recompute.value,
            self.zero, self.sequence_parallel, self.overlap,
        )  # fmt: skip


@dataclass(frozen=True)
class Axes:
    """The values each axis may take; None: every value the space allows."""

    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    dp: tuple[int, ...] | None = None
    microbatches: tuple[int, ...] | None = None
    attention_dp: tuple[bool, ...] | None = None
    attention_gpus: tuple[int, ...] | None = None
    separation: bool = True
    schedule: tuple[Schedule, ...] | None = None
    recompute: tuple[Recompute, ...] | None = None
    zero: tuple[int, ...] | None = None
    sequence_parallel: tuple[bool, ...] | None = None
    overlap: tuple[bool, ...] | None = None


@dataclass(frozen=True)
class Space:
    """A base program (model, workload, hardware), the GPUs and the axes to explore."""

    base: Program
    gpus: int
    axes: Axes = field(default_factory=Axes)

    @property
    def training(self) -> bool:
        return self.base.training is not None

    @property
    def moe(self) -> bool:
        return self.base.model.experts is not None

    def layer_kinds(self) -> tuple[tuple[BlockKind, ...], ...]:
        """The blocks each layer runs (embed and lm_head left out), from the base layout."""
        return layer_kinds(self.base)


def layer_kinds(program: Program) -> tuple[tuple[BlockKind, ...], ...]:
    kinds: list[tuple[BlockKind, ...]] = [()] * program.model.layers
    for layer_range in program.ranges:
        body = tuple(
            b.kind for b in layer_range.blocks if b.kind not in (BlockKind.EMBED, BlockKind.LM_HEAD)
        )
        for layer in layer_range.layer_indices:
            kinds[layer] = body
    return tuple(kinds)


def _has(program: Program, kind: BlockKind) -> bool:
    return any(b.kind is kind for r in program.ranges for b in r.blocks)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _allowed(values: Sequence[object], narrowed: tuple[object, ...] | None) -> list[object]:
    return [v for v in values if narrowed is None or v in narrowed]


def _microbatch_options(pp: int, narrowed: tuple[int, ...] | None) -> list[int]:
    """m ∈ {1, pp, 2·pp, 4·pp} (or the values given)."""
    if narrowed is not None:
        return sorted(set(narrowed))
    return sorted({1, pp, 2 * pp, 4 * pp})


def layouts(space: Space) -> Iterator[Layout]:
    """Every layout of the space, in a fixed order (valid or not: see layout_program)."""
    if space.training:
        yield from _training_layouts(space)
    else:
        yield from _inference_layouts(space)


def _node_size(space: Space) -> int:
    return space.base.hardware.node_size


def _overlaps(space: Space, tp: int) -> list[bool]:
    return [bool(o) for o in _allowed([False, True] if tp > 1 else [False], space.axes.overlap)]


def _inference_layouts(space: Space) -> Iterator[Layout]:
    axes, n = space.axes, space.gpus
    mode = space.base.mode
    for tp in _allowed([d for d in divisors(n) if d <= _node_size(space)], axes.tp):
        assert isinstance(tp, int)
        pp = n // tp
        if axes.pp is not None and pp not in axes.pp:
            continue
        if axes.attention_dp is not None and False not in axes.attention_dp:
            continue
        for m in _microbatch_options(pp, axes.microbatches):
            for overlap in _overlaps(space, tp):
                yield Layout(tp=tp, pp=pp, microbatches=m, overlap=overlap)
    serving = mode is not Mode.PREFILL
    replicated = axes.attention_dp is None or True in axes.attention_dp
    if serving and n > 1 and replicated and 1 in (axes.tp or (1,)) and 1 in (axes.pp or (1,)):
        for m in _microbatch_options(1, axes.microbatches):
            yield Layout(microbatches=m, attention_dp=True)
    if mode is Mode.DECODE and space.moe and axes.separation and n > 1:
        experts = space.base.model.experts
        assert experts is not None
        for a in range(1, n):
            if axes.attention_gpus is not None and a not in axes.attention_gpus:
                continue
            if experts % (n - a) == 0:
                yield Layout(microbatches=2, attention_gpus=a)


def _training_layouts(space: Space) -> Iterator[Layout]:
    axes, n = space.axes, space.gpus
    layers = space.base.model.layers
    for tp in _allowed([d for d in divisors(n) if d <= _node_size(space)], axes.tp):
        assert isinstance(tp, int)
        for pp in _allowed(divisors(n // tp), axes.pp):
            assert isinstance(pp, int)
            dp = n // (tp * pp)
            if axes.dp is not None and dp not in axes.dp:
                continue
            schedules: list[tuple[Schedule, int]] = [(Schedule.ONE_F_ONE_B, 1)]
            if pp > 1:
                if 2 * pp <= layers:
                    schedules.append((Schedule.INTERLEAVED, 2))
                schedules.append((Schedule.ZB_H1, 1))
            schedules = [s for s in schedules if axes.schedule is None or s[0] in axes.schedule]
            for m in _microbatch_options(pp, axes.microbatches):
                for schedule, v in schedules:
                    for recompute in _allowed(list(Recompute), axes.recompute):
                        for zero in _allowed([0, 1] if dp > 1 else [0], axes.zero):
                            sps = [False, True] if tp > 1 else [False]
                            for sp in _allowed(sps, axes.sequence_parallel):
                                for overlap in _overlaps(space, tp):
                                    yield Layout(
                                        tp=tp, pp=pp, microbatches=m, overlap=overlap, dp=dp,
                                        schedule=schedule, virtual_stages=v,
                                        recompute=recompute,  # type: ignore[arg-type]
                                        zero=zero,  # type: ignore[arg-type]
                                        sequence_parallel=bool(sp),
                                    )  # fmt: skip


# -- the Program of a layout -----------------------------------------------------------------


def layout_program(space: Space, layout: Layout) -> Program:
    """The base program laid out as `layout`; Invalid when it cannot run."""
    base = space.base
    model = base.model
    _check(space, layout)
    workload = replace(
        base.workload, microbatches=layout.microbatches, replicas=layout.dp if space.training else 1
    )
    training = None
    if base.training is not None:
        training = replace(
            base.training,
            dp=layout.dp,
            schedule=layout.schedule,
            virtual_stages=layout.virtual_stages,
            recompute=layout.recompute,
            zero=layout.zero,
            sequence_parallel=layout.sequence_parallel,
        )
    if layout.attention_gpus is not None:
        groups, ranges = _separated(space, layout.attention_gpus)
    elif layout.attention_dp:
        groups, ranges = _replicated(space)
    else:
        groups, ranges = _pipelined(space, layout)
    split_sends = layout.pp > 1 and layout.tp > 1
    hardware = replace(base.hardware, split_sends=split_sends)
    return Program(
        model=model,
        workload=workload,
        hardware=hardware,
        groups=groups,
        ranges=ranges,
        source_path=base.source_path,
        training=training,
    )


def _check(space: Space, layout: Layout) -> None:
    model, workload = space.base.model, space.base.workload
    batch = workload.batch
    if layout.pp > model.layers:
        raise Invalid(REASONS[0])
    if model.heads is not None and model.heads % layout.tp:
        raise Invalid(REASONS[1])
    experts = model.experts
    if experts is not None:
        ep = _expert_gpus(space, layout)
        if experts % ep:
            raise Invalid(REASONS[2])
    if batch % layout.dp:
        raise Invalid(REASONS[4])
    if (batch // layout.dp) % layout.microbatches:
        raise Invalid(REASONS[3])
    replicas = 1
    if layout.attention_dp:
        replicas = space.gpus
    elif layout.attention_gpus is not None:
        replicas = layout.attention_gpus
    if batch // (layout.dp * layout.microbatches) < replicas:
        raise Invalid(REASONS[5])


def _expert_gpus(space: Space, layout: Layout) -> int:
    if layout.attention_gpus is not None:
        return space.gpus - layout.attention_gpus
    if layout.attention_dp:
        return space.gpus
    return layout.tp


def _body(
    space: Space,
    kinds: tuple[BlockKind, ...],
    group: str,
    degree: int,
    dp: int,
    overlap: bool,
    moe: tuple[str, int, MoeDispatch] | None = None,
) -> list[Block]:
    model = space.base.model
    blocks = []
    for kind in kinds:
        if kind is BlockKind.MOE:
            where, ep, dispatch = moe or (group, degree * dp, MoeDispatch.BROADCAST)
            blocks.append(Block(kind, where, ep, overlap=overlap, dispatch=dispatch))
        elif kind is BlockKind.ATTENTION:
            blocks.append(
                Block(
                    kind,
                    group,
                    degree,
                    overlap=overlap,
                    dp=dp,
                    kernel=model.attention_kernel,
                    mask=model.attention_mask,
                )
            )
        else:
            blocks.append(Block(kind, group, degree, overlap=overlap, dp=dp))
    return blocks


def _ranges(
    space: Space,
    chunks: list[tuple[int, int, str]],
    degree: int,
    dp: int,
    overlap: bool,
    moe: tuple[str, int, MoeDispatch] | None = None,
) -> tuple[LayerRange, ...]:
    """Layer ranges for chunks (first, last, group): one per run of alike layers, embed
    before layer 0 and lm_head after the last."""
    base = space.base
    kinds = space.layer_kinds()
    last_layer = base.model.layers - 1
    embed = _has(base, BlockKind.EMBED)
    lm_head = _has(base, BlockKind.LM_HEAD)
    ranges: list[LayerRange] = []
    for first, last, group in chunks:
        start = first
        while start <= last:
            end = start
            while end < last and kinds[end + 1] == kinds[start]:
                end += 1
            blocks = _body(space, kinds[start], group, degree, dp, overlap, moe)
            if start == 0 and embed:
                vocab_parallel = degree > 1 and dp == 1
                blocks.insert(
                    0, Block(BlockKind.EMBED, group, 1, vocab_parallel=vocab_parallel, dp=dp)
                )
            if end == last_layer and lm_head:
                blocks.append(Block(BlockKind.LM_HEAD, group, degree, overlap=overlap, dp=dp))
            ranges.append(LayerRange(start, end, tuple(blocks)))
            start = end + 1
    return tuple(ranges)


def _pipelined(
    space: Space, layout: Layout
) -> tuple[tuple[DeviceGroup, ...], tuple[LayerRange, ...]]:
    tp, pp = layout.tp, layout.pp
    names = ["gpus"] if pp == 1 else [f"stage{s}" for s in range(pp)]
    groups = tuple(
        DeviceGroup(name, tuple(range(s * tp, (s + 1) * tp))) for s, name in enumerate(names)
    )
    counts = split_evenly(space.base.model.layers, pp * layout.virtual_stages)
    chunks, first = [], 0
    for c, count in enumerate(counts):
        chunks.append((first, first + count - 1, names[c % pp]))
        first += count
    return groups, _ranges(space, chunks, tp, 1, layout.overlap)


def _replicated(space: Space) -> tuple[tuple[DeviceGroup, ...], tuple[LayerRange, ...]]:
    n = space.gpus
    groups = (DeviceGroup("gpus", tuple(range(n))),)
    last = space.base.model.layers - 1
    return groups, _ranges(space, [(0, last, "gpus")], 1, n, False)


def _separated(space: Space, a: int) -> tuple[tuple[DeviceGroup, ...], tuple[LayerRange, ...]]:
    n = space.gpus
    groups = (
        DeviceGroup("attn", tuple(range(a))),
        DeviceGroup("experts", tuple(range(a, n))),
    )
    last = space.base.model.layers - 1
    moe = ("experts", n - a, MoeDispatch.ROUTED)
    return groups, _ranges(space, [(0, last, "attn")], 1, a, False, moe)


def space_size(space: Space) -> int:
    """How many layouts the space holds (valid or not)."""
    return sum(1 for _ in layouts(space))
