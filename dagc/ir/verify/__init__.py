"""Verifiers: the invariants of each IR level, checked after every pass with `--verify`.

A verifier is a bug detector: it raises VerificationError, never a user diagnostic. User
errors (a placement that deadlocks, an expansion too large) are reported by dagc.expand
before the verifier sees the graph. docs/internals.md lists the invariants of each level;
each module's docstring states them next to the code that checks them.
"""

from __future__ import annotations

from dagc.ir.device import DeviceGraph
from dagc.ir.logical import Program
from dagc.ir.steps import StepProgram
from dagc.ir.verify.device import verify_device
from dagc.ir.verify.errors import VerificationError
from dagc.ir.verify.flops import expected_flops, expected_flops_per_block
from dagc.ir.verify.logical import verify_logical
from dagc.ir.verify.steps import verify_steps


def verify(ir: object, *, ordered: bool = True) -> None:
    """Run the verifier of whatever IR level `ir` is.

    `ordered` applies to the device DAG: whether the order pass has added program order.
    """
    if isinstance(ir, Program):
        verify_logical(ir)
    elif isinstance(ir, StepProgram):
        verify_logical(ir.program)
        verify_steps(ir)
    elif isinstance(ir, DeviceGraph):
        verify_device(ir, ordered=ordered)
    else:
        raise VerificationError(f"no verifier for {type(ir).__name__}")


__all__ = [
    "VerificationError",
    "expected_flops",
    "expected_flops_per_block",
    "verify",
    "verify_device",
    "verify_logical",
    "verify_steps",
]
