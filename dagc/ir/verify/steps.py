"""Invariants of the step IR (StepProgram), after any pass from place to collapse-symmetric.

- Blocks: the compute blocks are the program's blocks in execution order (layer by layer,
  each layer's blocks as written; embed only for layer 0, lm_head only for the last layer),
  each on its group's GPUs.
- Data placement: a block's input lives where the previous compute block left its output; an
  excursion (a moe block reached from another group in the same layer) returns its output
  to its input GPUs; any other block outputs on its own GPUs.
- Steps: a per-GPU step has one cost term per GPU and computes (a product, batched
  product, attention kernel, decode attention, elementwise or optimizer step); a
  joint step has exactly one term and communicates (or is a Sync); no step lists a GPU
  twice; expert steps name one expert per GPU.
- Where steps run: every per-GPU step of a block runs on the block's GPUs, except res2 of an
  excursion, which runs on the input GPUs once insert-transfers has added the excursion's
  transfers, and ln2 and gate of a routed excursion (dispatch=routed), which run on the
  input GPUs, and, in a decode step with fewer active experts than experts, the expert,
  shared expert and expert_agg steps, which run on the ranks with work (`_moe_ranks`);
  collectives join the block's GPUs (a routed excursion's dispatch joins the
  input GPUs and the block's); transfers join
  the right sides (send_stage and broadcast the sending side, recv_stage, recv_moe and
  return the receiving side; kv_send, a disaggregated prefill's KV handoff, its attention
  block's GPUs, the senders).
- KV handoff (a disaggregated serve's prefill, `program.kv_handoff` set, once
  insert-transfers has run): every attention block has exactly one `kv_send_l{l}`, which
  writes only `kv_cache_l{l}`, living on the GPUs of layer l's attention group in the
  decode layout; a program without a handoff has no kv_send.
- Names: the operation names of one micro-batch are unique.
- Values: the sharding type-check of the values steps read and write (verify/values.py).
- Data parallelism: the blocks the data-parallel pass adds (kind `iteration` or
  `param_gather`) are outside the rules above; verify/data_parallel.py checks them.

After collapse-symmetric every GPU set is read restricted to the kept representatives.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction

from dagc.ir.logical import BlockKind, Mode, MoeDispatch, Program
from dagc.ir.steps import BlockSteps, Phase, Step, StepProgram, TransferKind
from dagc.ir.terms import TermKind
from dagc.ir.verify.data_parallel import check_data_parallel, is_dp_block
from dagc.ir.verify.errors import VerificationError
from dagc.ir.verify.values import check_values
from dagc.split import split_evenly

_COMPUTE = frozenset(
    {
        TermKind.MATMUL,
        TermKind.ELEMENTWISE,
        TermKind.ATTENTION,
        TermKind.CAUSAL_ATTENTION,
        TermKind.ATTENTION_BWD,
        TermKind.CAUSAL_ATTENTION_BWD,
        TermKind.OPTIMIZER,
        TermKind.DECODE_ATTENTION,
        TermKind.LATENT_DECODE_ATTENTION,
        TermKind.BATCHED_MATMUL,
    }
)
# Which side of its block each joint step joins: the block's GPUs or its input GPUs.
_JOINT_SIDE = {
    "all_reduce_attn": "gpus",
    "all_reduce_mlp": "gpus",
    "all_reduce_embed": "gpus",
    "dispatch": "gpus",
    "combine": "gpus",
    "broadcast": "input",
    "recv_moe": "gpus",
    "return": "gpus",
    "send_stage": "input",
    "recv_stage": "gpus",
    "gather_stage": "gpus",
    # a disaggregated serve's prefill: each layer's KV cache sent from its attention GPUs
    # (the sending side, the block's) to the decode layout's
    "kv_send": "gpus",
    # sequence parallelism (training): the norm's output gathered, the products' partial
    # sums reduce-scattered, the residual gathered where the next block is not
    # sequence-parallel; in the backward the pairs swapped
    "all_gather_attn": "gpus",
    "all_gather_mlp": "gpus",
    "reduce_scatter_attn": "gpus",
    "reduce_scatter_mlp": "gpus",
    "all_gather_attn_out": "gpus",
    "all_gather_mlp_out": "gpus",
    "reduce_scatter_attn_bwd": "gpus",
    "reduce_scatter_mlp_bwd": "gpus",
    "all_gather_attn_bwd": "gpus",
    "all_gather_mlp_bwd": "gpus",
    "reduce_scatter_attn_out_bwd": "gpus",
    "reduce_scatter_mlp_out_bwd": "gpus",
    # the backward (training): the backward all-reduces (Megatron's f), the all-to-alls'
    # reverses, an excursion's reverse transfers (sent from the other side) and the
    # gradient sends between stages (a backward transfer block's GPUs are its receivers)
    "all_reduce_attn_bwd": "gpus",
    "all_reduce_mlp_bwd": "gpus",
    "all_reduce_moe_bwd": "gpus",
    "all_reduce_head_bwd": "gpus",
    "dispatch_bwd": "gpus",
    "combine_bwd": "gpus",
    "broadcast_bwd": "gpus",
    "return_bwd": "input_side",
    "send_grad_stage": "input",
    "recv_grad_stage": "gpus",
    "gather_grad_stage": "gpus",
}
# Per-GPU steps of the backward that run where the block's output gradient arrives.
_AT_OUTPUT = frozenset({"loss_bwd"})
_BACKWARD_SUFFIXES = ("_dgrad", "_wgrad", "_bwd", "_recompute")


def _forward_base(base: str) -> str:
    """The forward step a backward or recompute step comes from (`qkv_dgrad` -> `qkv`)."""
    for suffix in _BACKWARD_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


class _Restrict:
    """Reads a GPU tuple as the IR holds it: only kept GPUs after a symmetric collapse."""

    def __init__(self, steps: StepProgram) -> None:
        self.kept = set(steps.symmetry.class_size) if steps.symmetry else None

    def __call__(self, gpus: tuple[int, ...]) -> tuple[int, ...]:
        if self.kept is None:
            return gpus
        return tuple(g for g in gpus if g in self.kept)


def verify_steps(steps: StepProgram) -> None:
    """Check the step IR's invariants; raise VerificationError naming the culprit."""
    restrict = _Restrict(steps)
    placed = replace(steps, blocks=tuple(b for b in steps.blocks if not is_dp_block(b)))
    _check_block_sequence(placed)
    for block in placed.blocks:
        _check_block_gpus(steps.program, block, restrict)
    _check_data_placement(placed, restrict)
    for block in placed.blocks:
        for step in block.steps:
            _check_step_shape(block, step)
            _check_step_gpus(steps.program, block, step, restrict)
    check_data_parallel(steps)
    _check_kv_handoff(placed)
    _check_unique_names(steps)
    check_values(steps, restrict)


