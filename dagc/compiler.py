"""The front-end pipeline: read a file, parse it, check it, lower it to the logical IR.

This is the library entry point; the CLI is one of its callers::

    import dagc
    result = dagc.compile_file("examples/seed/baseline_tp8_pp2.dag")
    print(result.program)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagc.diagnostics import Diagnostic, DiagnosticBag, Severity
from dagc.frontend import ast
from dagc.frontend.parser import parse
from dagc.frontend.sema import lower_to_logical
from dagc.inputs import DAG_FILE, read_input
from dagc.ir.logical import Program
from dagc.source import SourceFile, Span


@dataclass(frozen=True)
class CompileResult:
    """A checked program and the warnings found on the way."""

    program: Program
    warnings: tuple[Diagnostic, ...]
    source: SourceFile


def read_source(path: str | os.PathLike[str]) -> SourceFile:
    """Read a .dag file as UTF-8; unreadable input raises DiagnosticError (see dagc.inputs)."""
    source = read_input(path, DAG_FILE)
    _raise_if_empty(source)
    return source


def _raise_if_empty(source: SourceFile) -> None:
    """A file of nothing but whitespace and comments is an error of its own."""
    # Only what the lexer skips counts as whitespace: a no-break space is a syntax error.
    if all(not line.split("#", 1)[0].strip(" \t\f\r") for line in source.text.split("\n")):
        bag = DiagnosticBag(source)
        bag.error(
            Span.point(1, 1),
            "the file is empty",
            help="a .dag file declares a `model`, a `workload`, `devices` and `layers`",
        )
        bag.raise_if_errors()


def parse_source(source: SourceFile) -> ast.File:
    """Parse only (no semantic checks); syntax errors raise DiagnosticError."""
    bag = DiagnosticBag(source)
    tree = parse(source, bag)
    bag.raise_if_errors()
    assert tree is not None
    return tree


def compile_source(source: SourceFile, *, werror: bool = False) -> CompileResult:
    """Parse, check and lower `source`; errors (all of them) raise DiagnosticError."""
    _raise_if_empty(source)
    bag = DiagnosticBag(source)
    tree = parse(source, bag)
    program = lower_to_logical(tree, source, bag) if tree is not None else None
    if werror:
        bag.diagnostics = [_as_error(d) for d in bag.diagnostics]
    bag.raise_if_errors()
    assert program is not None
    return CompileResult(program, tuple(bag.sorted()), source)


def compile_file(path: str | os.PathLike[str], *, werror: bool = False) -> CompileResult:
    """Read and compile a .dag file."""
    return compile_source(read_source(path), werror=werror)


def compile_text(text: str, path: str = "<memory>", *, werror: bool = False) -> CompileResult:
    """Compile .dag text held in memory."""
    return compile_source(SourceFile(path, text), werror=werror)


def _as_error(diagnostic: Diagnostic) -> Diagnostic:
    if diagnostic.severity is Severity.ERROR:
        return diagnostic
    return Diagnostic(
        Severity.ERROR,
        diagnostic.message + " [--werror]",
        diagnostic.source,
        diagnostic.span,
        diagnostic.help,
        diagnostic.notes,
    )
