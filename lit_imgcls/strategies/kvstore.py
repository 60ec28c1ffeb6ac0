"""MXNet kv-store names -> Lightning strategies.

Each entry is ``fn(num_devices, accelerator) -> strategy`` (a Lightning strategy name or object). One device in
one process needs no strategy at all; more devices use DDP, which all-reduces gradients every step (MXNet's
``local``/``device`` aggregation, done by torch.distributed: gloo on the CPU, NCCL on GPUs).
"""

from __future__ import annotations

import os

from lit_imgcls.errors import UsageError


def _multi_node() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def single_machine(num_devices: int, accelerator: str) -> str:
    """local, device, local_allreduce_device: data parallel over this machine's devices."""
    return "ddp" if num_devices > 1 else "auto"


def dist_sync(num_devices: int, accelerator: str) -> str:
    """dist_sync, dist_device_sync: synchronous data parallel across machines (batch size per worker)."""
    return "ddp" if num_devices > 1 or _multi_node() else "auto"


def dist_async(num_devices: int, accelerator: str) -> str:
    """dist_async: workers that do not wait for each other; its engine arrives with the distribution work."""
    raise UsageError(
        "kv_store 'dist_async' is recognised but its asynchronous engine is not built yet; "
        "use dist_sync (synchronous, same results) for now"
    )
