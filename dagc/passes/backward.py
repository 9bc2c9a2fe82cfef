"""backward: the backward pass of a training program (a no-op for prefill programs).

After the forward blocks of one micro-batch come the backward blocks, in reverse order: the
backward of each forward block (same kind, layer, group and GPUs, `BlockSteps.backward`),
and the gradient transfers between pipeline stages. Each forward step gets its backward
steps, derived from its cost term and the values it reads and writes (docs/semantics.md,
"Training: the backward"):

- a product reading a weight (the module's `weight_products`), Get_Time(M, K, N):
  `{base}_dgrad` Get_Time(M, N, K) (BACKWARD), which reads the gradients of its outputs and
  writes the gradient of its input, and `{base}_wgrad` Get_Time(K, M, N) (WEIGHT_GRAD),
  which reads the saved input and the output gradient and writes the weight gradient
  (`dw_…`); the forward's `part` stays (`qkv_dgrad.q`);
- a product of two activations A·B (explicit attention): two BACKWARD products, one per
  input, `{base}_dgrad.{A}` Get_Time(M, N, K) reading dY and B, and `{base}_dgrad.{B}`
  (Get_Time(M, N, K) reading dY and A when B is stored transposed, Kᵀ; else
  Get_Time(M, K, N) reading A and dY);
- a fused attention kernel: `{base}_bwd`, Attn_Bwd_Time or Causal_Attn_Bwd_Time of the same
  arguments, reading dO, Q, K, V and O;
- an elementwise step: `{base}_bwd`, the same Elem_Time, reading the output gradient and
  the values the forward read (only the gradient for the module's `grad_only` steps; a
  dropout, which writes a mask of dtype u8, reads the gradient and its mask);
  an elementwise step that reads no value (the embedding lookup) updates a weight:
  `{base}_wgrad` (WEIGHT_GRAD);
- a forward all-reduce (Megatron's g) is the identity backward: no step; a receive
  (`Sync`) neither; an all-to-all gets `{base}_bwd` with the same payload (`combine_bwd`,
  `dispatch_bwd`); an excursion's broadcast and return get `broadcast_bwd` (from the MoE
  GPUs back to the input GPUs, the same term) and `return_bwd` (the input GPUs send the
  gradient of what returned to the MoE GPUs, the same term);
- a pipeline transfer to stage s gets `send_grad_stage{s}` (P2P of T·H·w from stage s back
  to s − 1, the forward's term) and `recv_grad_stage{s}` (Sync on stage s − 1); with
  `split_sends` a piece per link and `gather_grad_stage{s}` on stage s − 1.

Gradients are values: a forward value X read by n steps gets one gradient contribution
from each reader's backward, `d_{X}` (n = 1) or `d_{X}_{k}` (the k-th reader); the backward
of X's writer reads all of them (the accumulation is fused into it). A contribution has
X's placement, except: the gradient of a partial sum is replicated (every summand's
gradient is the whole), a step reading a partial gradient writes partial gradients
(backward steps are linear in the gradient), and a replicated X read by a step whose
outputs are sharded over several GPUs gets a partial contribution. Before the backward of
a step that reads the block's input, partial contributions to its output's gradient are
summed by the module's backward all-reduce (`all_reduce_attn_bwd` after the qkv dgrads,
Megatron's f); partial contributions to the block's input gradient left at the block's end
are summed the same way (lm_head's). The backward all-reduce carries the reduced value's
bytes (T·H·w for the residual stream).

The loss: `loss_bwd` (BACKWARD), Elem_Time of the last block's output on each rank, reads
that output (the logits) and writes its gradient, where the backward starts.

Recomputation (`training.recompute`): `selective` reruns the module's `recompute_core`
steps (attention's scores, softmax, weights·V or fused kernel) as RECOMPUTE steps
(`{base}_recompute`) right before the block's backward; `full` reruns each layer's forward
blocks on each group (communication included) before that layer's backward. The backward
then reads the recomputed values (`{name}_rc`), so the forward values are not saved:
`saved_values` says which values of a forward block the backward reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from dagc.blocks import module
from dagc.blocks.base import BlockModule
from dagc.blocks.shapes import activation_bytes, communication, count, dims, hidden_shape
from dagc.ir.logical import Program, Recompute
from dagc.ir.steps import BlockSteps, Phase, Step, StepProgram, TransferKind
from dagc.ir.terms import CostTerm, Label, TermKind, elementwise, matmul
from dagc.ir.values import MASK_DTYPE, PARTIAL, REPLICATED, Dim, Placement, Value, split

SYNC = CostTerm(TermKind.SYNC, ())
_LAYER_SUFFIX = re.compile(r"_l\d+$")


def backward(steps: StepProgram) -> StepProgram:
    """Append the backward blocks of one micro-batch (training programs only)."""
    if steps.program.training is None or any(b.backward for b in steps.blocks):
        return steps
    return replace(steps, blocks=steps.blocks + _Builder(steps).build())


def saved_values(steps: StepProgram) -> dict[str, Value]:
    """The forward values the backward reads (saved from the forward to the backward), by
    name: what activation memory holds between a micro-batch's forward and its backward.
    With recomputation, the values the recomputed steps rewrite are not among them."""
    forward = {v.name: v for b in steps.blocks if not b.backward for s in b.steps for v in s.writes}
    saved: dict[str, Value] = {}
    for block in steps.blocks:
        if not block.backward:
            continue
        for step in block.steps:
            for value in step.reads:
                if value.name in forward:
                    saved[value.name] = forward[value.name]
    return saved


def forward_base(base: str) -> str:
    """The forward step a backward step comes from (`qkv_dgrad` -> `qkv`)."""
    for suffix in ("_dgrad", "_wgrad", "_bwd", "_recompute"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _root(name: str) -> str:
    """A value's name without its layer (`q_l3` -> `q`), for a product's part."""
    return _LAYER_SUFFIX.sub("", name)


def _is_sharded(step: Step) -> bool:
    """Whether a per-GPU step's outputs are split or partial over several GPUs."""
    return len(step.gpus) > 1 and any(w.placement != REPLICATED for w in step.writes)


