"""Measuring matrix-product times for the table cost model (`dagc profile`).

`profile_matmul` times C = A @ B for A [m, k] and B [k, n] on every point of a grid: in bf16 on
a CUDA GPU through PyTorch when both are there, else in float32 on the CPU through numpy.
`write_cost_table` writes the result as the CSV that `dagc.analysis.table` reads.
"""

from __future__ import annotations

import importlib
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dagc.diagnostics import option_error

Row = tuple[int, int, int, float]
Grid = tuple[Sequence[int], Sequence[int], Sequence[int]]
Progress = Callable[[int, int, Row], None]
"""Called after each shape with (shapes done, shapes in all, the new row)."""

BACKENDS = ("auto", "numpy", "torch")

# Budgets of the default grids, in FLOPs for one pass over the grid (one run of each shape).
# A run makes repeats + 1 passes (the first warms up). About 90 GFLOP/s on 2 CPU cores puts
# the default CPU run near a minute; an H100 does one GPU pass in about two minutes.
CPU_PASS_FLOPS = 1.5e12
GPU_PASS_FLOPS = 1e17

# One timed run lasts at least this long: tiny products are repeated inside it, so that the
# clock's resolution and launch overheads do not dominate.
_MIN_RUN_SECONDS = {"numpy": 5e-3, "torch": 2e-3}
_MAX_CALLS = 10_000
# The share of free memory one shape may take; larger products run as row blocks.
_MEMORY_SHARE = 0.4


@dataclass(frozen=True)
class Backend:
    """What measures: `numpy` (CPU, float32) or `torch` (CUDA GPU, bf16), and on what device."""

    name: str
    device: str
    dtype: str
    element_bytes: int

    def describe(self) -> str:
        """E.g. `numpy float32 on AMD EPYC (2 cores)`."""
        return f"{self.name} {self.dtype} on {self.device}"


class Measurements(list[Row]):
    """(m, k, n, seconds) rows, and the backend and repeats that measured them."""

    def __init__(self, rows: Iterable[Row], backend: Backend, repeats: int) -> None:
        super().__init__(rows)
        self.backend = backend
        self.repeats = repeats


def _torch() -> Any | None:
    """The torch module if it is installed and sees a CUDA GPU, else None."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def resolve_backend(name: str = "auto") -> Backend:
    """The backend `name` stands for; `auto` is torch with a CUDA GPU, else numpy.

    Asking for `torch` where PyTorch or a CUDA GPU is missing raises DiagnosticError.
    """
    if name not in BACKENDS:
        raise option_error(f"unknown backend `{name}`", "use auto, numpy or torch")
    torch = _torch() if name in ("auto", "torch") else None
    if torch is not None:
        return Backend("torch", str(torch.cuda.get_device_name(0)), "bf16", 2)
    if name == "torch":
        raise option_error(
            "the torch backend needs PyTorch with a CUDA GPU, and none was found",
            "install PyTorch with CUDA support, or measure on the CPU with --backend numpy",
        )
    return Backend("numpy", _cpu_name(), "float32", 4)


def _cpu_name() -> str:
    """The processor's model name and the cores this process may use."""
    name = platform.processor() or platform.machine() or "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    name = line.partition(":")[2].strip()
                    break
    except OSError:
        pass  # not Linux: keep platform's answer
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def default_grid(backend: Backend) -> Grid:
    """Powers of two suited to the backend, trimmed to its FLOP budget.

    CPU: m 256..8192, k and n 256..4096; GPU: m 256..2^22, k and n 256..32768. While one
    pass over the grid costs more than the budget, the largest value of the axis whose
    removal saves the most is dropped, so the grid stays full (a table must be a full grid).
    """
    if backend.name == "torch":
        axes = [_powers(256, 2**22), _powers(256, 32768), _powers(256, 32768)]
        budget = GPU_PASS_FLOPS
    else:
        axes = [_powers(256, 8192), _powers(256, 4096), _powers(256, 4096)]
        budget = CPU_PASS_FLOPS
    while grid_flops(axes) > budget and any(len(axis) > 1 for axis in axes):
        # Dropping an axis's top value removes the share top/sum of the pass's FLOPs.
        axis = max(
            (a for a in range(3) if len(axes[a]) > 1), key=lambda a: axes[a][-1] / sum(axes[a])
        )
        axes[axis] = axes[axis][:-1]
    return (axes[0], axes[1], axes[2])


def _powers(low: int, high: int) -> list[int]:
    return [2**e for e in range(low.bit_length() - 1, high.bit_length())]


def grid_flops(grid: Sequence[Sequence[int]]) -> float:
    """FLOPs of one pass over the grid: the sum of 2·m·k·n over its points."""
    ms, ks, ns = grid
    return 2.0 * sum(ms) * sum(ks) * sum(ns)


def parse_sizes(text: str, option: str) -> list[int]:
    """`256,512,1024` as a sorted list of distinct positive integers; else DiagnosticError."""
    values: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) == 0:
            raise option_error(
                f"{option} expects positive whole numbers separated by commas, got `{item}`",
                f"e.g. {option} 256,512,1024",
            )
        values.add(int(item))
    return sorted(values)


