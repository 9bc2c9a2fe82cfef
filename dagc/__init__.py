"""dagc: a compiler for plans of how a large language model runs on many GPUs.

The names below are loaded on first use, so that `import dagc` (and `dagc --help`) stays
cheap: the parser and numpy load only when something is compiled or analysed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# What dagc models today, in two lines; README.md and `dagc --help` print them verbatim
# (a test keeps the three in step). Update them as the scope grows.
SCOPE = (
    "Models prefill (one forward pass), decode steps and serving (KV cache, time to first "
    "token, time per output token, throughput, batch sweeps) and training steps (backward, "
    "recomputation, data parallelism with ZeRO 0/1/3, GPipe, 1F1B, interleaved and "
    "zero-bubble schedules) of released dense and MoE transformers (fused or explicit, "
    "causal or full attention; GQA and MLA; shared experts; vocabulary-parallel embeddings) "
    "in one given layout: tp, sequence parallelism, pp, ep, attention data parallelism, "
    "attention/MoE separation with broadcast or routed dispatch, disaggregated prefill and "
    "decode, micro-batches, communication overlapping compute where the file says so; "
    "`dagc search` ranks layouts with exact pruning (slow on large spaces).",
    "Not modelled yet: continuous batching and paged KV memory, speculative decoding, "
    "tensor parallelism inside data-parallel replicas, contention between overlapping "
    "operations.",
)

_EXPORTS = {
    "CompileResult": "dagc.compiler",
    "compile_file": "dagc.compiler",
    "compile_source": "dagc.compiler",
    "compile_text": "dagc.compiler",
    "parse_source": "dagc.compiler",
    "read_source": "dagc.compiler",
    "Diagnostic": "dagc.diagnostics",
    "DiagnosticError": "dagc.diagnostics",
}

if TYPE_CHECKING:
    from dagc.compiler import (
        CompileResult,
        compile_file,
        compile_source,
        compile_text,
        parse_source,
        read_source,
    )
    from dagc.diagnostics import Diagnostic, DiagnosticError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dagc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "SCOPE",
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
