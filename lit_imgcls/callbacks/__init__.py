"""Lightning callbacks: speed and accuracy logging, per-epoch checkpoints."""

from lit_imgcls.callbacks.epoch_checkpoint import EpochCheckpoint
from lit_imgcls.callbacks.run_record import RunRecord
from lit_imgcls.callbacks.speedometer import Speedometer

__all__ = ["EpochCheckpoint", "RunRecord", "Speedometer"]
