"""Mid-epoch resume for loaders whose order is a pure function of (seed, epoch).

Lightning checks every training loader for ``state_dict``/``load_state_dict`` (its "stateful loader" protocol):
it stores the state in each checkpoint and, when a run restarts in the middle of an epoch, hands it back before
the epoch's first ``iter()``. For a loader with a length Lightning asks for exactly the items it trains on (it
prefetches only when the length is unknown), so the items a loader has handed out in the current epoch are the
items trained on. A resumed loader rebuilds the same epoch's order and skips that many items.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator


class ResumableEpoch:
    """Mixin: counts the items handed out this epoch and skips them after a mid-epoch restart.

    A subclass keeps ``epoch`` (set through ``set_epoch``) and, at the start of ``__iter__``, calls
    :meth:`start_epoch` for the number of items to skip, then yields through :meth:`counted`. A subclass that
    can skip without producing the items (an index order, say) skips them itself; :meth:`skipped` discards them
    from any iterator, which costs their decoding but keeps every later item, and every random draw, the same.
    """

    epoch: int = 0
    _handed: int = 0
    _skip: int = 0
    _skip_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the number of items handed out in it (what Lightning stores in a checkpoint)."""
        return {"epoch": int(self.epoch), "items": int(self._handed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the epoch and makes the next iteration skip the items handed out before the checkpoint.

        The epoch comes back too because Lightning calls ``iter()`` before ``set_epoch`` on a restart. The skip
        applies to that epoch only: a state saved at an epoch's last batch is restored before Lightning moves on
        to the next epoch, which must start from its first item.
        """
        self.epoch = int(state.get("epoch", self.epoch))
        self._skip = max(0, int(state.get("items", 0)))
        self._skip_epoch = self.epoch

    def start_epoch(self) -> int:
        """Items to skip at the start of this iteration (non-zero once, after a restart); resets the count."""
        skip = self._skip if self.epoch == self._skip_epoch else 0
        self._skip = 0
        self._handed = skip
        return skip

    def counted(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yields ``items``, counting each one as handed out just before the caller receives it."""
        for item in items:
            self._handed += 1
            yield item

    @staticmethod
    def skipped(items: Iterator[Any], n: int) -> Iterator[Any]:
        """``items`` after producing and discarding its first ``n`` (fewer if it ends first)."""
        for _ in range(n):
            if next(items, _END) is _END:
                break
        return items


_END = object()
