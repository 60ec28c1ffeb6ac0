"""Packs of small images decoded once and served from memory (PackedDataModule.keeps_decoded).

Each test compares the loader served from memory with the same loader streaming (the memory limit set to 0 bytes),
batch for batch: pixels, labels and order must be the same, in training epochs, in validation and after a
mid-epoch resume; and the pack's checks must still stop a damaged pack, now when the loader is made.
"""

from __future__ import annotations

import gc
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch

from lit_imgcls.data.encode import EncodeOptions
from lit_imgcls.data.formats import packed
from lit_imgcls.data.pack import PackOptions, pack_dataset
from lit_imgcls.data.photos import make_photo_corpus

BATCH = 4


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """34 training and 8 validation photos at 16 x 16 px (small: used whole), in uneven shards of 10, both formats."""
    src = tmp_path_factory.mktemp("decoded-src")
    make_photo_corpus(src, train_per_class=14, val_per_class=3, classes=3, seed=2)
    out = tmp_path_factory.mktemp("decoded") / "pack"
    pack_dataset(str(src / "train"), str(out), PackOptions(format="both", shard_size="10", train_ratio=0.82),
                 EncodeOptions(resize=16, center_crop=True))
    return out


@pytest.fixture
def ffcv_collected():
    """Frees the test's FFCV loaders before it ends (see tests/test_loader_resume.py's fixture of that name)."""
    yield
    gc.collect()


def _module(fmt: str, pack: Path, workers: int, decoded: bool, monkeypatch):
    from lit_imgcls.data.formats.ffcv import FFCVDataModule
    from lit_imgcls.data.formats.wds import WDSDataModule

    monkeypatch.setattr(packed, "DECODED_MAX_BYTES", 1 << 30 if decoded else 0)
    cls = WDSDataModule if fmt == "wds" else FFCVDataModule
    dm = cls(data_train=str(pack), batch_size=BATCH, data_nthreads=workers, channels_last=True, seed=5)
    assert dm.small
    return dm


def _epoch(loader, epoch: int, items: int | None = None) -> list:
    loader.sampler.set_epoch(epoch)
    out = []
    for batch in loader:
        out.append(batch)
        if items is not None and len(out) == items:
            break
    return out


def _assert_same(got: list, want: list) -> None:
    assert len(got) == len(want) and want
    for i, ((x, y), (wx, wy)) in enumerate(zip(got, want)):
        assert torch.equal(y, wy), f"labels of batch {i} differ"
        assert x.dtype == wx.dtype == torch.uint8 and torch.equal(x, wx), f"pixels of batch {i} differ"
        assert x.is_contiguous(memory_format=torch.channels_last) == wx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("fmt,workers", [("wds", 0), ("wds", 2), ("ffcv", 2)])
def test_memory_serves_the_streams_samples_in_its_order(pack, fmt, workers, monkeypatch, ffcv_collected):
    if fmt == "ffcv":
        pytest.importorskip("ffcv")
    streamed = _module(fmt, pack, workers, False, monkeypatch)
    want_train = [_epoch(streamed.train_dataloader(), e) for e in (0, 1)]
    want_val = _epoch(streamed.val_dataloader(), 0)
    kept = _module(fmt, pack, workers, True, monkeypatch)
    loader = kept.train_dataloader()
    assert loader.stream.decoded is not None if fmt == "wds" else loader.decoded is not None
    assert len(loader) == len(want_train[0]) == 34 // BATCH
    for epoch in (0, 1):
        got = []
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            got.append(batch)
            assert multiprocessing.active_children() == []  # served in this process: no loader workers
        _assert_same(got, want_train[epoch])
    assert sum(len(y) for _, y in want_val) == 8
    _assert_same(_epoch(kept.val_dataloader(), 0), want_val)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("fmt", ["wds", "ffcv"])
def test_a_resume_from_memory_is_exact(pack, fmt, monkeypatch, ffcv_collected):
    """k = 3 batches of an epoch, then a new loader given the first's state: the rest of the epoch, bit for bit
    the uninterrupted one, and the next epoch whole."""
    if fmt == "ffcv":
        pytest.importorskip("ffcv")
    dm = _module(fmt, pack, 2, True, monkeypatch)
    whole = _epoch(dm.train_dataloader(), 1)
    first = dm.train_dataloader()
    head = _epoch(first, 1, 3)
    assert first.state_dict() == {"epoch": 1, "items": 3}
    second = dm.train_dataloader()
    second.load_state_dict(first.state_dict())
    _assert_same(head + _epoch(second, 1), whole)
    _assert_same(_epoch(second, 2), _epoch(dm.train_dataloader(), 2))


def test_a_changed_byte_stops_the_loader_when_it_is_made_naming_the_shard(pack, tmp_path, monkeypatch):
    """The one read that fills memory goes through the stream's checks: the shard's sha256, in a worker too."""
    from lit_imgcls.errors import DamagedShard

    out = tmp_path / "pack"
    shutil.copytree(pack, out)
    shard = out / "wds" / "train-000002.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    dm = _module("wds", out, 2, True, monkeypatch)
    with pytest.raises(DamagedShard, match=r"shard .*/train-000002\.tar fails its sha256 check") as err:
        dm.train_dataloader()
    assert "\n" not in str(err.value)
    assert multiprocessing.active_children() == []


def test_a_split_over_the_memory_limit_streams(pack, monkeypatch):
    dm = _module("wds", pack, 0, True, monkeypatch)
    monkeypatch.setattr(packed, "DECODED_MAX_BYTES", 34 * 16 * 16 * 3 - 1)  # one byte short of the 34 images
    assert not dm.keeps_decoded(34) and dm.keeps_decoded(33)
    assert dm.train_dataloader().stream.decoded is None
