"""The optimisation options of :class:`~lit_imgcls.module.ImageClassifier` beyond the optimizer and LR schedule,
as one small config object (built from the recipe by :func:`lit_imgcls.engine.build_module`), so that a new
option touches this dataclass, the recipe and the one place in the module that reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

CLIP_ALGORITHMS = ("norm", "value")


@dataclass(frozen=True)
class OptimConfig:
    """Gradient clipping, an exponential moving average (EMA) of the weights, and gradient accumulation.

    Args:
        clip_gradient: bound on the gradients before each optimizer step (MXNet's ``--clip-gradient``); 0 = off.
            With ``clip_gradient_algorithm`` norm, the total 2-norm of all gradients together is scaled down to at
            most this (torch's ``clip_grad_norm_``); with value, each gradient element is clamped to
            [-clip_gradient, clip_gradient] (``clip_grad_value_``). Gradients are unscaled first under 16-mixed.
        clip_gradient_algorithm: norm or value.
        ema_decay: decay of an exponential moving average of the weights and buffers, updated after every
            optimizer step: ``ema = decay * ema + (1 - decay) * weights`` (the first step copies the weights);
            0 = off. Validation and the saved checkpoints then use the EMA weights; the raw weights are kept in
            the checkpoint too, so resuming continues both exactly.
        accumulate_grad_batches: micro-batches per optimizer step (Lightning's name), >= 1: each training item
            (the samples of one optimizer step) is split into this many near-equal parts, each part's forward and
            backward run in turn with its loss weighted by its share of the item, and the optimizer steps once.
            The gradient is the item's mean loss's, as one batch of the whole item would give, with the memory
            of one part. :func:`lit_imgcls.engine.fit` makes the training loader's batches that many times
            ``batch_size``, so that a Lightning item stays one optimizer step.
        compile: compile the network with ``torch.compile`` (its ``nn.Module.compile()``, which keeps the
            parameter names, so checkpoints load without it) when ``fit`` starts; the first steps then wait for
            the compilation (tens of seconds on a CPU; see docs/BENCHMARKS.md for what it gives).

    Raises:
        ValueError: from :meth:`check`, a value out of range (the recipe's ``validate`` says it first as a
            one-line usage error).
    """

    clip_gradient: float = 0.0
    clip_gradient_algorithm: Literal["norm", "value"] = "norm"
    ema_decay: float = 0.0
    accumulate_grad_batches: int = 1
    compile: bool = False

    def check(self) -> "OptimConfig":
        """Returns self, or raises ValueError naming the first key out of range."""
        for key, ok, valid in self.problems():
            if not ok:
                raise ValueError(f"{key} must be {valid}, got {getattr(self, key)!r}")
        return self

    def problems(self) -> list[tuple[str, bool, str]]:
        """(key, is it valid, what is valid) for each key: the one list the recipe's checks also read."""
        return [
            ("clip_gradient", self.clip_gradient >= 0, ">= 0 (0 = off)"),
            ("clip_gradient_algorithm", self.clip_gradient_algorithm in CLIP_ALGORITHMS,
             "one of " + ", ".join(CLIP_ALGORITHMS)),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1) (0 = off; 0.999 is usual)"),
            ("accumulate_grad_batches", self.accumulate_grad_batches >= 1, "a positive integer (1 = off)"),
        ]

    @classmethod
    def from_recipe(cls, recipe: Any) -> "OptimConfig":
        """The recipe's values of these keys (any object with them as attributes)."""
        return cls(clip_gradient=recipe.clip_gradient, clip_gradient_algorithm=recipe.clip_gradient_algorithm,
                   ema_decay=recipe.ema_decay, accumulate_grad_batches=recipe.accumulate_grad_batches,
                   compile=bool(recipe.compile))


@dataclass(frozen=True)
class EvalConfig:
    """How :class:`~lit_imgcls.module.ImageClassifier` scores images in validation, test and ``score``.

    Args:
        tta_flip: test-time flip averaging: the class probabilities are the mean of the softmax of the image and
            of its horizontal mirror (two forward passes); the loss is the negative log of that mean. Needs
            images at least 2 pixels wide.
        temperature: temperature scaling's T (Guo et al. 2017), a calibrated checkpoint's (``score --calibrate``;
            :attr:`~lit_imgcls.checkpoint_meta.CheckpointMeta.temperature`): the probabilities are
            softmax(logits / T); with ``tta_flip``, softmax(log(mean of the two softmaxes) / T), the flip-averaged
            probabilities scaled as a whole, which is what ``score --calibrate`` fits T on. 1 = uncalibrated.
            Top-1 and top-k never change with it. Validation during ``fit`` always uses 1.
    """

    tta_flip: bool = False
    temperature: float = 1.0

    @classmethod
    def from_recipe(cls, recipe: Any) -> "EvalConfig":
        """The recipe's values of these keys."""
        return cls(tta_flip=bool(recipe.tta_flip))


# Checkpoint entries of a run with EMA: its "state_dict" holds the EMA weights (what validate, predict, score and
# --pretrained read), these hold what resuming needs besides.
RAW_WEIGHTS_KEY = "lit_imgcls_raw_state_dict"  # the weights the optimizer trains, as "state_dict" would hold them
EMA_KEY = "lit_imgcls_ema"  # {"decay": float, "n_averaged": int}


class WeightEMA:
    """An exponential moving average of a network's parameters and buffers: torch's
    ``AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)`` (one foreach lerp per
    step), with the swaps and checkpoint entries :class:`~lit_imgcls.module.ImageClassifier` needs.

    Args:
        net: the trained network (copied; the copy lives on the network's device).
        decay: EMA decay in [0, 1).
    """

    def __init__(self, net, decay: float) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self.decay = float(decay)
        self.model = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        self.model.requires_grad_(False)

    def update(self, net) -> None:
        """One EMA step from ``net``'s current weights (the first copies them)."""
        self.model.update_parameters(net)

    @property
    def steps(self) -> int:
        """Updates so far."""
        return int(self.model.n_averaged)

    def swap(self, net) -> None:
        """Exchanges ``net``'s parameters and buffers with the average's, in place (twice restores both)."""
        import itertools

        import torch

        with torch.no_grad():
            for mine, theirs in zip(itertools.chain(self.model.module.parameters(), self.model.module.buffers()),
                                    itertools.chain(net.parameters(), net.buffers())):
                tmp = mine.detach().clone()
                mine.copy_(theirs)
                theirs.copy_(tmp)

    def net_state(self, prefix: str) -> dict:
        """The average's weights as the network's entries of a LightningModule state_dict (``prefix`` + name)."""
        return {prefix + k: v for k, v in self.model.module.state_dict().items()}

    def load_net_state(self, state: dict, prefix: str, steps: int) -> None:
        """Restores the average from :meth:`net_state`'s entries (other keys ignored) after ``steps`` updates."""
        self.model.module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        self.model.n_averaged.fill_(int(steps))
