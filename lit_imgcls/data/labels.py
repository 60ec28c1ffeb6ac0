"""The one rule for a stored sample's label, on every path that reads packed samples (WebDataset shards for
training, evaluation, predict, inspect and verify; FFCV ``.beton`` metadata).

A label is a class index in ``[0, num_classes)``: a ``.cls`` member of a shard holds it as ASCII decimal digits
(what ``dataset pack`` writes), an FFCV label field as a little-endian int64. Anything else (``-100`` and the
other sentinels some tools use for "ignore", ``3.0``, ``+3``, an index past the last class) is refused with one
line naming the shard and the sample: cross-entropy would either crash on it deep inside a step or, with
``-100``, silently skip the sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from lit_imgcls.errors import UsageError, quoted

_DIGITS = re.compile(rb"[0-9]{1,18}")  # 18 digits: any int64 value a .cls member can sensibly hold
_SHOWN = 24  # characters of a bad value quoted in a message


def _refuse(where: str, shown: str, num_classes: int) -> UsageError:
    return UsageError(f"{where}: label {shown} is not a class index in [0, {num_classes}) (-100 and other "
                      "sentinels are refused): the pack is damaged or was not written by `lit-imgcls dataset pack`; "
                      "re-pack it")


def parse_label(raw: bytes | str | int, num_classes: int, where: str) -> int:
    """The class index a stored label holds.

    Args:
        raw: the ``.cls`` member's bytes (ASCII digits, surrounding whitespace allowed), or an int.
        num_classes: the pack's class count.
        where: names the sample, e.g. ``"sample train000012 of shard wds/train-000000.tar"``.

    Returns:
        int in ``[0, num_classes)``.

    Raises:
        UsageError: anything else; the message quotes at most a short prefix of the value.
    """
    if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
        value = int(raw)
        shown = str(value)[:_SHOWN]
    else:
        data = raw.encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
        text = data.strip()
        shown = quoted(data.decode("ascii", "replace"), _SHOWN)
        if not _DIGITS.fullmatch(text):
            raise _refuse(where, shown, num_classes)
        value = int(text)
    if not 0 <= value < num_classes:
        raise _refuse(where, shown, num_classes)
    return value


def check_labels(labels: np.ndarray, num_classes: int, where: Callable[[int], str]) -> None:
    """Refuses the first label of an integer array outside ``[0, num_classes)``.

    Args:
        labels: int64 (N,) array, e.g. an FFCV label field read from a ``.beton`` file's metadata.
        num_classes: the pack's class count.
        where: names sample ``i`` (its index in storage order).

    Raises:
        UsageError: one line naming the first bad sample and its value.
    """
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise _refuse(where(i) + (f" (and {bad.size - 1} more)" if bad.size > 1 else ""), str(int(labels[i])),
                      num_classes)
