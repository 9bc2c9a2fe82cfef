"""Running the search's tasks on a Ray cluster (`dagc search --ray [ADDRESS]`).

Ray is optional (`pip install dagc[ray]`). Each chunk of layouts is one `ray.remote` task;
results come back in the chunks' order, so a search gives the same result byte for byte
on Ray as in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from dagc.diagnostics import option_error


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise option_error(
            "--ray needs Ray, which is not installed",
            "install it with `pip install 'dagc[ray]'`, or use --workers N for local processes",
        ) from None
    return ray


def start(address: str) -> None:
    """Join the cluster at `address` ("" or "local": start one on this machine)."""
    ray = _ray()
    if not ray.is_initialized():
        if address in ("", "local"):
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)


def map_chunks(task: Callable[[Any], Any], chunks: list[list[Any]]) -> Iterator[list[Any]]:
    """Each chunk's results, in order, computed by remote tasks."""
    ray = _ray()
    remote = ray.remote(_run_chunk)
    shared = ray.put(task)
    refs = [remote.remote(shared, chunk) for chunk in chunks]
    for ref in refs:
        yield ray.get(ref)


def _run_chunk(task: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    return [task(item) for item in chunk]
