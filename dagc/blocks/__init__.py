"""One module per block kind: what each kind is, asked by the front end, passes and analyses.

`module(kind)` gives a kind's BlockModule (dagc/blocks/base.py). The modules are
attention, mlp, moe, embed and lm_head; the shape helpers they share are in
dagc/blocks/shapes.py.
"""

from __future__ import annotations

from dagc.blocks import attention, embed, lm_head, mlp, moe
from dagc.blocks.base import BlockModule
from dagc.ir.logical import BlockKind

MODULES: dict[BlockKind, BlockModule] = {
    m.MODULE.kind: m.MODULE for m in (embed, attention, mlp, moe, lm_head)
}


def module(kind: BlockKind | str) -> BlockModule:
    """The module of a block kind (`BlockKind.MOE` or `"moe"`)."""
    return MODULES[BlockKind(kind)]


def weight_products() -> frozenset[str]:
    """Step bases whose matrix products read a weight, over every block kind."""
    return frozenset().union(*(m.weight_products for m in MODULES.values()))


__all__ = ["MODULES", "BlockModule", "module", "weight_products"]
