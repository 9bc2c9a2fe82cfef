"""The one exception every verifier raises."""

from __future__ import annotations


class VerificationError(Exception):
    """An IR broke one of its invariants: a bug in a pass, never a user error.

    The message names the offending range, block, step or operation, so that the pass that
    broke it can be found; it is not meant for users of dagc.
    """
