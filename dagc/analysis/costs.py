"""Cost models: seconds for each cost term.

A cost model maps every distinct CostTerm of a device DAG to seconds; numpy then gathers the
per-operation costs. Built-in models:

- `Roofline` (the default): from a GPU preset and efficiencies;
- `TableModel` (`--cost-table`): measured Get_Time points, see dagc.analysis.table;
- `PluginModel` (`--cost-plugin`): a user's Python functions override any terms;
- `MatmulOnly` (`--matmul-only`): only matrix products cost time, as in the seed analysis.

Every model also gives a *namespace*: the cost functions under the names formulas print
(`Get_Time`, `Elem_Time`, ...), so that a printed Python formula evaluates to the same number.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from dagc.hardware import PARAMETER_RANGES, PRESETS, GpuPreset
from dagc.ir.logical import DType
from dagc.ir.terms import CostTerm, TermKind

CostFunction = Callable[..., float]

# No single operation takes longer: a cost above it is a unit mistake (ms for s, FLOPs for
# seconds), and would let sums over millions of operations overflow towards inf.
MAX_TERM_SECONDS = 1e9

# The Python name users give each term's function in a cost plugin.
PLUGIN_NAMES: dict[TermKind, str] = {
    TermKind.MATMUL: "get_time",
    TermKind.ELEMENTWISE: "elem_time",
    TermKind.ALL_REDUCE: "all_reduce_time",
    TermKind.ALL_TO_ALL: "all_to_all_time",
    TermKind.ALL_GATHER: "all_gather_time",
    TermKind.REDUCE_SCATTER: "reduce_scatter_time",
    TermKind.BROADCAST: "broadcast_time",
    TermKind.P2P: "p2p_time",
    TermKind.ATTENTION: "attn_time",
    TermKind.CAUSAL_ATTENTION: "causal_attn_time",
    TermKind.ATTENTION_BWD: "attn_bwd_time",
    TermKind.CAUSAL_ATTENTION_BWD: "causal_attn_bwd_time",
    TermKind.OPTIMIZER: "adam_time",
    TermKind.DECODE_ATTENTION: "decode_attn_time",
    TermKind.LATENT_DECODE_ATTENTION: "mla_decode_attn_time",
    TermKind.BATCHED_MATMUL: "bmm_time",
}


@dataclass(frozen=True)
class Extrapolated:
    """Matrix products a measured table did not cover, and how they were priced instead.

    `ranges` holds the table's (smallest, largest) m, k and n; `terms` the distinct
    Get_Time terms outside them, which `fallback` priced; `raised` and `lowered` those of
    them moved to the table's value at its nearest edge (so that Get_Time stays monotone);
    `priced` counts every distinct Get_Time term the table model was asked for.
    """

    table: str
    ranges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    fallback: str
    terms: frozenset[CostTerm]
    raised: frozenset[CostTerm]
    lowered: frozenset[CostTerm]
    priced: int


class CostModel:
    """Base class: subclasses implement `term_seconds`; `namespace` follows from it."""

    name = "cost model"

    def extrapolated(self) -> Extrapolated | None:
        """Products priced outside a measured table so far (None: there were none)."""
        return None

    def term_seconds(self, term: CostTerm) -> float:
        raise NotImplementedError

    def term_costs(self, terms: Sequence[CostTerm]) -> npt.NDArray[np.float64]:
        """Seconds of each term, as an array indexed like `terms`."""
        return np.asarray([self.term_seconds(t) for t in terms], dtype=np.float64)

    def notes(self) -> list[str]:
        """What a report should say about this model (e.g. extrapolated points)."""
        return []

    def namespace(self) -> dict[str, CostFunction]:
        """The cost functions under the names formulas print."""

        def function(kind: TermKind) -> CostFunction:
            def cost(*args: int, nodes: int = 1) -> float:
                return self.term_seconds(CostTerm(kind, tuple(int(a) for a in args), nodes))

            return cost

        return {kind.value: function(kind) for kind in TermKind if kind is not TermKind.SYNC} | {
            "Sync": lambda: 0.0
        }


@dataclass(frozen=True)
class RooflineParams:
    """Hardware figures and efficiencies of the roofline model (all overridable).

    Bandwidths in bytes/s, peak in FLOP/s (dense, for the workload's dtype), latencies in s.
    """

    peak_flops: float
    hbm_bandwidth: float
    nvlink_bandwidth: float
    network_bandwidth: float
    memory_bytes: float
    matmul_efficiency: float = 0.70
    memory_efficiency: float = 0.85
    link_efficiency: float = 0.80
    nvlink_latency: float = 10e-6
    network_latency: float = 25e-6

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = PARAMETER_RANGES[f.name]
            if not allowed.admits(value):
                raise ValueError(f"{f.name} must be {allowed.describe()}, not {value:g}")

    @classmethod
    def for_gpu(cls, preset: GpuPreset, dtype: DType) -> RooflineParams:
        """Parameters of a preset; the peak scales with the dtype's tensor-core rate."""
        return cls(
            peak_flops=preset.peak_flops * dtype_speedup(preset, dtype),
            hbm_bandwidth=preset.hbm_bandwidth,
            nvlink_bandwidth=preset.nvlink_bandwidth,
            network_bandwidth=preset.network_bandwidth,
            memory_bytes=preset.memory_bytes,
        )

    def with_overrides(self, overrides: dict[str, float]) -> RooflineParams:
        """A copy with some fields replaced (unknown names raise KeyError)."""
        known = {f.name for f in fields(self)}
        for key in overrides:
            if key not in known:
                raise KeyError(key)
        return replace(self, **overrides)


def dtype_speedup(preset: GpuPreset, dtype: DType) -> float:
    """Tensor-core rate of `dtype` relative to BF16: FP8 2x on Hopper, FP32 (TF32) 0.5x."""
    if dtype is DType.FP8:
        return 2.0 if preset.name in ("h100", "h200") else 1.0
    if dtype is DType.FP32:
        return 0.5
    return 1.0


# nccl-tests bus-bandwidth factors: time = bytes * factor / link bandwidth.
def bus_factor(kind: TermKind, ranks: int) -> float:
    """The nccl-tests factor for a collective of `ranks` ranks."""
    if kind is TermKind.ALL_REDUCE:
        return 2 * (ranks - 1) / ranks
    if kind is TermKind.ALL_TO_ALL:
        return (ranks - 1) / ranks
    if kind in (TermKind.ALL_GATHER, TermKind.REDUCE_SCATTER):
        # the bytes are one rank's piece; each rank receives the other n − 1 pieces
        return ranks - 1
    return 1.0


class Roofline(CostModel):
    """max(compute, memory) for products; bytes over bandwidth for the rest."""

    name = "roofline"

    def __init__(self, params: RooflineParams, element_bytes: int) -> None:
        self.params = params
        self.element_bytes = element_bytes

    def term_seconds(self, term: CostTerm) -> float:
        p = self.params
        if term.kind.does_products:  # a fused attention kernel is priced like a product
            compute = term.flops() / (p.peak_flops * p.matmul_efficiency)
            memory = term.bytes_moved(self.element_bytes) / (p.hbm_bandwidth * p.memory_efficiency)
            return max(compute, memory)
        if term.kind in (TermKind.ELEMENTWISE, TermKind.OPTIMIZER):
            return term.bytes_moved(self.element_bytes) / (p.hbm_bandwidth * p.memory_efficiency)
        if term.kind is TermKind.SYNC:
            return 0.0
        inter_node = term.nodes > 1
        bandwidth = p.network_bandwidth if inter_node else p.nvlink_bandwidth
        latency = p.network_latency if inter_node else p.nvlink_latency
        ranks = term.args[1] if len(term.args) > 1 else 2
        factor = bus_factor(term.kind, ranks)
        return latency + term.args[0] * factor / (bandwidth * p.link_efficiency)


class MatmulOnly(CostModel):
    """Only matrix products (and fused attention kernels, which are two products in one)
    cost time (the seed's accounting); the rest costs 0."""

    def __init__(self, base: CostModel) -> None:
        self.base = base
        self.name = f"{base.name}, matmul only"

    def term_seconds(self, term: CostTerm) -> float:
        return self.base.term_seconds(term) if term.kind.does_products else 0.0

    def notes(self) -> list[str]:
        return [*self.base.notes(), "matmul only: every other operation costs 0"]

    def extrapolated(self) -> Extrapolated | None:
        return self.base.extrapolated()


class PluginModel(CostModel):
    """A user's functions (by PLUGIN_NAMES) override the base model's terms."""

    def __init__(self, base: CostModel, functions: dict[TermKind, CostFunction], path: str) -> None:
        self.base = base
        self.functions = functions
        self.path = path
        overridden = ", ".join(PLUGIN_NAMES[k] for k in sorted(functions, key=lambda k: k.value))
        self.name = f"{base.name} + plugin {path} ({overridden})"

    def term_seconds(self, term: CostTerm) -> float:
        function = self.functions.get(term.kind)
        if function is None:
            return self.base.term_seconds(term)
        return float(self.call(function, term))

    @staticmethod
    def call(function: CostFunction, term: CostTerm) -> Any:
        """What the user's function returns for `term`, unchecked.

        Communication functions get `nodes=` only when they take it (a `nodes` parameter or
        `**kwargs`), so `def all_reduce_time(bytes, n)` works as the term's name suggests.
        """
        if term.kind.is_communication and _takes_nodes(function):
            return function(*term.args, nodes=term.nodes)
        return function(*term.args)

    def notes(self) -> list[str]:
        return self.base.notes()

    def extrapolated(self) -> Extrapolated | None:
        # A plugin's get_time leaves the table unasked, and then nothing is outside it.
        return self.base.extrapolated()


def _takes_nodes(function: CostFunction) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): pass it
        return True
    return any(p.name == "nodes" or p.kind is p.VAR_KEYWORD for p in parameters)


def roofline_for(gpu: str, dtype: DType, overrides: dict[str, float] | None = None) -> Roofline:
    """The roofline model of preset `gpu` for `dtype`, with optional parameter overrides."""
    params = RooflineParams.for_gpu(PRESETS[gpu], dtype)
    if overrides:
        params = params.with_overrides(overrides)
    return Roofline(params, dtype.bytes)
