"""Reads pickles that hold only plain data and numpy arrays; anything else (a crafted ``__reduce__``) is refused."""

from __future__ import annotations

import io
import pickle
from typing import Any

from lit_imgcls.errors import UsageError

# The only callables a data pickle (CIFAR's batches) needs: numpy's array and dtype reconstructors.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 2 pickles of numpy arrays store their bytes
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data and numpy arrays are allowed")


def load_data_pickle(data: bytes, where: str = "pickle") -> Any:
    """Unpickles ``data`` with the allow-list; a refused or broken pickle raises :class:`UsageError`."""
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UsageError(f"{where}: {exc}") from exc
