"""The `dagc` command line: parses options and calls the library, nothing more.

stdout carries only what was asked for; diagnostics, summaries and progress go to stderr.
Exit codes: 0 success, 2 a problem with the input or the options, 1 an internal error.
"""

from __future__ import annotations

import enum
import errno
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, TypeVar

import typer

import dagc
from dagc.cli_errors import DagcGroup
from dagc.diagnostics import Diagnostic, DiagnosticError, Severity

app = typer.Typer(
    name="dagc",
    cls=DagcGroup,  # usage errors in dagc's plain style, not typer's boxes
    help="Compile and analyse plans of how a large language model runs on many GPUs.\n\n"
    + "\n\n".join(dagc.SCOPE),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ISSUES_URL = "https://github.com/dagc/dagc/issues"
T = TypeVar("T")

FileArg = Annotated[Path, typer.Argument(help="A .dag file.", show_default=False)]
WerrorOpt = Annotated[bool, typer.Option("--werror", help="Treat warnings as errors.")]
MaxOpsOpt = Annotated[
    int, typer.Option(min=1, help="Refuse to expand to more device operations than this.")
]


class Emit(enum.StrEnum):
    ast = "ast"
    ir = "ir"
    steps = "steps"
    device = "device"
    json = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dagc {dagc.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Compile and analyse plans of how a large language model runs on many GPUs."""


def _fail_input(error: DiagnosticError) -> NoReturn:
    typer.echo(error.render(), err=True)
    raise typer.Exit(2)


def _run(action: Callable[[], T]) -> T:
    """Run library code, turning diagnostics into exit 2 and bugs into exit 1."""
    try:
        return action()
    except DiagnosticError as error:
        _fail_input(error)
    except (typer.Exit, typer.Abort, KeyboardInterrupt, BrokenPipeError):
        raise  # a closed pipe is the reader's choice, not a bug (see `run`)
    except Exception as error:  # a bug in dagc, not in the user's input
        if os.environ.get("DAGC_DEBUG") == "1":
            traceback.print_exc()
        else:
            detail = " ".join(str(error).split())  # one line, whatever the message holds
            what = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
            typer.echo(
                f"dagc: internal error: {what} (a bug in dagc; rerun with DAGC_DEBUG=1 for a"
                f" traceback and report it at {ISSUES_URL})",
                err=True,
            )
        raise typer.Exit(1) from None


@contextmanager
def _progress(label: str) -> Iterator[None]:
    """A spinner on stderr for work that lasts more than a second (terminals only)."""
    if not sys.stderr.isatty():
        yield
        return
    from rich.console import Console

    status = Console(stderr=True).status(label)
    timer = threading.Timer(1.0, status.start)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        status.stop()


def _print_warnings(result: dagc.CompileResult) -> None:
    for warning in result.warnings:
        typer.echo(warning.render(), err=True)


@app.command()
def check(
    files: Annotated[
        list[Path], typer.Argument(help="One or more .dag files.", show_default=False)
    ],
    werror: WerrorOpt = False,
) -> None:
    """Check .dag files and report every error and warning (nothing goes to stdout)."""

    def diagnostics_of(path: Path) -> tuple[tuple[Diagnostic, ...], bool]:
        """A file's errors and warnings, and whether it compiled."""
        try:
            return dagc.compile_file(path, werror=werror).warnings, True
        except DiagnosticError as error:
            return error.diagnostics, False

    failed = 0
    warnings = 0
    printed = False
    for file in files:
        diagnostics, ok = _run(lambda path=file: diagnostics_of(path))  # type: ignore[misc]
        if not ok:
            failed += 1
        warnings += sum(d.severity is Severity.WARNING for d in diagnostics)
        for diagnostic in diagnostics:  # one blank line between diagnostics, across files too
            typer.echo(("\n" if printed else "") + diagnostic.render(), err=True)
            printed = True
    summary = f"dagc: checked {len(files)} file{'s' if len(files) != 1 else ''}"
    summary += f", {failed} with errors, {warnings} warning{'s' if warnings != 1 else ''}"
    typer.echo(summary, err=True)
    if failed:
        raise typer.Exit(2)


def _pass_names() -> str:
    from dagc.passes.manager import PIPELINE

    return ", ".join(p.name for p in PIPELINE)


@app.command()
def lower(
    file: FileArg,
    emit: Annotated[
        Emit,
        typer.Option(
            help="What to print: the syntax tree (ast), the logical IR (ir), the step IR"
            " (steps), the device IR (device) or the device DAG as node-link JSON (json)."
        ),
    ] = Emit.ir,
    print_after: Annotated[
        list[str] | None,
        typer.Option(
            "--print-after",
            metavar="PASS",
            help="Also print the IR after this pass (repeatable, or `all`). Passes: place,"
            " shard-attention, shard-mlp, shard-moe, shard-embed-head, insert-collectives,"
            " insert-transfers, microbatch, order.",
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Verify the IR after every pass.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    max_ops: MaxOpsOpt = 50_000_000,
    werror: WerrorOpt = False,
) -> None:
    """Print a .dag file at any level: syntax tree, logical IR, step IR or device DAG."""
    if emit is Emit.ast:
        from dagc.frontend.ast import dump

        tree = _run(lambda: dagc.parse_source(dagc.read_source(file)))
        _emit(output, lambda out: out.write(dump(tree) + "\n"))
        return
    result = _run(lambda: dagc.compile_file(file, werror=werror))
    _print_warnings(result)
    if emit is Emit.ir and not print_after:
        _emit(output, lambda out: out.write(str(result.program) + "\n"))
        return
    _lower_device(result, emit, print_after or [], verify, output, max_ops, werror)


def _lower_device(
    result: dagc.CompileResult,
    emit: Emit,
    print_after: list[str],
    verify: bool,
    output: Path | None,
    max_ops: int,
    werror: bool,
) -> None:
    from dagc.expand import expand
    from dagc.passes.manager import REGISTRY, PassOptions

    wanted = set(REGISTRY) if "all" in print_after else set(print_after)
    unknown = sorted(wanted - set(REGISTRY))
    if unknown:
        _usage_error(
            f"unknown pass `{unknown[0]}` for --print-after", f"the passes are {_pass_names()}"
        )
    if emit is Emit.ir:
        _emit(output, lambda out: out.write(str(result.program) + "\n"))
    options = PassOptions(print_after=frozenset(wanted), verify_each=verify, stream=sys.stdout)
    if emit is Emit.steps:
        from dagc.passes.manager import lower_to_steps

        steps = _run(lambda: lower_to_steps(result.program, options))
        _emit(output, lambda out: out.write(str(steps) + "\n"))
        return
    with _progress(f"expanding {result.source.path}"):
        expansion = _run(lambda: expand(result, max_ops=max_ops, options=options))
    for warning in expansion.warnings:
        typer.echo(warning.render(), err=True)
    if werror and expansion.warnings:
        raise typer.Exit(2)
    if emit is Emit.device:
        from dagc.ir.device import write_device

        _emit(output, lambda out: write_device(expansion.graph, out))
    elif emit is Emit.json:
        from dagc.backends.device_json import write_device_json

        _emit(output, lambda out: write_device_json(expansion.graph, out))


def _usage_error(message: str, help: str) -> NoReturn:
    """A problem with the command line: the message and a fix, as diagnostics show them."""
    from dagc.diagnostics import DiagnosticBag

    bag = DiagnosticBag(None)
    bag.error(None, message, help=help)
    typer.echo(bag.diagnostics[0].render(), err=True)
    raise typer.Exit(2)


def _emit(output: Path | None, write: Callable[[TextIO], object]) -> None:
    """Write to stdout, or atomically to `output`."""
    if output is None:
        write(sys.stdout)
        return
    from dagc.backends.atomic import write_text_atomically as write_atomically

    try:
        write_atomically(output, write)
    except OSError as error:
        _usage_error(
            f"cannot write {output}: {error.strerror}",
            "check that the folder exists and is writable",
        )


class ReportFormat(enum.StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


GpuOpt = Annotated[
    str | None,
    typer.Option("--gpu", help="GPU preset (a100, h100, h200); overrides the file's `gpu`."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a roofline parameter, e.g. --set matmul_efficiency=0.6 (repeatable;"
        " see docs/cost-models.md for the names).",
    ),
]
TableOpt = Annotated[
    Path | None,
    typer.Option("--cost-table", help="CSV of measured m,k,n,seconds for Get_Time."),
]
PluginOpt = Annotated[
    Path | None,
    typer.Option("--cost-plugin", help="Python file whose functions override cost terms."),
]
MatmulOnlyOpt = Annotated[
    bool, typer.Option("--matmul-only", help="Only matrix products cost time (as in the seed).")
]


class Symmetry(enum.StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


SymmetryOpt = Annotated[
    Symmetry,
    typer.Option(
        "--symmetry",
        help="Analyse one GPU of each set doing identical work: same results, faster."
        " auto: above 200,000 operations.",
    ),
]


def _symmetric(choice: Symmetry) -> bool | None:
    return {Symmetry.auto: None, Symmetry.on: True, Symmetry.off: False}[choice]


def _cost_options(
    gpu: str | None,
    settings: list[str] | None,
    table: Path | None,
    plugin: Path | None,
    matmul_only: bool,
) -> Any:
    from dagc.api import CostOptions

    overrides: dict[str, float] = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            overrides[key.strip()] = float(value)
        except ValueError:
            _usage_error(
                f"--set expects KEY=NUMBER, got `{item}`", "e.g. --set matmul_efficiency=0.6"
            )
    return CostOptions(gpu, overrides, table, plugin, matmul_only)


@app.command()
def analyze(
    file: FileArg,
    output_format: Annotated[
        ReportFormat, typer.Option("--format", help="Report format.")
    ] = ReportFormat.text,
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    path_limit: Annotated[
        int, typer.Option(min=0, help="Critical-path nodes listed in text reports (0: all).")
    ] = 60,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file.")
    ] = None,
    formula: Annotated[
        bool, typer.Option("--formula", help="Add the runtime formula (see `dagc formula`).")
    ] = False,
    max_ops: MaxOpsOpt = 50_000_000,
    symmetry: SymmetryOpt = Symmetry.auto,
    werror: WerrorOpt = False,
    render: Annotated[
        Path | None,
        typer.Option(
            "--render",
            metavar="PICTURE",
            help="Also draw the block view to this .svg, .png, .pdf or .dot (see `dagc render`).",
        ),
    ] = None,
) -> None:
    """Analyze a configuration: critical path, per-GPU time, MFU and memory."""
    from dagc.api import analyze_compiled, formula_compiled
    from dagc.backends import formula as printers
    from dagc.backends.report import FormulaSection, write_json, write_markdown, write_text

    options = _cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    compiled = _run(lambda: dagc.compile_file(file, werror=werror))
    symmetric = _symmetric(symmetry)
    with _progress(f"analysing {file}"):
        result = _run(
            lambda: analyze_compiled(compiled, options, max_ops=max_ops, symmetric=symmetric)
        )
    for warning in result.warnings:
        typer.echo(warning.render(), err=True)
    for message in result.analysis.warnings:
        typer.echo(f"{file}: warning: {message}", err=True)
    if werror and (result.warnings or result.analysis.warnings):
        typer.echo("dagc: error: warnings are errors (--werror)", err=True)
        raise typer.Exit(2)
    analysis = result.analysis
    section = None
    if formula:
        with _progress(f"deriving the formula of {file}"):
            found = _run(
                lambda: formula_compiled(
                    compiled,
                    matmul_only=matmul_only,
                    max_ops=max_ops,
                    symmetric=True if symmetric is None else symmetric,
                )
            )
        section = FormulaSection(
            printers.text(found.expression, width=80),
            printers.python(found.expression),
            found.exact,
            found.notes,
        )
    if output_format is ReportFormat.json:
        _emit(output, lambda out: write_json(analysis, out, formula=section))
    elif output_format is ReportFormat.markdown:
        _emit(
            output,
            lambda out: write_markdown(analysis, out, path_limit=path_limit, formula=section),
        )
    else:
        _emit(output, lambda out: write_text(analysis, out, path_limit=path_limit, formula=section))
    if render is not None:
        _draw(compiled, options, render, view="block", max_ops=max_ops, warn=False)


# British spelling, as in dagc's own help text; hidden so `dagc -h` lists each command once.
app.command("analyse", hidden=True, help="Another name for `analyze`.")(analyze)


class FormulaFormat(enum.StrEnum):
    text = "text"
    python = "python"
    latex = "latex"
    json = "json"


@app.command()
def formula(
    file: FileArg,
    output_format: Annotated[
        FormulaFormat,
        typer.Option(
            "--format",
            help="text (the seed's notation), python (one expression), latex, or json (a tree).",
        ),
    ] = FormulaFormat.text,
    matmul_only: MatmulOnlyOpt = False,
    symbolic_dims: Annotated[
        bool,
        typer.Option(
            "--symbolic-dims", help="Write dimensions in model symbols (B*S, H, 3*d) where known."
        ),
    ] = False,
    max_branches: Annotated[
        int,
        typer.Option(min=1, help="Most incomparable branches kept before falling back (see docs)."),
    ] = 32,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the formula to this file.")
    ] = None,
    max_ops: MaxOpsOpt = 50_000_000,
    symmetry: SymmetryOpt = Symmetry.auto,
    werror: WerrorOpt = False,
) -> None:
    """Print the runtime as a formula of cost terms, exact for every monotone cost model."""
    from dagc.api import formula_compiled
    from dagc.backends import formula as printers

    compiled = _run(lambda: dagc.compile_file(file, werror=werror))
    with _progress(f"deriving the formula of {file}"):
        result = _run(
            lambda: formula_compiled(
                compiled,
                matmul_only=matmul_only,
                max_branches=max_branches,
                max_ops=max_ops,
                symmetric=_symmetric(symmetry) if symmetry is not Symmetry.auto else True,
            )
        )
    for warning in result.warnings:
        typer.echo(warning.render(), err=True)
    if werror and result.warnings:
        raise typer.Exit(2)
    expr = result.expression
    notes = [f"note: {note}" for note in result.notes]
    for note in notes:
        typer.echo(f"{file}: {note}", err=True)
    if output_format is FormulaFormat.python:
        _emit(output, lambda out: out.write(printers.python(expr) + "\n"))
    elif output_format is FormulaFormat.latex:
        text = printers.latex(expr, symbolic=symbolic_dims)
        _emit(output, lambda out: out.write("\n".join([text, *notes]) + "\n"))
    elif output_format is FormulaFormat.json:
        _emit(
            output,
            lambda out: printers.write_json(
                expr, out, exact=result.exact, notes=list(result.notes)
            ),
        )
    else:
        text = printers.text(expr, symbolic=symbolic_dims)
        _emit(output, lambda out: out.write("\n".join([text, *notes]) + "\n"))


def _analyze_one(
    file: Path, options: Any, max_ops: int, symmetric: bool | None, werror: bool
) -> tuple[Any, bool]:
    """One file's analysis, its warnings printed on stderr, and whether it had any."""
    from dagc.api import analyze_compiled

    compiled = _run(lambda: dagc.compile_file(file, werror=werror))
    result = _run(lambda: analyze_compiled(compiled, options, max_ops=max_ops, symmetric=symmetric))
    for warning in result.warnings:
        typer.echo(warning.render(), err=True)
    for message in result.analysis.warnings:
        typer.echo(f"{file}: warning: {message}", err=True)
    return result.analysis, bool(result.warnings or result.analysis.warnings)


@app.command()
def compare(
    files: Annotated[
        list[Path], typer.Argument(help="One or more .dag files.", show_default=False)
    ],
    output_format: Annotated[
        ReportFormat | None,
        typer.Option("--format", help="Table format: text, markdown or json.", show_default=False),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Same as --format markdown.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the table to this file.")
    ] = None,
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    max_ops: MaxOpsOpt = 50_000_000,
    symmetry: SymmetryOpt = Symmetry.auto,
    werror: WerrorOpt = False,
) -> None:
    """Compare configurations side by side: time, tokens/s, speedup, bottleneck, MFU."""
    from dagc.backends.report import write_comparison

    if markdown and output_format not in (None, ReportFormat.markdown):
        _usage_error(
            f"--markdown contradicts --format {output_format}", "give one of the two options"
        )
    fmt = ReportFormat.markdown if markdown else output_format or ReportFormat.text
    options = _cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    analyses = []
    warned = False
    for file in files:
        with _progress(f"analysing {file}"):
            analysis, warnings = _analyze_one(file, options, max_ops, _symmetric(symmetry), werror)
        analyses.append(analysis)
        warned = warned or warnings
    if werror and warned:
        typer.echo("dagc: error: warnings are errors (--werror)", err=True)
        raise typer.Exit(2)
    _emit(output, lambda out: write_comparison(analyses, out, fmt=fmt.value))


class ProfileBackend(enum.StrEnum):
    auto = "auto"
    numpy = "numpy"
    torch = "torch"


def _size_option(name: str) -> Any:
    return typer.Option(
        f"--{name}",
        metavar="N,N,...",
        help=f"Values of {name}, comma-separated (default: the backend's grid).",
        show_default=False,
    )


@app.command()
def profile(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The CSV table to write.", show_default=False)
    ],
    m: Annotated[str | None, _size_option("m")] = None,
    k: Annotated[str | None, _size_option("k")] = None,
    n: Annotated[str | None, _size_option("n")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per shape (median).")] = 3,
    backend: Annotated[
        ProfileBackend,
        typer.Option(help="torch: bf16 on a CUDA GPU; numpy: float32 on the CPU; auto: either."),
    ] = ProfileBackend.auto,
) -> None:
    """Measure matrix-product times on this machine and write them as a cost table."""
    import time

    import rich.progress as rp
    from rich.console import Console

    from dagc import profile as prof

    chosen = _run(lambda: prof.resolve_backend(backend.value))
    default = prof.default_grid(chosen)

    def axis(text: str | None, name: str, index: int) -> list[int]:
        return list(default[index]) if text is None else prof.parse_sizes(text, f"--{name}")

    grid = _run(lambda: (axis(m, "m", 0), axis(k, "k", 1), axis(n, "n", 2)))
    problem = _unwritable(output)  # say so before minutes of measuring
    if problem:
        typer.echo(f"dagc: error: cannot write {output}: {problem}", err=True)
        raise typer.Exit(2)
    count = len(grid[0]) * len(grid[1]) * len(grid[2])
    typer.echo(
        f"dagc: profiling {count} shapes ({prof.describe_grid(grid)}) with"
        f" {chosen.describe()}, median of {repeats} run{'s' if repeats != 1 else ''} each",
        err=True,
    )
    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn())
    timing = (rp.TimeElapsedColumn(), rp.TimeRemainingColumn())
    console = Console(stderr=True)
    started = time.perf_counter()
    # Only a terminal shows a bar; a log file gets the summary lines alone.
    with rp.Progress(
        *columns, *timing, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task("measuring", total=count)

        def advance(done: int, total: int, row: prof.Row) -> None:
            bar.update(task, completed=done, description=f"{row[0]}x{row[1]}x{row[2]}")

        rows = _run(
            lambda: prof.profile_matmul(grid, backend=chosen, repeats=repeats, progress=advance)
        )
    try:
        prof.write_cost_table(rows, output)
    except OSError as error:
        typer.echo(f"dagc: error: cannot write {output}: {error.strerror}", err=True)
        raise typer.Exit(2) from None
    elapsed = time.perf_counter() - started
    typer.echo(f"dagc: measured {len(rows)} shapes in {elapsed:.1f} s; wrote {output}", err=True)


class RenderView(enum.StrEnum):
    device = "device"
    block = "block"
    logical = "logical"


def _span_option(name: str, what: str) -> Any:
    return typer.Option(
        f"--{name}",
        metavar="N|A..B",
        help=f"Draw only these {what} (inclusive).",
        show_default=False,
    )


def _draw(
    compiled: dagc.CompileResult,
    options: Any,
    output: Path,
    *,
    view: str,
    filters: Any = None,
    max_nodes: int | None = None,
    whole: bool = False,
    max_ops: int = 50_000_000,
    werror: bool = False,
    warn: bool = True,
) -> None:
    """Check the output, time the program, draw it, and say on stderr what was drawn.

    `warn`: print the compiler's warnings (analyze --render has printed them already)."""
    from dagc.backends import render as pictures
    from dagc.backends.schedule import build_schedule, check_output

    fmt = _run(lambda: check_output(output, pictures.FORMATS))
    if fmt != "dot":
        _run(lambda: pictures.find_dot(fmt))
    with _progress(f"drawing {output}"):
        schedule, warnings = _run(lambda: build_schedule(compiled, options, max_ops=max_ops))
        _print_warnings_or_fail(warnings if warn else (), werror)
        notes = _run(
            lambda: pictures.render(
                schedule,
                output,
                view=view,
                filters=filters,
                max_nodes=max_nodes or pictures.DEFAULT_MAX_NODES,
                whole=whole,
            )
        )
    for note in notes:
        typer.echo(f"dagc: note: {note}", err=True)
    typer.echo(f"dagc: wrote {output}", err=True)


def _print_warnings_or_fail(warnings: Any, werror: bool) -> None:
    for warning in warnings:
        typer.echo(warning.render(), err=True)
    if werror and warnings:
        typer.echo("dagc: error: warnings are errors (--werror)", err=True)
        raise typer.Exit(2)


@app.command("render")
def render_command(
    file: FileArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The picture: .svg, .png, .pdf or .dot.", show_default=False
        ),
    ],
    view: Annotated[
        RenderView,
        typer.Option(
            help="device: every operation; block: one node per block (or part of one,"
            " between collectives), GPU and micro-batch; logical: the layer ranges and"
            " blocks of the file."
        ),
    ] = RenderView.device,
    layers: Annotated[str | None, _span_option("layers", "layers")] = None,
    gpus: Annotated[str | None, _span_option("gpus", "GPUs")] = None,
    microbatch: Annotated[str | None, _span_option("microbatch", "micro-batches")] = None,
    max_nodes: Annotated[
        int,
        typer.Option(min=1, help="Above this many nodes, draw the block view of a slice instead."),
    ] = 2000,
    whole: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Draw every node the view and filters select: no automatic slice, however"
            " large the picture.",
        ),
    ] = False,
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    max_ops: MaxOpsOpt = 50_000_000,
    werror: WerrorOpt = False,
) -> None:
    """Draw a configuration with graphviz: GPUs, operations, collectives, critical path."""
    from dagc.backends.schedule import Filters, parse_span

    options = _cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    filters = _run(
        lambda: Filters(
            parse_span(layers, "--layers"),
            parse_span(gpus, "--gpus"),
            parse_span(microbatch, "--microbatch"),
        )
    )
    compiled = _run(lambda: dagc.compile_file(file, werror=werror))
    _draw(
        compiled,
        options,
        output,
        view=view.value,
        filters=filters,
        max_nodes=max_nodes,
        whole=whole,
        max_ops=max_ops,
        werror=werror,
    )


@app.command("timeline")
def timeline_command(
    file: FileArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="trace.json (Chrome/Perfetto trace) or a Gantt chart: .png, .svg or .pdf.",
            show_default=False,
        ),
    ],
    gpu: GpuOpt = None,
    settings: SetOpt = None,
    cost_table: TableOpt = None,
    cost_plugin: PluginOpt = None,
    matmul_only: MatmulOnlyOpt = False,
    max_ops: MaxOpsOpt = 50_000_000,
    werror: WerrorOpt = False,
) -> None:
    """When every operation runs on every GPU: a Perfetto trace or a Gantt chart."""
    from dagc.backends.schedule import build_schedule, check_output
    from dagc.backends.timeline import FORMATS, write_timeline

    options = _cost_options(gpu, settings, cost_table, cost_plugin, matmul_only)
    _run(lambda: check_output(output, FORMATS))
    compiled = _run(lambda: dagc.compile_file(file, werror=werror))
    with _progress(f"writing {output}"):
        schedule, warnings = _run(lambda: build_schedule(compiled, options, max_ops=max_ops))
        _print_warnings_or_fail(warnings, werror)
        notes = _run(lambda: write_timeline(schedule, output))
    for note in notes:
        typer.echo(f"dagc: note: {note}", err=True)
    typer.echo(f"dagc: wrote {output}", err=True)


