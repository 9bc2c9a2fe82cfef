"""GPU presets: the hardware figures the roofline cost model starts from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuPreset:
    """Datasheet figures of one GPU (dense BF16 peak, HBM, NVLink per direction, memory)."""

    name: str
    peak_flops: float
    hbm_bandwidth: float
    nvlink_bandwidth: float
    memory_bytes: float
    network_bandwidth: float = 50e9

    def __post_init__(self) -> None:
        for value in (self.peak_flops, self.hbm_bandwidth, self.nvlink_bandwidth):
            if value <= 0:
                raise ValueError(f"{self.name}: hardware figures must be positive")


PRESETS: dict[str, GpuPreset] = {
    "a100": GpuPreset("a100", 312e12, 2.0e12, 300e9, 80e9),
    "h100": GpuPreset("h100", 989e12, 3.35e12, 450e9, 80e9),
    "h200": GpuPreset("h200", 989e12, 4.8e12, 450e9, 141e9),
}

DEFAULT_GPU = "h100"
DEFAULT_NODE_SIZE = 8


@dataclass(frozen=True, slots=True)
class ParameterRange:
    """The physically sane values of one roofline parameter (both ends included)."""

    low: float
    high: float
    unit: str
    typical: float  # the h100 preset's value, or the default efficiency or latency

    def admits(self, value: float) -> bool:
        return self.low <= value <= self.high  # False for NaN

    def describe(self) -> str:
        return f"between {format_magnitude(self.low)} and {format_magnitude(self.high)} {self.unit}"


# Wide enough for any GPU past, present or plausible, narrow enough that a typo (a tiny peak,
# an efficiency of 70 meant as 70%) cannot turn every time into inf or NaN.
PARAMETER_RANGES: dict[str, ParameterRange] = {
    "peak_flops": ParameterRange(1e9, 1e18, "FLOP/s", 989e12),
    "hbm_bandwidth": ParameterRange(1e8, 1e16, "bytes/s", 3.35e12),
    "nvlink_bandwidth": ParameterRange(1e6, 1e15, "bytes/s", 450e9),
    "network_bandwidth": ParameterRange(1e6, 1e15, "bytes/s", 50e9),
    "memory_bytes": ParameterRange(1e6, 1e15, "bytes", 80e9),
    "matmul_efficiency": ParameterRange(1e-3, 1.0, "(a fraction of the peak)", 0.70),
    "memory_efficiency": ParameterRange(1e-3, 1.0, "(a fraction of the peak)", 0.85),
    "link_efficiency": ParameterRange(1e-3, 1.0, "(a fraction of the peak)", 0.80),
    "nvlink_latency": ParameterRange(1e-9, 1.0, "seconds", 10e-6),
    "network_latency": ParameterRange(1e-9, 1.0, "seconds", 25e-6),
}


def format_magnitude(value: float) -> str:
    """1e+09 as `1e9`, 0.001 as `0.001`, 1.0 as `1`: how people write these figures."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"
