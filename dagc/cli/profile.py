"""`dagc profile`: measure matrix-product times on this machine into a cost table."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from dagc.cli.shared import run_library


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

    chosen = run_library(lambda: prof.resolve_backend(backend.value))
    default = prof.default_grid(chosen)

    def axis(text: str | None, name: str, index: int) -> list[int]:
        return list(default[index]) if text is None else prof.parse_sizes(text, f"--{name}")

    grid = run_library(lambda: (axis(m, "m", 0), axis(k, "k", 1), axis(n, "n", 2)))
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

        rows = run_library(
            lambda: prof.profile_matmul(grid, backend=chosen, repeats=repeats, progress=advance)
        )
    try:
        prof.write_cost_table(rows, output)
    except OSError as error:
        typer.echo(f"dagc: error: cannot write {output}: {error.strerror}", err=True)
        raise typer.Exit(2) from None
    elapsed = time.perf_counter() - started
    typer.echo(f"dagc: measured {len(rows)} shapes in {elapsed:.1f} s; wrote {output}", err=True)


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
