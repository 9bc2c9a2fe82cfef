"""A stand-in for dagc.backends.dagfile.program_to_dag until it lands (delete on merge).

It writes the Programs dagc.search builds (no decode_ranges, kv_handoff or roofline
overrides) as .dag text that compiles back to them.
"""

from __future__ import annotations

from dagc.ir.logical import (
    Block,
    BlockKind,
    LayerRange,
    Mode,
    Model,
    MoeDispatch,
    Program,
    format_gpus,
)

_MODEL_FIELDS = (
    "layers", "hidden", "heads", "head_dim", "kv_heads", "ffn", "activation", "experts",
    "top_k", "expert_ffn", "capacity_factor", "vocab", "attention_kernel", "attention_mask",
    "qkv_bias", "o_bias", "qk_norm", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "shared_experts", "shared_expert_ffn",
    "shared_expert_gate", "router_bias", "tied_embeddings", "attention_dropout",
    "hidden_dropout",
)  # fmt: skip


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "value"):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _model(model: Model) -> list[str]:
    default = Model(name=model.name, layers=1, hidden=1)
    lines = [f"model {model.name} {{"]
    for name in _MODEL_FIELDS:
        value = getattr(model, name)
        if name not in ("layers", "hidden") and (value is None or value == getattr(default, name)):
            continue
        if name == "capacity_factor" and model.experts is None:
            continue
        if name in ("head_dim", "kv_heads") and model.latent_attention:
            continue
        lines.append(f"  {name} = {_value(value)}")
    return [*lines, "}"]


def _block(block: Block, group: str) -> str:
    text = block.kind.value
    if block.group != group:
        text += f" on {block.group}"
    if block.kind.degree_key:
        text += f" {block.kind.degree_key}={block.degree}"
    if block.dp > 1:
        text += f" dp={block.dp}"
    if block.kind is BlockKind.ATTENTION:
        text += f" kernel={block.kernel.value} mask={block.mask.value}"
    if block.fused_qkv:
        text += " fused_qkv"
    if block.dispatch is not MoeDispatch.BROADCAST:
        text += f" dispatch={block.dispatch.value}"
    if block.vocab_parallel:
        text += " vocab_parallel"
    if block.overlap:
        text += " overlap"
    return text


def _ranges(ranges: tuple[LayerRange, ...]) -> list[str]:
    lines: list[str] = []
    for layer_range in ranges:
        group = layer_range.blocks[0].group
        span = f"{layer_range.first}..{layer_range.last}"
        lines.append(f"layers {span} on {group} {{")
        lines += [f"  {_block(block, group)}" for block in layer_range.blocks]
        lines.append("}")
    return lines


def program_to_dag(program: Program) -> str:
    """The program as .dag text (the subset dagc.search builds)."""
    if program.decode_ranges or program.kv_handoff or program.hardware.overrides:
        raise NotImplementedError("the stub writes only the layouts dagc.search builds")
    w = program.workload
    shape = [f"batch = {w.batch}"]
    if w.mode is Mode.DECODE:
        shape = ["mode = decode", *shape, f"context = {w.context}"]
    elif w.mode is Mode.SERVE:
        shape = ["mode = serve", *shape, f"input = {w.seq}", f"output = {w.output}"]
    else:
        shape.append(f"seq = {w.seq}")
    shape += [f"dtype = {w.dtype.value}", f"microbatches = {w.microbatches}"]
    lines = [*_model(program.model), "", f"workload {{ {'; '.join(shape)} }}", ""]
    t = program.training
    if t is not None:
        lines += [
            f"training {{ dp = {t.dp}; schedule = {t.schedule.value};"
            f" virtual_stages = {t.virtual_stages}; recompute = {t.recompute.value};"
            f" sequence_parallel = {_value(t.sequence_parallel)}; zero = {t.zero};"
            f" grad_overlap = {_value(t.grad_overlap)} }}",
            "",
        ]
    hw = program.hardware
    lines += ["devices {", f"  gpu = {hw.gpu}", f"  node_size = {hw.node_size}"]
    if hw.split_sends:
        lines.append("  split_sends = true")
    lines += [f"  group {g.name} = {format_gpus(g.gpus)}" for g in program.groups]
    lines += ["}", "", *_ranges(program.ranges)]
    return "\n".join(lines) + "\n"