@dataclass
class _Builder:
    """Walks the forward blocks backwards, keeping the gradient contributions so far."""

    steps: StepProgram
    # forward value name -> the gradient contributions written so far
    grads: dict[str, list[Value]] = field(default_factory=dict)
    # forward value name -> the forward steps that read it, in order (by id)
    readers: dict[str, list[int]] = field(default_factory=dict)
    # forward value name -> its recomputed value, which the backward reads instead
    via: dict[str, Value] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for block in self.steps.blocks:
            for step in block.steps:
                for value in step.reads:
                    self.readers.setdefault(value.name, []).append(id(step))

    @property
    def program(self) -> Program:
        return self.steps.program

    def build(self) -> tuple[BlockSteps, ...]:
        forward = self.steps.blocks
        compute = [b for b in forward if b.kind != TransferKind.TRANSFER]
        out: list[BlockSteps] = []
        recompute = self.program.training.recompute if self.program.training else None
        for index in range(len(forward) - 1, -1, -1):
            block = forward[index]
            if block.kind == TransferKind.TRANSFER:
                sender = next(b for b in forward[index::-1] if b.kind != TransferKind.TRANSFER)
                out.append(replace(self._stage_backward(block), group=sender.group))
                continue
            prefix: list[Step] = []
            if block is compute[-1]:
                prefix.append(self._loss(block))
            if recompute is Recompute.FULL and self._first_of_layer_on_group(forward, index):
                prefix += self._recompute_layer(forward, block)
            out.append(self._block_backward(block, prefix, recompute))
        return tuple(out)

    # -- gradients ------------------------------------------------------------------------

    def _contribution(self, x: Value, reader: Step, placement: Placement) -> Value:
        """The gradient contribution to `x` from `reader`'s backward, recorded."""
        readers = self.readers.get(x.name, [id(reader)])
        name = f"d_{x.name}"
        if len(readers) > 1:
            name += f"_{readers.index(id(reader)) if id(reader) in readers else len(readers)}"
        grad = Value(name, x.dims, x.dtype, x.gpus, placement)
        self.grads.setdefault(x.name, []).append(grad)
        return grad

    def _output_grads(self, step: Step) -> tuple[Value, ...]:
        """The gradients of what `step` wrote: every contribution, in order."""
        return tuple(g for value in step.writes for g in self.grads.get(value.name, []))

    def _placement(self, step: Step, x: Value, grads: tuple[Value, ...]) -> Placement:
        if x.placement == PARTIAL:
            return REPLICATED  # every summand's gradient is the whole gradient
        if any(g.placement == PARTIAL for g in grads):
            return PARTIAL  # linear in the gradient: a partial in, a partial out
        if x.placement == REPLICATED and not step.joint and _is_sharded(step):
            return PARTIAL  # each rank's share of the gradient of a value all ranks hold
        return x.placement

    def _reduce(
        self, block: BlockSteps, mod: BlockModule, names: Iterable[str], layer: int
    ) -> list[Step]:
        """The backward all-reduce of the partial contributions to the gradients of `names`."""
        steps: list[Step] = []
        for name in names:
            grads = self.grads.get(name, [])
            partial = [g for g in grads if g.placement == PARTIAL]
            if not partial:
                continue
            gpus = partial[0].gpus
            if len(gpus) == 1:
                continue
            if not mod.backward_all_reduce:
                raise ValueError(f"{block.kind} leaves a partial gradient of {name}")
            first = partial[0]
            summed = Value(f"d_{name}_sum", first.dims, first.dtype, gpus, REPLICATED)
            term = communication(
                self.program,
                TermKind.ALL_REDUCE,
                self._bytes(first),
                count(len(gpus)),
                gpus=gpus,
            )
            steps.append(
                Step(
                    mod.backward_all_reduce,
                    layer,
                    gpus,
                    (term,),
                    joint=True,
                    reads=tuple(partial),
                    writes=(summed,),
                    phase=Phase.BACKWARD,
                    span=block.span,
                )
            )
            self.grads[name] = [g for g in grads if g.placement != PARTIAL] + [summed]
        return steps

    def _bytes(self, value: Value) -> Label:
        """A value's bytes, labelled T·H·w for the residual stream."""
        if tuple((d.name, d.size) for d in value.dims) == hidden_shape(self.program):
            return activation_bytes(self.program)
        elements = math.prod(d.size for d in value.dims)
        return count(elements * self.program.workload.dtype.bytes)

    # -- blocks ---------------------------------------------------------------------------

    def _block_backward(
        self, block: BlockSteps, prefix: list[Step], recompute: Recompute | None
    ) -> BlockSteps:
        kind = block.block_kind
        assert kind is not None
        mod = module(kind)
        written = {v.name for s in block.steps for v in s.writes}
        external = {v.name for s in block.steps for v in s.reads if v.name not in written}
        forward_steps = list(block.steps)
        out = list(prefix)
        if recompute is Recompute.SELECTIVE and mod.recompute_core:
            out += self._rerun([s for s in forward_steps if s.base in mod.recompute_core])
        for step in reversed(forward_steps):
            if not step.joint and any(v.name in external for v in step.reads):
                out += self._reduce(block, mod, (w.name for w in step.writes), step.layer)
            out += self._step_backward(block, mod, step)
        out += self._reduce(block, mod, sorted(external), block.layer)
        output_gpus = block.input_gpus if block.excursion else block.gpus
        return replace(
            block,
            steps=tuple(out),
            backward=True,
            input_gpus=block.output_gpus,
            output_gpus=output_gpus,
        )

    def _loss(self, block: BlockSteps) -> Step:
        """`loss_bwd`: the gradient of the last block's output, from the loss."""
        last = block.steps[-1]
        out = last.writes[0]
        d = dims(self.program)
        labels = {"tokens": d.tokens, "hidden": d.hidden}
        terms = []
        for rank in range(len(out.gpus)):
            sizes = out.local_sizes(rank)
            label: Label = ()
            for dim, size in zip(out.dims, sizes, strict=True):
                named = labels.get(dim.name)
                label += named if named is not None and dim.size == size else count(size)
            terms.append(elementwise(label))
        grad = Value(f"d_{out.name}", out.dims, out.dtype, out.gpus, out.placement)
        self.grads.setdefault(out.name, []).append(grad)
        return Step(
            "loss_bwd",
            last.layer,
            out.gpus,
            tuple(terms),
            reads=(out,),
            writes=(grad,),
            phase=Phase.BACKWARD,
            span=block.span,
        )

    def _step_backward(self, block: BlockSteps, mod: BlockModule, step: Step) -> list[Step]:
        term = step.terms[0]
        if step.joint:
            return self._joint_backward(block, step)
        dy = self._output_grads(step)
        if term.kind is TermKind.MATMUL:
            if forward_base(step.base) in mod.weight_products:
                return self._weight_product(step, dy)
            return self._activation_product(mod, step, dy)
        if term.kind.is_fused_attention:
            writes = tuple(
                self._contribution(x, step, self._placement(step, x, dy)) for x in step.reads
            )
            terms = tuple(_backward_attention(t) for t in step.terms)
            return [
                replace(
                    step,
                    base=step.base + "_bwd",
                    terms=terms,
                    reads=(*dy, *self._saved((*step.reads, *step.writes))),
                    writes=writes,
                    phase=Phase.BACKWARD,
                )
            ]
        # elementwise
        if not step.reads:  # a lookup into a weight (embed): its gradient is the weight's
            return [
                replace(
                    step,
                    base=step.base + "_wgrad",
                    reads=dy,
                    writes=(self._weight_grad(step, dy),),
                    phase=Phase.WEIGHT_GRAD,
                )
            ]
        saved = () if forward_base(step.base) in mod.grad_only else self._saved(step.reads)
        masks = tuple(w for w in step.writes if w.dtype == MASK_DTYPE)
        if masks:  # a dropout's backward multiplies the gradient by its saved mask
            saved = self._saved(masks)
        if len(step.reads) == len(step.writes) > 1:
            # one map per input (qk_norm: q -> q_normed, k -> k_normed)
            pairs = [
                (x, tuple(self.grads.get(y.name, [])))
                for x, y in zip(step.reads, step.writes, strict=True)
            ]
        else:
            pairs = [(x, dy) for x in step.reads]
        writes = tuple(self._contribution(x, step, self._placement(step, x, g)) for x, g in pairs)
        return [
            replace(
                step,
                base=step.base + "_bwd",
                reads=tuple(dict.fromkeys((*dy, *saved))),
                writes=writes,
                phase=Phase.BACKWARD,
            )
        ]

    def _weight_product(self, step: Step, dy: tuple[Value, ...]) -> list[Step]:
        writes = tuple(
            self._contribution(x, step, self._placement(step, x, dy)) for x in step.reads
        )
        dgrad = replace(
            step,
            base=step.base + "_dgrad",
            terms=tuple(_product(t, (0, 2, 1)) for t in step.terms),
            reads=dy,
            writes=writes,
            phase=Phase.BACKWARD,
        )
        wgrad = replace(
            step,
            base=step.base + "_wgrad",
            terms=tuple(_product(t, (1, 0, 2)) for t in step.terms),
            reads=(*self._saved(step.reads[:1]), *dy),
            writes=(self._weight_grad(step, dy),),
            phase=Phase.WEIGHT_GRAD,
        )
        return [dgrad, wgrad]

    def _weight_grad(self, step: Step, dy: tuple[Value, ...]) -> Value:
        """`dw_…`: the gradient of the weight a step reads (rows x columns it holds)."""
        first = step.terms[0]
        if first.kind is TermKind.MATMUL:
            rows, columns = first.args[1], sum(t.args[2] for t in step.terms)
        else:
            rows, columns = 1, sum(t.args[0] for t in step.terms)
        if any(g.placement == PARTIAL for g in dy):
            placement = PARTIAL
        elif _is_sharded(step) and columns >= len(step.gpus):
            placement = split("weight_out")
        else:
            placement = REPLICATED
            columns = first.args[2] if first.kind is TermKind.MATMUL else first.args[0]
        dims_ = (Dim("weight_in", rows), Dim("weight_out", columns))
        name = f"dw_{step.writes[0].name}"
        return Value(name, dims_, self.program.workload.dtype.value, step.gpus, placement)

    def _activation_product(
        self, mod: BlockModule, step: Step, dy: tuple[Value, ...]
    ) -> list[Step]:
        a, b = step.reads[0], step.reads[1]
        saved_a, saved_b = self._saved((a, b))
        da = self._contribution(a, step, self._placement(step, a, dy))
        db = self._contribution(b, step, self._placement(step, b, dy))
        base = step.base + "_dgrad"
        first = replace(
            step,
            base=base,
            part="." + _root(a.name),
            terms=tuple(_product(t, (0, 2, 1)) for t in step.terms),
            reads=(*dy, saved_b),
            writes=(da,),
            phase=Phase.BACKWARD,
        )
        if forward_base(step.base) in mod.transposed_operand:
            # Y = A·Bᵀ: dB = dYᵀ·A, per head a product of A's shape, contracting dY's rows
            second_terms = tuple(_product(t, (0, 2, 1)) for t in step.terms)
            second_reads = (*dy, saved_a)
        else:
            # Y = A·B: dB = Aᵀ·dY, contracting A's rows
            second_terms, second_reads = step.terms, (saved_a, *dy)
        second = replace(
            step,
            base=base,
            part="." + _root(b.name),
            terms=second_terms,
            reads=second_reads,
            writes=(db,),
            phase=Phase.BACKWARD,
        )
        return [first, second]

    def _joint_backward(self, block: BlockSteps, step: Step) -> list[Step]:
        term = step.terms[0]
        if term.kind is TermKind.SYNC or term.kind is TermKind.ALL_REDUCE:
            # a receive's reverse is its sender's; a forward all-reduce (g) is the identity
            # backward: the gradient of what it read is the gradient of what it wrote
            for x in step.reads:
                grads = self._output_grads(step)
                self.grads[x.name] = [
                    replace(g, placement=REPLICATED) if x.placement == PARTIAL else g for g in grads
                ]
                if x.placement == PARTIAL and any(g.placement != REPLICATED for g in grads):
                    raise ValueError(f"the gradient of {x.name} is not replicated")
            return []
        dy = self._output_grads(step)
        if term.kind in (TermKind.ALL_GATHER, TermKind.REDUCE_SCATTER):
            return self._sequence_backward(block, step, dy)
        if term.kind is TermKind.BROADCAST:
            # the reverse of a broadcast is a reduction: it sums what the MoE GPUs send back
            writes = tuple(self._contribution(x, step, REPLICATED) for x in step.reads)
        else:
            writes = tuple(
                self._contribution(x, step, self._placement(step, x, dy)) for x in step.reads
            )
        gpus = step.gpus
        if term.kind in (TermKind.P2P, TermKind.BROADCAST):
            gpus = dy[0].gpus  # a transfer's reverse: the other side sends
        return [
            replace(
                step,
                base=step.base + "_bwd",
                gpus=gpus,
                reads=dy,
                writes=writes,
                phase=Phase.BACKWARD,
            )
        ]

    def _sequence_backward(
        self, block: BlockSteps, step: Step, dy: tuple[Value, ...]
    ) -> list[Step]:
        """Sequence parallelism's collectives, reversed: an all-gather's backward is a
        reduce-scatter of the partial gradients (`reduce_scatter_{kind}_bwd`), or, when the
        gradient is whole on every rank, each rank's slice (no step); a reduce-scatter's is
        an all-gather (`all_gather_{kind}_bwd`), the same piece."""
        term = step.terms[0]
        (x,) = step.reads
        if term.kind is TermKind.ALL_GATHER:
            if not any(g.placement == PARTIAL for g in dy):
                self.grads[x.name] = list(dy)  # each rank takes its tokens' rows
                return []
            base = step.base.replace("all_gather", "reduce_scatter", 1) + "_bwd"
            kind, placement = TermKind.REDUCE_SCATTER, x.placement
        else:
            base = step.base.replace("reduce_scatter", "all_gather", 1) + "_bwd"
            kind, placement = TermKind.ALL_GATHER, self._placement(step, x, dy)
        reverse = communication(self.program, kind, *term.labels, gpus=step.gpus)
        grad = self._contribution(x, step, placement)
        return [
            replace(
                step,
                base=base,
                terms=(reverse,),
                reads=dy,
                writes=(grad,),
                phase=Phase.BACKWARD,
            )
        ]

    def _stage_backward(self, block: BlockSteps) -> BlockSteps:
        """The gradient of a pipeline stage's input, sent back to the stage before."""
        send, *_ = block.steps
        stage = send.base.removeprefix("send_stage")
        (x,) = send.reads
        (received,) = block.steps[-1].writes
        dy = tuple(self.grads.get(received.name, []))
        if not dy:
            raise ValueError(f"stage {stage} receives {received.name}, which nothing reads")
        senders, receivers = block.gpus, block.input_gpus
        gather = block.steps[2] if len(block.steps) > 2 else None
        links = gather.terms[0].args[1] if gather is not None else 1
        grad = Value(f"d_{x.name}", x.dims, x.dtype, x.gpus, x.placement)
        self.grads.setdefault(x.name, []).append(grad)
        placement = split("tokens") if links > 1 else x.placement
        sent = Value(f"d_{x.name}_grad_sent", x.dims, x.dtype, receivers, placement)
        steps = [
            Step(
                f"send_grad_stage{stage}",
                block.layer,
                senders,
                send.terms,
                joint=True,
                layer_in_name=False,
                reads=dy,
                writes=(sent,),
                phase=Phase.BACKWARD,
                span=block.span,
            )
        ]
        part = Value(f"d_{x.name}_grad_part", x.dims, x.dtype, receivers, placement)
        steps.append(
            Step(
                f"recv_grad_stage{stage}",
                send.layer,
                receivers,
                (SYNC,),
                joint=True,
                layer_in_name=False,
                reads=(sent,),
                writes=(part if gather is not None else grad,),
                phase=Phase.BACKWARD,
                span=block.span,
            )
        )
        if gather is not None:
            gather_term = communication(
                self.program,
                TermKind.ALL_GATHER,
                *gather.terms[0].labels,
                gpus=receivers,
            )
            steps.append(
                Step(
                    f"gather_grad_stage{stage}",
                    send.layer,
                    receivers,
                    (gather_term,),
                    joint=True,
                    layer_in_name=False,
                    reads=(part,),
                    writes=(grad,),
                    phase=Phase.BACKWARD,
                    span=block.span,
                )
            )
        return replace(
            block,
            gpus=receivers,
            input_gpus=senders,
            output_gpus=receivers,
            steps=tuple(steps),
            backward=True,
        )

    # -- recomputation ------------------------------------------------------------------

    def _first_of_layer_on_group(self, forward: tuple[BlockSteps, ...], index: int) -> bool:
        """Whether `forward[index]` is the last recomputed forward block of its layer on its
        group: its backward is the first of the layer there, so the layer's recompute goes
        before it."""
        block = forward[index]
        return _recomputed(block) and not any(
            b.layer == block.layer and b.group == block.group and _recomputed(b)
            for b in forward[index + 1 :]
        )

    def _recompute_layer(self, forward: tuple[BlockSteps, ...], block: BlockSteps) -> list[Step]:
        """The forward steps of `block`'s layer on its group, rerun (full recomputation)."""
        steps = [
            s
            for b in forward
            if b.layer == block.layer and b.group == block.group and _recomputed(b)
            for s in b.steps
        ]
        return self._rerun(steps)

    def _rerun(self, steps: list[Step]) -> list[Step]:
        """`steps` rerun as RECOMPUTE steps (`{base}_recompute`) writing `{name}_rc`; the
        backward then reads those instead of the forward's values (`self.via`)."""
        out = []
        for step in steps:
            writes = tuple(replace(v, name=v.name + "_rc") for v in step.writes)
            out.append(
                replace(
                    step,
                    base=step.base + "_recompute",
                    reads=self._saved(step.reads),
                    writes=writes,
                    phase=Phase.RECOMPUTE,
                )
            )
            self.via.update({a.name: b for a, b in zip(step.writes, writes, strict=True)})
        return out

    def _saved(self, values: Iterable[Value]) -> tuple[Value, ...]:
        """Forward values as the backward reads them: rerun ones from their recomputation."""
        return tuple(self.via.get(v.name, v) for v in values)


def _recomputed(block: BlockSteps) -> bool:
    """Whether full recomputation reruns a forward block: the transformer blocks, not embed
    or lm_head (Megatron's full recompute covers the layers), nor a moe excursion (its
    steps run on two groups) or a transfer."""
    kind = block.block_kind
    return kind is not None and kind.value not in ("embed", "lm_head") and not block.excursion


def _product(term: CostTerm, order: tuple[int, int, int]) -> CostTerm:
    """A product whose (M, K, N) are the forward's, taken in `order`."""
    labels = term.labels or tuple(count(a) for a in term.args)
    return matmul(*(labels[i] for i in order))


def _backward_attention(term: CostTerm) -> CostTerm:
    """A fused attention kernel's backward: the same arguments."""
    kind = TermKind.CAUSAL_ATTENTION_BWD if term.kind.is_causal else TermKind.ATTENTION_BWD
    return CostTerm(kind, term.args, term.nodes, labels=term.labels)


__all__ = ["backward", "forward_base", "saved_values"]