def _unwritable(output: Path) -> str | None:
    """Why `output` cannot be written, found by trying (permissions alone mislead root)."""
    import tempfile

    if output.is_dir():
        return "it is a folder"
    if not output.parent.is_dir():
        return "its folder does not exist"
    try:
        with tempfile.TemporaryFile(dir=output.parent):
            pass
    except OSError as error:
        return f"its folder cannot be written ({error.strerror})"
    return None


def run() -> None:
    """Console-script entry point.

    Output failures end as a Unix tool's would: a reader that stops early (`| head`) ends
    dagc quietly with status 0; a failed write (a full disk) is one line and status 2.
    """
    code: Any = 0
    try:
        app()
    except SystemExit as done:
        code = done.code
    except OSError as error:
        code = _output_failure(error)
    try:
        sys.stdout.flush()  # buffered output fails here, not at interpreter shutdown
    except OSError as error:
        code = _output_failure(error)
    sys.exit(code)


# A write to stdout can fail with these; any other OSError is a bug and is raised.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _output_failure(error: OSError) -> int:
    """The exit status for a failed write to stdout, after saying what happened."""
    if not isinstance(error, BrokenPipeError) and error.errno not in _OUTPUT_ERRNOS:
        raise error
    # Nothing more can reach the reader: send the rest of stdout nowhere, so that Python's
    # own flush at exit does not fail a second time.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(error, BrokenPipeError):
        return 0
    typer.echo(f"dagc: error: cannot write the output: {error.strerror}", err=True)
    return 2
