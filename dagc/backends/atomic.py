"""Atomic output writing, now in the base module dagc.outputs (see its docstring).

Kept so that `from dagc.backends.atomic import ...` goes on working for existing callers.
"""

from dagc.outputs import temporary_beside, terminate_as_interrupt, write_text_atomically

__all__ = ["temporary_beside", "terminate_as_interrupt", "write_text_atomically"]
