"""Which process of a run this is, before Lightning has set up the ranks (no torch import)."""

from __future__ import annotations

import os

# The variables each launcher sets: torchrun's RANK and GROUP_RANK; NODE_RANK of `lit-imgcls launch` and of
# multi-node Lightning; LOCAL_RANK of the processes Lightning starts on one machine.
RANK_VARIABLES = ("RANK", "GROUP_RANK", "NODE_RANK", "LOCAL_RANK")


def is_global_zero() -> bool:
    """Whether this process is rank 0 of its run: every rank a launcher sets (:data:`RANK_VARIABLES`) is 0 or
    unset. Used for what one process of a run does alone (the prefix lock, warnings about the data)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in RANK_VARIABLES)
