"""Training in chunks: one wall-clock budget shared by the stages of a multi-stage training run.

The priors train in stages (RED: REN then DCN; DREAM: stage 1, 2A, 2B; LegoPET: PnPNet then
cDPM; DDIP: one). On 2 CPU cores a realistic run takes days, so it runs in chunks of at most
a couple of hours: each chunk gets a :class:`TrainingBudget`, every stage trains on whatever is
left of it, and when it runs out mid-stage the stage's checkpoint is written and
:class:`TrainingIncomplete` tells the caller where the run stopped. The next chunk calls the same
training function with ``resume=True``: finished stages load their final checkpoint (no step is
repeated) and the unfinished stage continues exactly where it stopped (:class:`~.train.Trainer`
checkpoints its optimiser and random state).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .train import Trainer

__all__ = ["TrainingBudget", "TrainingIncomplete"]


class TrainingIncomplete(Exception):
    """A training run's time budget ended before its last stage finished.

    Every stage's checkpoint is on disk; call the training function again with ``resume=True``.

    Attributes
    ----------
    stage : str
        The stage that was training (e.g. ``"s1"``, ``"cdpm"``).
    step, steps : int
        Optimiser steps done in that stage, and its total.
    checkpoint : Path or None
        The stage's checkpoint file.
    """

    def __init__(self, stage: str, step: int, steps: int, checkpoint: Path | None):
        self.stage, self.step, self.steps, self.checkpoint = stage, int(step), int(steps), checkpoint
        super().__init__(f"the time budget ended in stage {stage!r} at step {step} of {steps}; its checkpoint is "
                         f"{checkpoint} (continue with resume=True)")


class TrainingBudget:
    """Wall-clock seconds for one chunk of a training run, shared by its stages.

    Parameters
    ----------
    time_limit_s : float or None
        Seconds from construction; ``None`` for no limit.
    out_dir : path or None
        The run's output folder: a limited budget needs one, or the steps done would be lost.
    resume : bool
        Whether the run continues from ``out_dir``'s checkpoints (needs an ``out_dir`` too).
    """

    def __init__(self, time_limit_s: float | None = None, out_dir=None, resume: bool = False):
        if resume and out_dir is None:
            raise ValueError("resume=True needs an out_dir (the folder holding the checkpoints)")
        self.resume = bool(resume)
        if time_limit_s is not None:
            if isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float)):
                raise TypeError(f"time_limit_s must be a number of seconds or None, got {type(time_limit_s).__name__}")
            if not (math.isfinite(time_limit_s) and time_limit_s > 0):
                raise ValueError(f"time_limit_s must be a positive number of seconds, got {time_limit_s!r}")
            if out_dir is None:
                raise ValueError("a time_limit_s needs an out_dir for the checkpoints (the steps would be lost)")
        self.deadline = None if time_limit_s is None else time.perf_counter() + float(time_limit_s)

    def remaining(self) -> float | None:
        """Seconds left (``>= 0``), or ``None`` without a limit."""
        return None if self.deadline is None else max(0.0, self.deadline - time.perf_counter())

    def fit(self, trainer: Trainer, stage: str) -> Trainer:
        """Train ``trainer`` (resumed from its checkpoint when the run resumes) on what is left of the
        budget; raise :class:`TrainingIncomplete` when the stage did not reach its last step."""
        trainer.fit(resume=self.resume, time_limit_s=self.remaining())
        if trainer.step < trainer.config.steps:
            path = None if trainer.out_dir is None else trainer.out_dir / "checkpoint.safetensors"
            raise TrainingIncomplete(stage, trainer.step, trainer.config.steps, path)
        return trainer