def _label(block: BlockSteps) -> str:
    return f"{block.kind} l{block.layer} on @{block.group}"


def expected_blocks(program: Program) -> Iterator[tuple[str, int, str]]:
    """(kind, layer, group) of every compute block, in execution order."""
    last = program.model.layers - 1
    for layer_range in program.ranges:
        for layer in layer_range.layer_indices:
            for block in layer_range.blocks:
                if block.kind is BlockKind.EMBED and layer != 0:
                    continue
                if block.kind is BlockKind.LM_HEAD and layer != last:
                    continue
                yield block.kind.value, layer, block.group


def _check_block_sequence(steps: StepProgram) -> None:
    expected = list(expected_blocks(steps.program))
    forward = [b for b in steps.blocks if not b.backward and not _iteration(b)]
    backward = [b for b in steps.blocks if b.backward]
    if backward and steps.blocks.index(backward[0]) != len(forward):
        raise VerificationError("a forward block comes after the backward began")
    _check_compute_blocks(forward, expected, "")
    if backward:
        if steps.program.training is None:
            raise VerificationError("a prefill program has backward blocks")
        _check_compute_blocks(backward, expected[::-1], "backward ")


def _iteration(block: BlockSteps) -> bool:
    """A block of once-per-iteration steps (gradient reduction, optimizer): outside the
    forward and the backward's block sequences."""
    return bool(block.steps) and all(s.phase is Phase.ITERATION for s in block.steps)


def _check_compute_blocks(
    blocks: list[BlockSteps], expected: list[tuple[str, int, str]], what: str
) -> None:
    actual = [(b.kind, b.layer, b.group) for b in blocks if b.kind != TransferKind.TRANSFER]
    for index, (have, want) in enumerate(zip(actual, expected, strict=False)):
        if have != want:
            raise VerificationError(
                f"{what}compute block {index} is {have[0]} l{have[1]} on @{have[2]};"
                f" the program has {want[0]} l{want[1]} on @{want[2]} there"
            )
    if len(actual) != len(expected):
        raise VerificationError(
            f"{len(actual)} {what}compute blocks, the program has {len(expected)}"
        )


def _check_data_placement(steps: StepProgram, restrict: _Restrict) -> None:
    """Inputs live where the previous compute block's output is; transfers bridge moves."""
    blocks = tuple(b for b in steps.blocks if not b.backward and not _iteration(b))
    _check_backward_placement(tuple(b for b in steps.blocks if b.backward), restrict)
    previous: BlockSteps | None = None
    for index, block in enumerate(blocks):
        source = previous.output_gpus if previous else block.input_gpus
        if restrict(block.input_gpus) != restrict(source):
            raise VerificationError(
                f"{_label(block)} reads its input on {list(block.input_gpus)}, but the block"
                f" before left it on {list(source)}"
            )
        if block.kind == TransferKind.TRANSFER:
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if following is None or restrict(following.gpus) != restrict(block.gpus):
                raise VerificationError(f"transfer to l{block.layer} leads to no block on its GPUs")
            continue
        output = block.input_gpus if block.excursion else block.gpus
        if restrict(block.output_gpus) != restrict(output):
            raise VerificationError(
                f"{_label(block)} leaves its output on {list(block.output_gpus)},"
                f" expected {list(output)}"
            )
        previous = block


