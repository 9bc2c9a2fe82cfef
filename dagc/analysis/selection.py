"""Choosing the cost model: the file's GPU and overrides, then the CLI's options on top.

`cost_model(program, CostOptions(...))` is what `--gpu`, `--set`, `--cost-table`,
`--cost-plugin` and `--matmul-only` build; dagc.api re-exports these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dagc.analysis.costs import CostModel, MatmulOnly, Roofline, RooflineParams
from dagc.diagnostics import did_you_mean, option_error
from dagc.hardware import PRESETS
from dagc.ir.logical import Program


@dataclass(frozen=True)
class CostOptions:
    """How operations are costed (the CLI's --gpu, --set, --cost-table, --cost-plugin...)."""

    gpu: str | None = None
    overrides: dict[str, float] = field(default_factory=dict)
    table: str | os.PathLike[str] | None = None
    plugin: str | os.PathLike[str] | None = None
    matmul_only: bool = False


def _unknown_gpu_help(gpu: str) -> str:
    """How to fix --gpu: another case of a preset's name, or how to describe another GPU.

    No did-you-mean beyond case: GPU names a letter apart are other chips (b100, h100).
    """
    if gpu.lower() in PRESETS:
        return f"did you mean `{gpu.lower()}`?"
    return (
        f"presets: {', '.join(sorted(PRESETS))}; for another GPU, start from one and give its"
        " figures, e.g. --set peak_flops=... --set hbm_bandwidth=... --set memory_bytes=..."
        " (docs/cost-models.md lists them)"
    )


def gpu_preset(program: Program, options: CostOptions | None = None) -> str:
    """The GPU preset's name: --gpu, else the file's."""
    return (options.gpu if options else None) or program.hardware.gpu


def roofline_params(program: Program, options: CostOptions) -> RooflineParams:
    """The roofline parameters: the preset (file or --gpu) with overrides applied."""
    gpu = gpu_preset(program, options)
    if gpu not in PRESETS:
        raise option_error(f"unknown GPU preset `{gpu}`", _unknown_gpu_help(gpu))
    params = RooflineParams.for_gpu(PRESETS[gpu], program.workload.dtype)
    overrides = {**program.hardware.overrides, **options.overrides}
    try:
        return params.with_overrides(overrides)
    except KeyError as error:
        key = str(error.args[0])
        names = RooflineParams.__dataclass_fields__
        raise option_error(
            f"unknown roofline parameter `{key}`",
            did_you_mean(key, names) or f"parameters: {', '.join(names)}",
        ) from None
    except ValueError as error:
        raise option_error(f"bad roofline parameter: {error}", None) from None


def cost_model(
    program: Program, options: CostOptions | None = None
) -> tuple[CostModel, RooflineParams]:
    """The cost model the options describe, and the roofline parameters under it."""
    options = options or CostOptions()
    params = roofline_params(program, options)
    model: CostModel = Roofline(params, program.workload.dtype.bytes)
    model.name = f"roofline ({gpu_preset(program, options)}, {program.workload.dtype.value})"
    if options.table is not None:
        from dagc.analysis.table import TableModel, load_cost_table

        model = TableModel(load_cost_table(options.table), model)
    if options.plugin is not None:
        from dagc.analysis.plugin import load_plugin

        model = load_plugin(options.plugin, model)
    if options.matmul_only:
        model = MatmulOnly(model)
    return model, params
