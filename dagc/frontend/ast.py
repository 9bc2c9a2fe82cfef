"""The syntax tree of a .dag file: what was written, with positions, before any checks."""

from __future__ import annotations

from dataclasses import dataclass

from dagc.source import Span


@dataclass(frozen=True, slots=True)
class Ident:
    """A name as written, e.g. a key, a group or a block kind."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Value:
    """A literal value: an int, a float, or a bare name such as `bf16`."""

    value: int | float | str
    span: Span

    @property
    def kind(self) -> str:
        """'integer', 'number' or 'name', as users would call it."""
        if isinstance(self.value, bool):
            return "name"
        if isinstance(self.value, int):
            return "integer"
        if isinstance(self.value, float):
            return "number"
        return "name"


@dataclass(frozen=True, slots=True)
class Setting:
    """`key = value` inside a section or after a block kind; a bare flag has value None."""

    key: Ident
    value: Value | None

    @property
    def span(self) -> Span:
        end = self.value.span if self.value else self.key.span
        return Span(self.key.span.line, self.key.span.column, end.end_line, end.end_column)


@dataclass(frozen=True, slots=True)
class Section:
    """`model NAME { ... }`, `workload { ... }` or the settings part of `devices { ... }`."""

    keyword: str
    name: Ident | None
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Member:
    """One entry of a GPU list: a single id (first == last) or an inclusive range."""

    first: int
    last: int
    span: Span


@dataclass(frozen=True, slots=True)
class GroupDecl:
    """`group NAME = gpu[...]`."""

    name: Ident
    device_kind: Ident
    members: tuple[Member, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class DevicesDecl:
    """`devices { ... }`: groups and hardware settings."""

    groups: tuple[GroupDecl, ...]
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class BlockDecl:
    """`KIND [on GROUP] [key=value | flag ...]` inside a `layers` statement."""

    kind: Ident
    group: Ident | None
    options: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class LayersDecl:
    """`layers A..B [on G1, G2, ...] [pp=N] { blocks }`."""

    first: int
    last: int
    range_span: Span
    groups: tuple[Ident, ...]
    options: tuple[Setting, ...]
    blocks: tuple[BlockDecl, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class File:
    """A whole .dag file, statements in source order."""

    models: tuple[Section, ...]
    workloads: tuple[Section, ...]
    devices: tuple[DevicesDecl, ...]
    layers: tuple[LayersDecl, ...]
    trainings: tuple[Section, ...] = ()  # `training { ... }`: the file plans a training run


def dump(node: object, indent: int = 0) -> str:
    """A deterministic, indented text form of an AST node (for `--emit ast`)."""
    pad = "  " * indent
    if isinstance(node, Ident):
        return f"{pad}{node.text!r} @{node.span.line}:{node.span.column}"
    if isinstance(node, Value):
        return f"{pad}{node.value!r} @{node.span.line}:{node.span.column}"
    if isinstance(node, Member):
        text = str(node.first) if node.first == node.last else f"{node.first}..{node.last}"
        return f"{pad}{text} @{node.span.line}:{node.span.column}"
    if isinstance(node, tuple):
        return "\n".join(dump(item, indent) for item in node) if node else f"{pad}()"
    if node is None or isinstance(node, (int, str)):
        return f"{pad}{node!r}"
    lines = [f"{pad}{type(node).__name__}"]
    for name in node.__dataclass_fields__:  # type: ignore[attr-defined]
        if name in ("span", "range_span"):
            continue
        value = getattr(node, name)
        if isinstance(value, tuple) and value:
            lines.append(f"{pad}  {name}:")
            lines.append(dump(value, indent + 2))
        elif isinstance(value, (Ident, Value, Member)):
            lines.append(f"{pad}  {name}: {dump(value).strip()}")
        elif isinstance(value, (Section, DevicesDecl, Setting, GroupDecl, BlockDecl, LayersDecl)):
            lines.append(f"{pad}  {name}:")
            lines.append(dump(value, indent + 2))
        else:
            lines.append(f"{pad}  {name}: {value!r}")
    return "\n".join(lines)