def profile_matmul(
    grid: Grid | None = None,
    *,
    backend: str | Backend = "auto",
    repeats: int = 3,
    progress: Progress | None = None,
) -> Measurements:
    """Time C = A @ B for every (m, k, n) of the grid (the backend's default when None).

    Each shape is warmed up once, then run `repeats` times; its seconds are the median run.
    Rows come in increasing m, then k, then n order.
    """
    chosen = backend if isinstance(backend, Backend) else resolve_backend(backend)
    if repeats < 1:
        raise option_error(f"repeats must be at least 1, got {repeats}", "e.g. --repeats 3")
    axes = [sorted(set(axis)) for axis in (grid or default_grid(chosen))]
    if not all(axes) or any(v <= 0 for axis in axes for v in axis):
        raise option_error("every grid axis needs positive sizes", "e.g. --m 256,512")
    timer = _TorchTimer() if chosen.name == "torch" else _NumpyTimer()
    shapes = list(product(*axes))
    rows = Measurements([], chosen, repeats)
    for m, k, n in shapes:
        row = (m, k, n, timer.measure(m, k, n, repeats))
        rows.append(row)
        if progress is not None:
            progress(len(rows), len(shapes), row)
    return rows


class _Timer:
    """Times one shape: allocate, warm up, pick calls per run, take the median of runs."""

    backend = "numpy"
    element_bytes = 4

    def __init__(self) -> None:
        self.memory = self._free_memory() * _MEMORY_SHARE
        self._prepare([256], 256, 256)(3)  # start the library (threads, handles) untimed

    def measure(self, m: int, k: int, n: int, repeats: int) -> float:
        """Median seconds of one product of [m, k] x [k, n]."""
        blocks = self._row_blocks(m, k, n)
        run = self._prepare(blocks, k, n)
        warm = run(1)  # the first run pays for kernel choice, clocks and page faults
        calls = min(_MAX_CALLS, max(1, math.ceil(_MIN_RUN_SECONDS[self.backend] / max(warm, 1e-9))))
        times = [run(calls) / calls for _ in range(repeats)]
        return max(statistics.median(times), 1e-12)  # a table holds positive times only

    def _row_blocks(self, m: int, k: int, n: int) -> list[int]:
        """Rows of A per product call: all of m, or blocks when A and C would not fit."""
        width = self.element_bytes
        room = self.memory - k * n * width
        rows = int(room // ((k + n) * width)) if room > 0 else 0
        if rows < 1:
            raise option_error(
                f"B [{k}, {n}] does not fit in the memory this run may use",
                "measure smaller k and n",
            )
        rows = min(rows, m)
        return [rows] * (m // rows) + ([m % rows] if m % rows else [])

    def _free_memory(self) -> float:
        raise NotImplementedError

    def _prepare(self, blocks: list[int], k: int, n: int) -> Callable[[int], float]:
        """A function that runs the product `calls` times and returns the seconds taken."""
        raise NotImplementedError


class _NumpyTimer(_Timer):
    backend = "numpy"
    element_bytes = 4

    def _free_memory(self) -> float:
        try:
            return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 2.0**31

    def _prepare(self, blocks: list[int], k: int, n: int) -> Callable[[int], float]:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((blocks[0], k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((blocks[0], n), dtype=np.float32)

        def run(calls: int) -> float:
            start = time.perf_counter()
            for _ in range(calls):
                for rows in blocks:
                    np.matmul(a[:rows], b, out=c[:rows])
            return time.perf_counter() - start

        return run


class _TorchTimer(_Timer):
    backend = "torch"
    element_bytes = 2

    def __init__(self) -> None:
        self.torch: Any = importlib.import_module("torch")
        super().__init__()

    def _free_memory(self) -> float:
        free, _total = self.torch.cuda.mem_get_info()
        return float(free)

    def _prepare(self, blocks: list[int], k: int, n: int) -> Callable[[int], float]:
        torch = self.torch
        options = {"dtype": torch.bfloat16, "device": "cuda"}
        a = torch.randn(blocks[0], k, **options)
        b = torch.randn(k, n, **options)
        c = torch.empty(blocks[0], n, **options)

        def run(calls: int) -> float:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(calls):
                for rows in blocks:
                    torch.mm(a[:rows], b, out=c[:rows])
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end)) / 1000.0  # milliseconds

        return run


def write_cost_table(
    rows: Sequence[Row], path: str | os.PathLike[str], *, backend: Backend | None = None
) -> None:
    """Write rows as a cost table CSV, atomically, with a comment naming what measured them."""
    from dagc.outputs import write_text_atomically as write_atomically

    backend = backend or getattr(rows, "backend", None)
    repeats = getattr(rows, "repeats", None)
    where = f"{backend.name} {backend.device}" if backend else "an unknown device"

    def write(out: TextIO) -> None:
        out.write(f"# measured by dagc profile on {where}\n")
        if backend is not None and repeats is not None:
            out.write(
                f"# C = A @ B in {backend.dtype}; seconds per product, median of {repeats}"
                f" run{'s' if repeats != 1 else ''}\n"
            )
        out.write("m,k,n,seconds\n")
        for m, k, n, seconds in rows:
            out.write(f"{m},{k},{n},{seconds:.6e}\n")

    write_atomically(Path(path), write)


def describe_grid(grid: Grid) -> str:
    """E.g. `m 256..8192 (6), k 256..2048 (4), n 256 (1)`."""
    parts = []
    for name, axis in zip("mkn", grid, strict=True):
        values = sorted(axis)
        span = f"{values[0]}..{values[-1]}" if len(values) > 1 else str(values[0])
        parts.append(f"{name} {span} ({len(values)})")
    return ", ".join(parts)
