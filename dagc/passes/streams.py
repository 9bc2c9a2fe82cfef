"""assign-streams: put the communication of `overlap` blocks on the communication stream.

Each GPU has a compute stream and a communication stream; each runs one operation at a time
(program order is per stream, see passes/order.py). By default every step runs on the
compute stream, so a GPU runs one operation at a time, as before streams existed. A block
written with `overlap` moves its communication to the communication stream of its GPUs:

- its collectives (all-reduce, dispatch, combine);
- the transfers that reach it: `send_stage` (and the `gather_stage` of a split send) into
  it, and `broadcast` (or a routed `dispatch`) to it;
- the transfer out of it: `return` of a moe excursion.

The KV handoff of a disaggregated serve's prefill (`kv_send_l{l}`, dagc/passes/transfers.py)
runs on the communication stream whatever `overlap` says: the layer-by-layer handoff
overlaps the prefill's compute, as the serving systems that disaggregate do (the prefill
GPUs send each layer's cache while computing the next).

The receiving halves (`recv_stage`, `recv_moe`) stay on the compute stream (dagc's
choice): they cost nothing (`Sync()`) and mark where the receiver's compute waits for the
data, like a stream waiting on an event. On the communication stream they would queue
behind the receiver's own sends (`recv_moe` of the next micro-batch behind `return` of this
one) and serialise exactly what overlap is meant to overlap.
"""

from __future__ import annotations

from dataclasses import replace

from dagc.ir.steps import KV_SEND, BlockSteps, Step, StepProgram, Stream

NAME = "assign-streams"


def assign_streams(steps: StepProgram) -> StepProgram:
    """Mark the communication steps of every `overlap` block, and every KV handoff, as
    running on the comm stream."""
    if not any(block.overlap for block in steps.blocks) and not steps.program.kv_handoff:
        return steps
    return replace(steps, blocks=tuple(map(_assign_block, steps.blocks)))


def _assign_block(block: BlockSteps) -> BlockSteps:
    if not block.overlap:
        return replace(block, steps=tuple(map(_assign_handoff, block.steps)))
    return replace(block, steps=tuple(map(_assign_step, block.steps)))


def _assign_handoff(step: Step) -> Step:
    return replace(step, stream=Stream.COMM) if step.base == KV_SEND else step


def _assign_step(step: Step) -> Step:
    # `Sync()` (a receiver's wait) is not communication: it stays on the compute stream
    if step.joint and step.terms[0].kind.is_communication:
        return replace(step, stream=Stream.COMM)
    return step
