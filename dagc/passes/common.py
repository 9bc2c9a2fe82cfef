"""Helpers shared by the expansion passes (the shape helpers are in dagc.blocks.shapes)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from dagc.ir.logical import BlockKind, Program
from dagc.ir.steps import BlockSteps, Step, StepProgram
from dagc.ir.values import Value

_T = TypeVar("_T")
Rewrite = Callable[[Program, BlockSteps], BlockSteps]


def map_blocks(
    steps: StepProgram, kind: BlockKind, rewrite: object, *, templates: bool = False
) -> StepProgram:
    """Apply `rewrite(program, block) -> BlockSteps` to every block of `kind`.

    With `templates`, `rewrite` must be a function of the program and the block alone (the
    block modules' `compute` is): layers that differ only in their index then rewrite
    alike, and LayerTemplates computes each such block once and relabels it.
    """
    assert callable(rewrite)
    apply = LayerTemplates(steps.program, rewrite).apply if templates else None
    blocks = tuple(
        (apply(block) if apply else rewrite(steps.program, block)) if block.kind == kind else block
        for block in steps.blocks
    )
    return replace(steps, blocks=blocks)


def with_steps(block: BlockSteps, steps: tuple[object, ...]) -> BlockSteps:
    """`block` with other steps."""
    return replace(block, steps=steps)  # type: ignore[arg-type]


# The layer a block is moved to for its key (far from any real one, so that layer − 1 too
# stays a valid value name).
KEY_LAYER = 1_000_000_000

# A layer index inside a value name: `q_l12`, `x_l12_attention`, `o_l12_sum`.
_LAYER_IN_NAME = re.compile(r"_l(\d+)(?=_|$)")


class Relabel:
    """Move steps from layer `old` to layer `new`: each step's layer, and every layer index
    in a value name (`_l{old}` and the previous layer's `_l{old - 1}`, which a block's input
    can name), shift by new − old. A value met twice becomes one relabelled object."""

    def __init__(self, old: int, new: int) -> None:
        self.shift = new - old
        self.layers = (old, old - 1)
        self.values: dict[int, Value] = {}

    def _name(self, match: re.Match[str]) -> str:
        layer = int(match.group(1))
        return f"_l{layer + self.shift}" if layer in self.layers else match.group(0)

    def value(self, value: Value) -> Value:
        done = self.values.get(id(value))
        if done is None:
            name = _LAYER_IN_NAME.sub(self._name, value.name)
            done = value if name == value.name else _copy(value, name=name)
            self.values[id(value)] = done
        return done

    def step(self, step: Step) -> Step:
        layer = step.layer + self.shift if step.layer in self.layers else step.layer
        return _copy(
            step,
            layer=layer,
            reads=tuple(self.value(v) for v in step.reads),
            writes=tuple(self.value(v) for v in step.writes),
        )

    def steps(self, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        return tuple(self.step(step) for step in steps)

    def text(self, name: str) -> str:
        return _LAYER_IN_NAME.sub(self._name, name)


class LayerTemplates:
    """`rewrite` applied to blocks, computed once per block that differs from an earlier one
    only in its layer index.

    Deep programs repeat the same block thousands of times; the block modules' Python per
    block made expansion cost about 1.5 ms a layer whatever its width. A block is keyed by
    itself moved to KEY_LAYER (Relabel: its steps' layers and the layer indices of its value
    names; spans are part of the key, since they are copied into steps). The first block
    of a key is computed and kept; the second is computed too and checked against the
    first's result relabelled to its layer: when they agree, later blocks of the key are
    relabelled rather than computed, and when they do not (a rewrite whose result depends
    on the layer in another way), every block of the key is computed. Results are equal
    (`==`, spans included) to computing every block.
    """

    def __init__(self, program: Program, rewrite: object) -> None:
        assert callable(rewrite)
        self.program = program
        self.rewrite: Rewrite = rewrite
        # key -> (layer, its result), and whether relabelling was checked on a second block
        self.seen: dict[object, tuple[int, BlockSteps]] = {}
        self.checked: dict[object, bool] = {}

    def _key(self, block: BlockSteps) -> object:
        to_key = Relabel(block.layer, KEY_LAYER)
        normal = replace(
            block,
            layer=KEY_LAYER,
            input_value=to_key.text(block.input_value),
            steps=to_key.steps(block.steps),
        )
        return normal, block.span, tuple(step.span for step in block.steps)

    def _relabelled(self, block: BlockSteps, layer: int, result: BlockSteps) -> BlockSteps:
        move = Relabel(layer, block.layer)
        return replace(
            result,
            layer=block.layer,
            input_value=block.input_value,
            steps=move.steps(result.steps),
        )

    def apply(self, block: BlockSteps) -> BlockSteps:
        key = self._key(block)
        known = self.seen.get(key)
        if known is None:
            result = self.rewrite(self.program, block)
            self.seen[key] = (block.layer, result)
            return result
        layer, earlier = known
        verdict = self.checked.get(key)
        if verdict:
            return self._relabelled(block, layer, earlier)
        result = self.rewrite(self.program, block)
        if verdict is None:
            guess = self._relabelled(block, layer, earlier)
            self.checked[key] = guess == result and _spans(guess) == _spans(result)
        return result


def _copy(item: _T, **changes: object) -> _T:
    """`dataclasses.replace` for a frozen dataclass with slots, without running its
    `__init__` checks again: only for changes that keep it valid (a relabelled layer)."""
    new = object.__new__(type(item))
    for name in type(item).__slots__:  # type: ignore[attr-defined]
        object.__setattr__(new, name, changes[name] if name in changes else getattr(item, name))
    return new


def _spans(block: BlockSteps) -> tuple[object, ...]:
    return block.span, tuple(step.span for step in block.steps)
