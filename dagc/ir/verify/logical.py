"""Invariants of the logical IR (Program).

- Layers: the ranges, in order, place layers 0, 1, ..., L-1, each exactly once.
- Groups: names are unique; each lists at least one GPU, none twice, none negative.
- Blocks: every block runs on a known group; a block with a parallel degree (tp, ep) has
  degree × dp equal to its group's size (dp replicas: attention data parallelism, only
  with tp = 1 and outside training); a moe block's experts divide evenly over its ranks.
- Dimensions: every block kind used has the model sizes it needs (heads for attention, ffn
  for mlp, experts, top_k and expert_ffn for moe, vocab for lm_head).
"""

from __future__ import annotations

from dagc.ir.logical import Block, BlockKind, LayerRange, Program
from dagc.ir.verify.errors import VerificationError

# The model fields each block kind reads; the front end fills defaults (kv_heads, head_dim,
# expert_ffn) before the IR is built, so none may be missing here.
_NEEDS = {
    BlockKind.ATTENTION: ("heads", "head_dim", "kv_heads"),
    BlockKind.MLP: ("ffn",),
    BlockKind.MOE: ("experts", "top_k", "expert_ffn"),
    BlockKind.LM_HEAD: ("vocab",),
}


def verify_logical(program: Program) -> None:
    """Check the logical IR's invariants; raise VerificationError naming the culprit."""
    _check_groups(program)
    _check_layers(program)
    sizes = {group.name: group.size for group in program.groups}
    for layer_range in program.ranges:
        for block in layer_range.blocks:
            _check_block(program, layer_range, block, sizes)


def _where(layer_range: LayerRange, block: Block) -> str:
    return f"{block.kind.value} block of layers {layer_range.first}..{layer_range.last}"


def _check_groups(program: Program) -> None:
    seen: set[str] = set()
    for group in program.groups:
        if group.name in seen:
            raise VerificationError(f"group @{group.name} is defined twice")
        seen.add(group.name)
        if not group.gpus or len(set(group.gpus)) != len(group.gpus) or min(group.gpus) < 0:
            raise VerificationError(f"group @{group.name} has GPUs {list(group.gpus)}")


def _check_layers(program: Program) -> None:
    """The ranges place 0..L-1 once each, in order: range k starts where k-1 ended."""
    expected = 0
    for layer_range in program.ranges:
        if layer_range.first != expected or layer_range.last < layer_range.first:
            raise VerificationError(
                f"layers {layer_range.first}..{layer_range.last} placed where layer"
                f" {expected} is expected next"
            )
        expected = layer_range.last + 1
    if expected != program.model.layers:
        raise VerificationError(
            f"layers 0..{expected - 1} placed, the model has {program.model.layers}"
        )


def _check_block(
    program: Program, layer_range: LayerRange, block: Block, sizes: dict[str, int]
) -> None:
    where = _where(layer_range, block)
    if block.group not in sizes:
        raise VerificationError(f"{where} runs on unknown group @{block.group}")
    if block.kind.degree_key and block.degree * block.dp != sizes[block.group]:
        replicas = f" x dp={block.dp}" if block.dp > 1 else ""
        raise VerificationError(
            f"{where} has {block.kind.degree_key}={block.degree}{replicas} but group"
            f" @{block.group} has {sizes[block.group]} GPUs"
        )
    if block.dp > 1 and (block.degree > 1 or program.training is not None):
        raise VerificationError(f"{where} has dp={block.dp} with tp > 1 or in training")
    missing = [name for name in _NEEDS.get(block.kind, ()) if getattr(program.model, name) is None]
    if missing:
        raise VerificationError(f"{where} needs model {', '.join(missing)}")
    experts = program.model.experts
    if block.kind is BlockKind.MOE and experts is not None and experts % block.degree:
        raise VerificationError(f"{where}: {experts} experts do not divide over ep={block.degree}")
