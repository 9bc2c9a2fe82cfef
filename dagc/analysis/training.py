"""The training figures of `dagc analyze` (docs/training.md, "Report").

One iteration of a training program is its critical path: every micro-batch's forward and
backward on every stage, then the once-per-iteration gradient reduction and optimizer step.
The device DAG expands replica 0 of the dp replicas (they are identical), N GPUs; the run
has dp·N. With B the global batch and S the sequence length:

- tokens/s = B·S / iteration; per GPU, over all dp·N GPUs;
- model FLOPs of a training step = 3 × the forward's model FLOPs of the global batch
  (forward, input gradients, weight gradients); model TFLOP/s per GPU = that / iteration /
  (dp·N); MFU = that over the preset's peak;
- executed FLOPs = dp × the FLOPs the device DAG runs (recomputation, replicated and
  padded work included); HFU = that / (iteration × peak × dp·N);
- bubble: the idle share of the iteration on the busiest GPU (largest busy time; the
  GPUs of one stage are equally busy): 1 − busy / iteration;
- exposed communication: the critical path's time in collectives and transfers.
  Communication that overlaps computation lies off the path; what lies on it the iteration
  waits for.
"""

from __future__ import annotations

from dataclasses import dataclass

# Model FLOPs of a training step per forward FLOP: the forward, the input gradients and the
# weight gradients each multiply by every weight once.
TRAINING_FLOPS_FACTOR = 3


@dataclass(frozen=True, slots=True)
class TrainingFigures:
    """What one iteration of a training program achieves; see the module docstring."""

    iteration_s: float
    dp: int
    gpus: int  # dp·N: every GPU of every replica
    tokens: int  # B·S, the global batch's tokens
    model_flops: int  # 3 × the forward's model FLOPs of the global batch
    executed_flops: int  # dp × the device DAG's FLOPs
    peak_flops: float  # per GPU
    bubble: float
    busiest_gpu: int
    exposed_communication_s: float

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.iteration_s if self.iteration_s > 0 else None

    @property
    def tokens_per_s_per_gpu(self) -> float | None:
        rate = self.tokens_per_s
        return rate / self.gpus if rate is not None else None

    @property
    def model_tflops_per_gpu(self) -> float:
        if self.iteration_s <= 0:
            return 0.0
        return self.model_flops / self.iteration_s / self.gpus / 1e12

    def _utilisation(self, flops: int) -> float:
        if self.iteration_s <= 0 or self.peak_flops <= 0:
            return 0.0
        return flops / self.iteration_s / (self.peak_flops * self.gpus)

    @property
    def mfu(self) -> float:
        return self._utilisation(self.model_flops)

    @property
    def hfu(self) -> float:
        return self._utilisation(self.executed_flops)


def training_figures(
    *,
    iteration_s: float,
    dp: int,
    layout_gpus: int,
    tokens: int,
    forward_model_flops: int,
    executed_flops: int,
    peak_flops: float,
    busy_s: dict[int, float],
    communication_s: float,
) -> TrainingFigures:
    """The figures from the analysis's parts: `executed_flops` and `busy_s` are replica
    0's (the device DAG), `forward_model_flops` the global batch's forward."""
    busiest = min(busy_s, key=lambda g: (-busy_s[g], g)) if busy_s else 0
    busy = busy_s.get(busiest, 0.0)
    bubble = max(iteration_s - busy, 0.0) / iteration_s if iteration_s > 0 else 0.0
    return TrainingFigures(
        iteration_s=iteration_s,
        dp=dp,
        gpus=dp * layout_gpus,
        tokens=tokens,
        model_flops=TRAINING_FLOPS_FACTOR * forward_model_flops,
        executed_flops=dp * executed_flops,
        peak_flops=peak_flops,
        bubble=bubble,
        busiest_gpu=busiest,
        exposed_communication_s=communication_s,
    )
