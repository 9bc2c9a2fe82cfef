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
