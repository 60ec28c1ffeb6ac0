"""Learning-rate and training-resolution schedules as pure functions of the iteration or the epoch.

Each LR schedule returns a multiplier of the base LR for iteration ``step`` (0-based), and the resolution schedule
the training image side for epoch ``epoch`` (0-based), so resuming at any step gives the same LR and image size as
an uninterrupted run, and each value can be checked by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "multistep", "cosine", "onecycle", "linear")

ONECYCLE_START = 1 / 25  # one-cycle starts at lr/25 ...
ONECYCLE_END = ONECYCLE_START / 1e4  # ... and ends 1e4 times lower, as torch's OneCycleLR does


@dataclass
class LRSchedule:
    """Multiplier of the base LR at each iteration.

    Args:
        kind: constant; step (MXNet's FactorScheduler: times ``factor`` every ``factor_epoch`` epochs, fractions
            allowed); multistep (times ``factor`` at each of ``step_epochs``); cosine (to zero at the last step);
            onecycle (cosine up from lr/25 over ``onecycle_pct`` of the steps, then cosine down to lr/25e4);
            linear (straight down to zero at the last step; after ``warmup_epochs`` of linear warm-up it is the
            triangular schedule of FFCV's ImageNet recipes, whose ``cyclic`` LR rises linearly from lr/1e4 to lr
            over ``lr_peak_epoch`` epochs and falls linearly to 0 at the end).
        steps_per_epoch: optimizer steps in one epoch.
        total_steps: optimizer steps in the whole run (cosine and onecycle).
        factor: decay factor of step and multistep.
        factor_epoch: epochs between two decays of ``step``.
        step_epochs: epochs at which ``multistep`` decays.
        warmup_epochs: linear warm-up from lr/warmup_steps to lr before any schedule but onecycle.
        onecycle_pct: fraction of the steps spent rising in onecycle.
    """

    kind: str
    steps_per_epoch: int
    total_steps: int
    factor: float = 0.1
    factor_epoch: float | None = None
    step_epochs: tuple[float, ...] = ()
    warmup_epochs: float = 0.0
    onecycle_pct: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.kind!r}; choices: {', '.join(SCHEDULES)}")
        if self.kind == "step" and not self.factor_epoch:
            raise ValueError("lr_schedule 'step' needs lr_factor_epoch > 0")
        self.steps_per_epoch = max(1, int(self.steps_per_epoch))
        self.total_steps = max(1, int(self.total_steps))

    @property
    def warmup_steps(self) -> int:
        return 0 if self.kind == "onecycle" else int(round(self.warmup_epochs * self.steps_per_epoch))

    def __call__(self, step: int) -> float:
        warm = self.warmup_steps
        if step < warm:
            return (step + 1) / warm
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            every = max(1, int(self.factor_epoch * self.steps_per_epoch))  # type: ignore[operator]
            return self.factor ** (step // every)
        if self.kind == "multistep":
            passed = sum(step >= int(e * self.steps_per_epoch) for e in self.step_epochs)
            return self.factor**passed
        if self.kind == "cosine":
            t = min(1.0, (step - warm) / max(1, self.total_steps - warm))
            return 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "linear":
            return 1.0 - min(1.0, (step - warm) / max(1, self.total_steps - warm))
        up = max(1, int(self.onecycle_pct * self.total_steps))
        if step < up:
            return ONECYCLE_START + (1 - ONECYCLE_START) * 0.5 * (1 - math.cos(math.pi * step / up))
        t = min(1.0, (step - up) / max(1, self.total_steps - 1 - up))
        return ONECYCLE_END + (1 - ONECYCLE_END) * 0.5 * (1 + math.cos(math.pi * t))


def keys_read(kind: str) -> dict[str, bool]:
    """Whether schedule ``kind`` reads each schedule-specific recipe key (the one home of this rule: ``validate``
    refuses a key set for a schedule that ignores it, the CLI drops a recipe file's such keys when the command line
    chooses another schedule)."""
    return {"lr_factor_epoch": kind == "step", "lr_step_epochs": kind == "multistep", "warmup_epochs": kind != "onecycle"}


def parse_epochs(text: str | None) -> tuple[float, ...]:
    """``"30,60"`` -> ``(30.0, 60.0)``, as MXNet's ``--lr-step-epochs``."""
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"lr_step_epochs must be comma-separated epochs like '30,60', got {text!r}") from None
    if list(values) != sorted(values) or any(v <= 0 for v in values):
        raise ValueError(f"lr_step_epochs must be positive and increasing, got {text!r}")
    return values


RES_MULTIPLE = 32  # FFCV's ramp lands on multiples of 32 px (ffcv-imagenet, train_imagenet.py: get_resolution)


@dataclass(frozen=True)
class ResolutionSchedule:
    """The side, in pixels, of the training images in each epoch: progressive resizing as FFCV's ImageNet recipes
    do it (libffcv/ffcv-imagenet, ``train_imagenet.py``'s ``get_resolution`` and its ``resolution`` section:
    ``min_res``, ``max_res``, ``start_ramp``, ``end_ramp``), usually below the evaluation side, which Touvron et al.
    2019 ("Fixing the train-test resolution discrepancy", FixRes) found to raise test accuracy as well as speed.

    Epoch ``e`` (0-based, as Lightning's ``current_epoch`` and FFCV's loop count): ``min_res`` while
    ``e <= start_ramp``; ``max_res`` once ``e >= end_ramp``; in between the straight line from (start_ramp,
    min_res) to (end_ramp, max_res), rounded to the *nearest* multiple of 32 px (FFCV's rule, ties to the even
    multiple as numpy's ``round``; 160 -> 192 over epochs 65-76 gives 160 up to epoch 70, 192 from 71), then kept
    within [min_res, max_res], which FFCV's rule alone can leave for sides that are not multiples of 32 (28 px
    images). A pure function of the epoch: a resumed run trains each epoch at the size an uninterrupted one does.

    Args:
        min_res: starting side (px), >= 1.
        max_res: final side (px), >= min_res.
        start_ramp: last epoch at min_res (0-based), >= 0.
        end_ramp: first epoch at max_res, >= start_ramp.
    """

    min_res: int
    max_res: int
    start_ramp: int = 0
    end_ramp: int = 0

    def __call__(self, epoch: int) -> int:
        if epoch <= self.start_ramp:
            return self.min_res
        if epoch >= self.end_ramp:
            return self.max_res
        # numpy.interp's arithmetic (slope times offset plus start), so the rounding ties fall where FFCV's do
        side = (self.max_res - self.min_res) / (self.end_ramp - self.start_ramp) * (epoch - self.start_ramp) + self.min_res
        return min(self.max_res, max(self.min_res, round(side / RES_MULTIPLE) * RES_MULTIPLE))

    def size(self, epoch: int, height: int, width: int) -> tuple[int, int]:
        """(H, W) of epoch ``epoch``'s training images when the evaluation input is ``height`` x ``width``
        (see :meth:`scale`)."""
        return self.scale(self(epoch), height, width)

    @staticmethod
    def scale(side: int, height: int, width: int) -> tuple[int, int]:
        """``height`` x ``width`` with its shorter side made ``side`` px, the other keeping the aspect ratio
        (rounded; square images: side x side)."""
        if height == width:
            return side, side
        short = min(height, width)
        return max(1, round(height * side / short)), max(1, round(width * side / short))

    def sides(self, num_epochs: int) -> list[int]:
        """The distinct sides of epochs 0 .. num_epochs - 1, smallest first (what a network must accept)."""
        return sorted({self(e) for e in range(max(1, num_epochs))})
