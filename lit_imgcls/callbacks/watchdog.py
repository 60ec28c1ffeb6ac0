"""Heartbeats through torch.distributed's rendezvous store, so a failed collective can name the missing worker.

When a worker dies or hangs, the others see only a transport error ("Connection reset by peer [10.0.0.2]:41733")
or a timeout that names nobody. Each worker therefore bumps a counter in the store (the TCPStore that rank 0
already hosts for the process group) from a background thread; after a failure the survivors read the counters
twice, a moment apart, and the ranks whose counters stood still are the ones that stopped.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import lightning as L

_PREFIX = "lit_imgcls/beat/"


def _is_transport_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in ("gloo", "nccl", "connection", "timed out", "timeout", "distbackenderror", "broken pipe"))


class Watchdog(L.Callback):
    """Beats every ``period`` seconds while training runs on more than one worker.

    Args:
        period: seconds between two heartbeats.
    """

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self.diagnosis: str | None = None
        self._store: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._step = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size < 2:
            return
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            return
        try:
            self._store = dist.distributed_c10d._get_default_store()
        except (AttributeError, RuntimeError, ValueError):  # a private helper; without it we only lose the names
            return
        self._rank, self._world = trainer.global_rank, trainer.world_size
        self._thread = threading.Thread(target=self._beat, name="lit-imgcls-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            try:
                self._store.set(f"{_PREFIX}{self._rank}", f"{count} {self._step}")
            except Exception:  # the store's host is gone: the main thread will fail and ask us why
                return
            self._stop.wait(self.period)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._step = trainer.global_step

    def _read(self) -> dict[int, tuple[int, int]]:
        beats = {}
        for r in range(self._world):
            key = f"{_PREFIX}{r}"
            if self._store.check([key]):  # get() would block on a key never written
                count, step = self._store.get(key).decode().split()
                beats[r] = (int(count), int(step))
        return beats

    def explain(self) -> str | None:
        """Which workers stopped beating: one sentence, or None outside a multi-worker run."""
        if self._store is None:
            return None
        me = f"worker rank {self._rank}"
        try:
            before = self._read()
            time.sleep(max(2.5 * self.period, 2.0))
            after = self._read()
        except Exception:
            return (f"{me} lost worker rank 0, which hosts the run's rendezvous store (MASTER_ADDR:MASTER_PORT); "
                    "see rank 0's output for why it stopped")
        stopped = [r for r in range(self._world) if r != self._rank and before.get(r, (0, 0))[0] == after.get(r, (0, 0))[0]]
        if stopped:
            at = ", ".join(f"rank {r} (last at step {after.get(r, (0, 0))[1]})" for r in stopped)
            return f"{me} at step {self._step} cannot go on: no heartbeat from {at}; see its output for why it stopped"
        steps = {r: s for r, (_, s) in after.items()}
        behind = [r for r, s in steps.items() if s < self._step]
        if behind:
            at = ", ".join(f"rank {r} (at step {steps[r]})" for r in behind)
            return f"{me} at step {self._step} timed out waiting for {at}, which is alive but stuck"
        return None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._store is not None and _is_transport_error(exception):
            self.diagnosis = self.explain()
        self._stop.set()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop.set()
