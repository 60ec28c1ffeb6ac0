"""How many CPU cores this process may use, and the loader worker count that fits them (no torch import)."""

from __future__ import annotations

import os

# Loader workers a run gets unless it says otherwise: four kept a LeNet or ResNet fed from JPEGs in our
# measurements, and more only cost memory. Never more than the cores, though: FFCV's decoder (numba) refuses more
# threads than cores, and torch warns of too many DataLoader workers.
DATA_NTHREADS_MAX_DEFAULT = 4


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's or taskset's limit), as numba and
    Lightning count them; ``os.cpu_count()`` where affinity is unknown; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_data_nthreads(processes: int = 1) -> int:
    """Loader workers per training process when the recipe leaves ``data_nthreads`` unset: 4, or fewer when this
    machine's cores shared among ``processes`` training processes are fewer (at least 1), so every process's
    workers together never exceed the cores.

    Args:
        processes: training processes on this machine (devices, or ``num_processes`` on the CPU).
    """
    return max(1, min(DATA_NTHREADS_MAX_DEFAULT, usable_cores() // max(1, processes)))
