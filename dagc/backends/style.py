"""What the picture back ends share about looks: the kinds they colour, the phases a training
program's Gantt chart colours, and the critical path's colour. Fills and shapes stay with
each back end (a Gantt bar and a graphviz node differ).
"""

from __future__ import annotations

from dagc.ir.steps import Phase
from dagc.ir.terms import OpKind

# Every operation kind, in the order legends list them.
KINDS: tuple[OpKind, ...] = tuple(OpKind)

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/): vermillion.
CRITICAL = "#D55E00"

# A training program's pictures colour operations by phase (prefill has only the forward and
# keeps the colours by kind), also from Okabe & Ito's palette; the critical path's vermillion
# stays apart. Legends list the phases in this order.
PHASES: tuple[Phase, ...] = tuple(Phase)
PHASE_COLOUR: dict[Phase, str] = {
    Phase.FORWARD: "#0072B2",  # blue
    Phase.RECOMPUTE: "#56B4E9",  # sky blue: a forward again
    Phase.BACKWARD: "#E69F00",  # orange
    Phase.WEIGHT_GRAD: "#F0E442",  # yellow
    Phase.ITERATION: "#CC79A7",  # reddish purple
}
PHASE_LABEL: dict[Phase, str] = {
    Phase.FORWARD: "forward",
    Phase.RECOMPUTE: "recompute",
    Phase.BACKWARD: "backward",
    Phase.WEIGHT_GRAD: "weight gradient",
    Phase.ITERATION: "iteration (gradient reduction, optimizer)",
}
# Communication (collectives, transfers) in a phase-coloured picture: the phase's colour,
# hatched.
COMMUNICATION_HATCH = "////"
