"""Values: the tensors the steps of the step IR read and write, typed and placed.

A Value is one tensor of one micro-batch: a name unique in the step program (`q_l3`), a
logical shape of labelled dims (tokens, hidden, heads, head_dim, ffn, experts, ...), a dtype,
the GPUs it lives on, and a placement over them:

- replicated: every GPU holds the whole tensor;
- split along a named dim: rank i holds split(n, p)[i] of its n entries (dagc.split);
- partial: every GPU holds a tensor of the whole shape, and the value is their sum, still
  awaiting a reduction (the output of a tensor-parallel o_proj or mlp_down).

Values are per step of the template, never per device operation: the microbatch pass joins
the writer of a value to its readers, and the step verifier type-checks them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

from dagc.split import split_evenly

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlacementKind(enum.Enum):
    """How a value is laid out over its GPUs; see the module docstring."""

    REPLICATED = "replicated"
    SPLIT = "split"
    PARTIAL = "partial"


@dataclass(frozen=True, slots=True)
class Placement:
    """A placement: replicated, partial, or split along the dim named `dim`."""

    kind: PlacementKind
    dim: str = ""

    def __post_init__(self) -> None:
        if (self.kind is PlacementKind.SPLIT) != bool(self.dim):
            verb = "takes no" if self.dim else "needs a"
            raise ValueError(f"a {self.kind.value} placement {verb} dim")

    def __str__(self) -> str:
        return f"split({self.dim})" if self.kind is PlacementKind.SPLIT else self.kind.value


REPLICATED = Placement(PlacementKind.REPLICATED)
PARTIAL = Placement(PlacementKind.PARTIAL)


def split(dim: str) -> Placement:
    """Split along `dim`: rank i of p holds split(n, p)[i] of its n entries."""
    return Placement(PlacementKind.SPLIT, dim)


@dataclass(frozen=True, slots=True)
class Dim:
    """One labelled dimension of a logical shape (`heads`, 64)."""

    name: str
    size: int

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bad dim name {self.name!r}")
        if self.size < 1:
            raise ValueError(f"dim {self.name} has size {self.size}")

    def __str__(self) -> str:
        return f"{self.name}={self.size}"


@dataclass(frozen=True, slots=True)
class Value:
    """A tensor of one micro-batch; see the module docstring."""

    name: str
    dims: tuple[Dim, ...]
    dtype: str
    gpus: tuple[int, ...]
    placement: Placement = REPLICATED

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"bad value name {self.name!r}")
        if not self.dims:
            raise ValueError(f"value {self.name} has no dims")
        names = [dim.name for dim in self.dims]
        if len(set(names)) != len(names):
            raise ValueError(f"value {self.name} names a dim twice: {names}")
        if not self.gpus or len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"value {self.name} needs distinct GPUs, has {list(self.gpus)}")
        if self.placement.kind is PlacementKind.SPLIT and self.placement.dim not in names:
            raise ValueError(f"value {self.name} is split along {self.placement.dim}, not a dim")

    def local_sizes(self, rank: int) -> tuple[int, ...]:
        """The sizes of the dims rank `rank` holds (split(n, p)[rank] along a split dim)."""
        split_dim = self.placement.dim if self.placement.kind is PlacementKind.SPLIT else None
        return tuple(
            split_evenly(dim.size, len(self.gpus))[rank] if dim.name == split_dim else dim.size
            for dim in self.dims
        )

    def on(self, gpus: tuple[int, ...]) -> Value:
        """The same tensor living on other GPUs (a symmetric collapse keeps some of them)."""
        return replace(self, gpus=gpus)

    def describe(self) -> str:
        """Name, shape, dtype and placement, for error messages."""
        shape = ", ".join(str(dim) for dim in self.dims)
        return f"{self.name}[{shape}] {self.dtype} {self.placement} on {list(self.gpus)}"

    def __str__(self) -> str:
        return self.name


# The dtype of a dropout mask: one byte per element (Megatron-LM keeps its masks as bytes).
MASK_DTYPE = "u8"


def residual_name(kind: str, layer: int) -> str:
    """The residual-stream value a block of `kind` in `layer` writes (`x_l3_attention`)."""
    return f"x_l{layer}_{kind}"