def _check_backward_placement(blocks: tuple[BlockSteps, ...], restrict: _Restrict) -> None:
    """The backward's gradients: a backward block starts where the forward block left its
    output (`input_gpus`) and leaves the gradient of the forward block's input where that
    block read it (`output_gpus`: its input GPUs for an excursion, else its own); a
    backward transfer takes it from there to its own GPUs, where the next block runs."""
    for index, block in enumerate(blocks):
        if index and restrict(block.input_gpus) != restrict(blocks[index - 1].output_gpus):
            raise VerificationError(
                f"backward {_label(block)} starts on {list(block.input_gpus)}, but the block"
                f" before left the gradient on {list(blocks[index - 1].output_gpus)}"
            )
        if block.kind == TransferKind.TRANSFER:
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if following is None or restrict(following.gpus) != restrict(block.gpus):
                raise VerificationError(
                    f"backward transfer from l{block.layer} leads to no block on its GPUs"
                )
            if restrict(block.output_gpus) != restrict(block.gpus):
                raise VerificationError(f"backward transfer from l{block.layer} keeps its gradient")
            continue
        # the gradient arrives and leaves where the residual stream lives
        home = block.input_gpus if block.excursion else block.gpus
        for what, gpus in (
            ("starts", block.input_gpus),
            ("leaves its gradient", block.output_gpus),
        ):
            if restrict(gpus) != restrict(home):
                raise VerificationError(
                    f"backward {_label(block)} {what} on {list(gpus)}, expected {list(home)}"
                )


def _check_block_gpus(program: Program, block: BlockSteps, restrict: _Restrict) -> None:
    group = restrict(program.group(block.group).gpus)
    if restrict(block.gpus) != group:
        raise VerificationError(
            f"{_label(block)} runs on {list(block.gpus)}, its group has {list(group)}"
        )


def _check_step_shape(block: BlockSteps, step: Step) -> None:
    """Terms per GPU, compute versus communication, GPUs and experts listed once each."""
    where = f"step {step.base}{step.part} of {_label(block)}"
    expected = 1 if step.joint else len(step.gpus)
    if len(step.terms) != expected:
        raise VerificationError(f"{where} has {len(step.terms)} terms, expected {expected}")
    if len(set(step.gpus)) != len(step.gpus):
        raise VerificationError(f"{where} lists a GPU twice: {list(step.gpus)}")
    if step.experts and len(step.experts) != len(step.gpus):
        raise VerificationError(
            f"{where} names {len(step.experts)} experts for {len(step.gpus)} GPUs"
        )
    computes = [term.kind in _COMPUTE for term in step.terms]
    if step.joint and any(computes):
        raise VerificationError(f"{where} joins GPUs but computes {step.terms[0]}")
    if not step.joint and not all(computes):
        raise VerificationError(f"{where} runs per GPU but communicates")


def _check_step_gpus(program: Program, block: BlockSteps, step: Step, restrict: _Restrict) -> None:
    """The GPUs each step runs on, from its block and the semantics' rules.

    A backward block's steps run where their forward steps ran (a recompute step too);
    `loss_bwd` runs where the block's output lives; the joint steps of the backward join
    the sides `_JOINT_SIDE` lists for them.
    """
    where = f"step {step.base}{step.part} of {_label(block)}"
    routed = block.excursion and block.dispatch is MoeDispatch.ROUTED
    bare = step.base.rstrip("0123456789") if step.joint else step.base
    base = bare if bare in _JOINT_SIDE else _forward_base(bare)
    if step.joint:
        side = _JOINT_SIDE.get(base)
        if side is None:
            raise VerificationError(f"{where} is a joint step dagc does not know")
        if routed and base in ("dispatch", "dispatch_bwd"):
            side = "both"  # routed dispatch: one all-to-all over the senders and the experts
        if routed and base == "all_reduce_moe_bwd":
            side = "input"  # the token-split router's gradients are summed where it ran
        if side == "input_side":
            side = "input"
    elif block.backward and bare in _AT_OUTPUT:
        side = "input"  # a backward block's input GPUs hold the forward output's gradient
    elif block.excursion and base in ("res2", "hidden_dropout2") and _has_transfers(block):
        side = "input"  # the residual stream stays where the layer came from
    elif routed and base in ("ln2", "gate"):
        side = "input"  # routed: the router runs where the tokens are
    else:
        side = "gpus"
    sides = {
        "input": block.input_gpus,
        "gpus": block.gpus,
        "both": tuple(sorted({*block.input_gpus, *block.gpus})),
    }
    expected = restrict(sides[side])
    if side == "gpus" and block.kind == BlockKind.MOE and not step.joint:
        expected = restrict(_moe_ranks(program, block, step))
    if restrict(step.gpus) != expected:
        raise VerificationError(f"{where} runs on {list(step.gpus)}, expected {list(expected)}")


