"""What the picture back ends share about looks: the kinds they colour and the critical path's
colour. Fills and shapes stay with each back end (a Gantt bar and a graphviz node differ).
"""

from __future__ import annotations

from dagc.ir.terms import OpKind

# Every operation kind, in the order legends list them.
KINDS: tuple[OpKind, ...] = tuple(OpKind)

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/): vermillion.
CRITICAL = "#D55E00"
