"""`dagc search`: the best layout of a model on a cluster, pruned by exact bounds.

`search(space, options)` (dagc.search.run) explores the layouts of a `Space`
(dagc.search.space), drops those that cannot run or cannot fit or cannot beat the best
found so far (dagc.search.prune), evaluates the rest in waves (dagc.search.evaluate) and
ranks them. docs/search.md describes the space, the bounds and the output.
"""

from dagc.search.run import Options, SearchResult, search
from dagc.search.space import Axes, Layout, Objective, Space

__all__ = ["Axes", "Layout", "Objective", "Options", "SearchResult", "Space", "search"]