def _moe_ranks(program: Program, block: BlockSteps, step: Step) -> tuple[int, ...]:
    """The GPUs of a moe block a per-GPU step runs on: all of them, but in a decode step
    with A = ceil(T·k·cf) < E active experts, rank i runs only its first split(A, e)[i]
    local experts (an expert step covers the ranks running its local expert), the shared
    experts run on ranks with a token (split(T, e)[i] > 0, or every rank when the tokens
    are spread over dp replicas on the block's own GPUs) and expert_agg on the ranks
    running either."""
    model, workload = program.model, program.workload
    base = _forward_base(step.base)
    if base not in ("expert", "shared_expert", "expert_agg") or model.experts is None:
        return block.gpus
    group = program.group(block.group).gpus  # every rank, also after a symmetric collapse
    e = len(group)
    per_rank = model.experts // e
    capacity = Fraction(repr(model.capacity_factor))
    active = math.ceil(workload.tokens_per_microbatch * (model.top_k or 0) * capacity)
    if workload.mode is Mode.DECODE and active < model.experts:
        running = split_evenly(active, e)
    else:
        running = [per_rank] * e
    spread = block.input_dp > 1 and not block.excursion
    tokens = workload.tokens_per_microbatch
    shared = [
        bool(model.shared_experts) and (spread or share > 0) for share in split_evenly(tokens, e)
    ]
    if base == "expert":
        local = step.experts[0] % per_rank if step.experts else 0
        ranks = [r for r in range(e) if running[r] > local]
    elif base == "shared_expert":
        ranks = [r for r in range(e) if shared[r]]
    else:
        ranks = [r for r in range(e) if running[r] or shared[r]]
    return tuple(group[r] for r in ranks)


def _has_transfers(block: BlockSteps) -> bool:
    """Whether insert-transfers has run on this excursion (it moves res2 back home and adds
    recv_moe, whichever the dispatch)."""
    return any(step.base in ("recv_moe", "return_bwd") for step in block.steps)


def _check_kv_handoff(steps: StepProgram) -> None:
    """One kv_send per attention block (none before insert-transfers), onto the decode
    layout's attention GPUs of its layer."""
    program = steps.program
    receivers: dict[int, tuple[int, ...]] = {}
    for layer_range in program.kv_handoff:
        for placed in layer_range.blocks:
            if placed.kind is BlockKind.ATTENTION:
                for layer in layer_range.layer_indices:
                    receivers[layer] = program.group(placed.group).gpus
    attention = {id(b) for b in steps.blocks if b.kind == BlockKind.ATTENTION and not b.backward}
    sent = any(step.base == "kv_send" for block in steps.blocks for step in block.steps)
    for block in steps.blocks:
        sends = [step for step in block.steps if step.base == "kv_send"]
        if sends and (not program.kv_handoff or id(block) not in attention):
            raise VerificationError(f"{_label(block)} sends a KV cache it has no handoff for")
        if not sent or id(block) not in attention:
            continue  # insert-transfers adds them all at once
        if len(sends) != 1:
            raise VerificationError(f"{_label(block)} has {len(sends)} kv_send steps, expected 1")
        (send,) = sends
        name = f"kv_cache_l{block.layer}"
        if [value.name for value in send.writes] != [name]:
            raise VerificationError(f"kv_send of {_label(block)} writes other values than {name}")
        expected = receivers.get(block.layer, ())
        if set(send.writes[0].gpus) != set(expected):
            raise VerificationError(
                f"kv_send of {_label(block)} writes {name} onto {list(send.writes[0].gpus)};"
                f" the decode layout's attention of l{block.layer} runs on {list(expected)}"
            )


def _check_unique_names(steps: StepProgram) -> None:
    """Names of one micro-batch (the `_mb{j}` suffix then makes every micro-batch unique)."""
    seen: dict[str, BlockSteps] = {}
    for block in steps.blocks:
        for step in block.steps:
            for rank in range(1 if step.joint else len(step.gpus)):
                name = step.op_name(rank, None)
                if name in seen:
                    raise VerificationError(
                        f"operation {name} of {_label(block)} is also in {_label(seen[name])}"
                    )
                seen[name] = block
