"""dagc: a compiler for plans of how a large language model runs on many GPUs."""

from __future__ import annotations

from dagc.compiler import (
    CompileResult,
    compile_file,
    compile_source,
    compile_text,
    parse_source,
    read_source,
)
from dagc.diagnostics import Diagnostic, DiagnosticError

__version__ = "0.1.0"

__all__ = [
    "CompileResult",
    "Diagnostic",
    "DiagnosticError",
    "__version__",
    "compile_file",
    "compile_source",
    "compile_text",
    "parse_source",
    "read_source",
]
