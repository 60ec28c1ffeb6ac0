"""MXNet kv-store names -> Lightning strategies.

Each entry is ``fn(num_devices, accelerator, **options) -> strategy`` (a Lightning strategy name or object);
``options`` carries ``num_nodes`` (worker machines, from the launcher's environment) and ``timeout`` (seconds a
collective may wait). One device in one process needs no strategy at all; more devices or machines use DDP, which
all-reduces gradients every step (MXNet's ``local``/``device``/``dist_sync`` aggregation, done by torch.distributed:
gloo on the CPU, NCCL on GPUs). Plugins must accept and may ignore ``**options``. ``dist_async`` lives in
:mod:`lit_imgcls.strategies.hivemind_async`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lit_imgcls.errors import UsageError


def _ddp(timeout: float | None) -> Any:
    from lightning.pytorch.strategies import DDPStrategy

    # A fixed timeout turns a silent hang (a worker stuck or gone) into an error that the run watchdog explains.
    return DDPStrategy(timeout=timedelta(seconds=timeout)) if timeout else DDPStrategy()


def data_parallel(num_devices: int, accelerator: str, num_nodes: int = 1, timeout: float | None = None, **_: Any) -> Any:
    """local, device, local_allreduce_device (one machine) and dist_sync, dist_device_sync (several): DDP.

    MXNet told these apart by where gradients were summed (CPU, GPU, parameter server); DDP's all-reduce covers
    all of them, with the batch size per worker as in MXNet's dist_sync.
    """
    return _ddp(timeout) if num_devices > 1 or num_nodes > 1 else "auto"


def _needs_gpus(name: str, accelerator: str) -> None:
    if accelerator != "gpu":
        raise UsageError(f"kv_store {name} shards the network over CUDA GPUs: give --gpus (like --gpus 0,1); on the "
                         "CPU use kv_store device (data parallel over gloo with --num-processes N)", key="kv_store")


def fsdp(num_devices: int, accelerator: str, **_: Any) -> str:
    """fsdp: Lightning's fully sharded data parallel, for networks too big for one GPU's memory.

    Raises:
        UsageError: on the CPU (``gpus`` empty): Lightning's FSDP runs on CUDA GPUs only.
    """
    _needs_gpus("fsdp", accelerator)
    return "fsdp"


def deepspeed(num_devices: int, accelerator: str, **_: Any) -> str:
    """deepspeed: Lightning's DeepSpeed ZeRO stage 2 (needs CUDA and the deepspeed package).

    Raises:
        UsageError: on the CPU, or without the deepspeed package.
    """
    import importlib.util

    _needs_gpus("deepspeed", accelerator)
    if importlib.util.find_spec("deepspeed") is None:
        raise UsageError("kv_store deepspeed needs the deepspeed package: pip install deepspeed (or use kv_store "
                         "fsdp, which Lightning ships)", key="kv_store")
    return "deepspeed"

