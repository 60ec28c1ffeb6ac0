"""What a checkpoint needs beyond Lightning's own state to continue a run exactly: random state, data position."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

KEY = "lit_imgcls_resume"


class ResumeState(L.Callback):
    """Stores torch's generator states and the training loader's position in each checkpoint, and restores them.

    Lightning saves weights, optimizer, schedule and loop counters but not the generators, so a resumed run would
    draw other dropout masks. It also saves a stateful loader's position, but hands it back only to a loader made
    after the restore; ours is made before it (the LR schedule asks for the epoch's length while the optimizer is
    configured), so the position is kept here and given to the loader when training starts. A position is applied
    only inside the epoch it belongs to: after an epoch's last batch the next epoch starts afresh.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state: dict[str, Any] = {"cpu_rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        loader = trainer.train_dataloader
        if hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict"):
            state["loader"] = loader.state_dict()
        checkpoint[KEY] = state

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["cpu_rng"])
        cuda = state.get("cuda_rng")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        position = state.get("loader")
        loader = trainer.train_dataloader
        if (position and hasattr(loader, "load_state_dict") and int(position.get("epoch", -1)) == trainer.current_epoch
                and 0 < int(position.get("items", 0)) < len(loader)):
            loader.load_state_dict(position)
