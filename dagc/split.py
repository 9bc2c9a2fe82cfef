"""The splitting rule shared by every sharded dimension."""

from __future__ import annotations


def split_evenly(items: int, parts: int) -> list[int]:
    """Split `items` over `parts` ranks: rank i gets floor(n/p) + (1 if i < n mod p else 0)."""
    if parts <= 0:
        raise ValueError(f"cannot split over {parts} parts")
    base, extra = divmod(items, parts)
    return [base + (1 if rank < extra else 0) for rank in range(parts)]
