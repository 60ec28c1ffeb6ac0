"""Mid-epoch resume of the packed (WebDataset, FFCV) and image-folder training loaders.

Each test reads one epoch without a break, then reads it again in two parts: a loader stopped after k batches
hands its ``state_dict`` to a new loader, as a restarted run does, and the new loader's batches must complete
the epoch exactly; the epoch after that must be the uninterrupted one.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from lit_imgcls.data.encode import EncodeOptions
from lit_imgcls.data.pack import PackOptions, pack_dataset
from lit_imgcls.data.photos import make_photo_corpus

BATCH = 4
BATCHES = 9  # 36 training images in batches of 4
EPOCH = 1


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("photos")
    make_photo_corpus(out, train_per_class=12, val_per_class=4, classes=3, seed=1)
    return out


@pytest.fixture(scope="module")
def pack(photos, tmp_path_factory) -> Path:
    """36 photos at 72 x 72 in 4 uneven shards (10, 10, 10, 6), both formats: big enough to be augmented."""
    out = tmp_path_factory.mktemp("resume") / "pack"
    pack_dataset(str(photos / "train"), str(out), PackOptions(format="both", shard_size="10"),
                 EncodeOptions(resize=72, center_crop=True))
    return out


@pytest.fixture
def ffcv_collected():
    """Frees the test's FFCV loaders before it ends.

    Their numba code raises an ignored KeyError when freed; under pytest's unraisable-exception hook, which
    formats the traceback with ``ast``, a garbage collection inside a later test module's assertion rewriting
    would then fail with "SystemError: AST constructor recursion depth mismatch" (Python 3.11).
    """
    yield
    gc.collect()


def _epoch(loader, epoch: int, items: int | None = None) -> list:
    """Sets the epoch as Lightning does (through ``sampler``), then reads ``items`` batches (all when None)."""
    loader.sampler.set_epoch(epoch)
    out, it = [], iter(loader)
    for batch in it:
        out.append(batch)
        if items is not None and len(out) == items:
            break
    return out


def _resumed(make, k: int, epoch: int = EPOCH) -> tuple[list, list, object]:
    """The epoch read as k batches by one loader and the rest by a new one given the first's state."""
    first = make()
    head = _epoch(first, epoch, k)
    state = first.state_dict()
    assert state == {"epoch": epoch, "items": k}
    second = make()
    second.load_state_dict(state)
    return head, _epoch(second, epoch), second


def _assert_same(got: list, want: list, pixels: bool = True) -> None:
    assert len(got) == len(want)
    for i, ((x, y), (wx, wy)) in enumerate(zip(got, want)):
        assert torch.equal(y, wy), f"labels of batch {i} differ"
        if pixels:
            assert x.dtype == wx.dtype and torch.equal(x, wx), f"pixels of batch {i} differ"


@pytest.mark.parametrize("workers", [0, 2])
def test_wds_resume_yields_the_rest_of_the_epoch_bit_for_bit(pack, workers):
    """Random-resized crops and flips included; with 2 workers k = 3 is odd, so the resumed loader's first batch
    comes from the second worker of the DataLoader's round-robin."""
    from lit_imgcls.data.formats.wds import WDSDataModule

    dm = WDSDataModule(data_train=str(pack), batch_size=BATCH, data_nthreads=workers, image_shape="3,24,24")
    assert not dm.small  # the decoder augments
    whole = _epoch(dm.train_dataloader(), EPOCH)
    assert len(whole) == BATCHES and whole[0][0].shape == (BATCH, 3, 24, 24)
    head, tail, resumed = _resumed(dm.train_dataloader, 3)
    _assert_same(head + tail, whole)
    assert resumed.state_dict() == {"epoch": EPOCH, "items": BATCHES}
    _assert_same(_epoch(resumed, EPOCH + 1), _epoch(dm.train_dataloader(), EPOCH + 1))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ffcv_resume_leaves_the_trained_batches_out_of_the_order(pack, ffcv_collected):
    """The data module's own (augmented) loader: the order is exact. FFCV's crop and flip draw from unseeded
    generators, so pixels are compared with a deterministic decoder below."""
    from lit_imgcls.data.formats.ffcv import FFCVDataModule

    dm = FFCVDataModule(data_train=str(pack), batch_size=BATCH, data_nthreads=1, image_shape="3,24,24")
    whole = _epoch(dm.train_dataloader(), EPOCH)
    assert len(whole) == BATCHES
    head, tail, resumed = _resumed(dm.train_dataloader, 4)
    _assert_same(head + tail, whole, pixels=False)
    assert resumed.loader.traversal_order.skip == 0  # spent on the resumed epoch only
    _assert_same(_epoch(resumed, EPOCH + 1), _epoch(dm.train_dataloader(), EPOCH + 1), pixels=False)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("order", ["epoch", "ffcv-random"])
def test_ffcv_resume_is_exact_with_a_deterministic_decoder(pack, order, ffcv_collected):
    """Pixels and labels bit for bit, whether the order skips (the project's) or the batches are decoded and
    dropped (any other FFCV order)."""
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor, ToTorchImage

    from lit_imgcls.data.formats.ffcv import FFCVBatches, _epoch_order

    def make() -> FFCVBatches:
        loader = Loader(
            str(pack / "ffcv" / "train.beton"), batch_size=BATCH, num_workers=1, seed=3, drop_last=True,
            order=_epoch_order(0, 1, True) if order == "epoch" else OrderOption.RANDOM,
            pipelines={"image": [CenterCropRGBImageDecoder((24, 24), ratio=0.875), ToTensor(), ToTorchImage()],
                       "label": [IntDecoder(), ToTensor()]},
        )
        return FFCVBatches(loader, 3, channels_last=False)

    whole = _epoch(make(), EPOCH)
    head, tail, resumed = _resumed(make, 5)
    _assert_same(head + tail, whole)
    _assert_same(_epoch(resumed, EPOCH + 1), _epoch(make(), EPOCH + 1))


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_resume_skips_whole_batches_in_the_sampler(photos, workers, monkeypatch):
    """Order and pixels exact, random crops and flips included (drawn from seed, epoch and image alone, so the
    worker that decodes an image does not matter)."""
    from lit_imgcls.data import folder
    from lit_imgcls.data.folder import FolderDataModule, ResumableDataLoader

    dm = FolderDataModule(data_train=str(photos / "train"), batch_size=BATCH, data_nthreads=workers,
                          image_shape="3,32,32")

    def make() -> ResumableDataLoader:
        return dm.train_dataloader()

    whole = _epoch(make(), EPOCH)
    assert len(whole) == BATCHES
    head, tail, resumed = _resumed(make, 2)
    _assert_same(head + tail, whole)
    _assert_same(_epoch(resumed, EPOCH + 1), _epoch(make(), EPOCH + 1))
    if workers == 0:  # the skipped batches are never read (workers would read in their own processes)
        loader, reads = make(), []
        read_file = folder.read_file
        monkeypatch.setattr(folder, "read_file", lambda path: reads.append(path) or read_file(path))
        loader.load_state_dict({"epoch": EPOCH, "items": 7})
        assert len(_epoch(loader, EPOCH)) == BATCHES - 7 and len(reads) == (BATCHES - 7) * BATCH


def test_a_state_from_the_end_of_the_previous_epoch_skips_nothing(pack, photos):
    """A checkpoint taken at an epoch's last batch is resumed at the next epoch, which must not skip its count
    (ResumableEpoch scopes the skip to the state's epoch; the in-memory loader shares the rule)."""
    from lit_imgcls.data.arrays import TensorBatches
    from lit_imgcls.data.folder import FolderDataModule
    from lit_imgcls.data.formats.wds import WDSDataModule

    makers = [
        WDSDataModule(data_train=str(pack), batch_size=BATCH, data_nthreads=0, image_shape="3,24,24").train_dataloader,
        FolderDataModule(data_train=str(photos / "train"), batch_size=BATCH, data_nthreads=0,
                         image_shape="3,32,32").train_dataloader,
        lambda: TensorBatches(torch.zeros(36, 1, 2, 2), torch.zeros(36), BATCH, shuffle=True, drop_last=True),
    ]
    for make in makers:
        loader = make()
        loader.load_state_dict({"epoch": EPOCH, "items": BATCHES})
        assert len(_epoch(loader, EPOCH + 1)) == BATCHES
        loader.load_state_dict({"epoch": EPOCH, "items": BATCHES})
        assert _epoch(loader, EPOCH) == []


@pytest.mark.parametrize("fmt", ["wds", "folder"])
def test_resume_through_lightning(fmt, pack, photos, tmp_path):
    """A run stopped by an error right after a checkpoint, mid-epoch or at the epoch's last batch, and resumed
    from that checkpoint by a new Trainer, trains on exactly the batches of an uninterrupted run, pixels included.
    The folder loader runs 2 workers, which read the sampler as soon as Lightning calls ``iter()``, before
    ``set_epoch``."""
    import lightning as L

    from lit_imgcls.data.folder import FolderDataModule
    from lit_imgcls.data.formats.wds import WDSDataModule

    class Stop(Exception):
        pass

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(3, 3)
            self.seen: list = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.seen.append((self.current_epoch, batch_idx, x.clone(), y.clone()))
            return torch.nn.functional.cross_entropy(self.layer(x.float().mean((2, 3))), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class StopAt(L.Callback):
        def __init__(self, epoch: int, batch: int, path: Path) -> None:
            self.at, self.path = (epoch, batch), path

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (trainer.current_epoch, batch_idx) == self.at:
                trainer.save_checkpoint(self.path)
                raise Stop

    def fit(callbacks=(), ckpt=None) -> list:
        if fmt == "wds":
            dm = WDSDataModule(data_train=str(pack), batch_size=BATCH, data_nthreads=0, image_shape="3,24,24")
        else:
            dm = FolderDataModule(data_train=str(photos / "train"), batch_size=BATCH, data_nthreads=2,
                              image_shape="3,32,32")
        model = Tiny()
        trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            limit_val_batches=0, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=list(callbacks))
        try:
            trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        except Stop:
            pass
        return model.seen

    whole = fit()
    assert [(e, i) for e, i, _, _ in whole] == [(e, i) for e in range(3) for i in range(BATCHES)]
    for stop in (3, BATCHES - 1):
        ckpt = tmp_path / f"stop{stop}.ckpt"
        got = fit([StopAt(1, stop, ckpt)]) + fit(ckpt=str(ckpt))
        assert [(e, i) for e, i, _, _ in got] == [(e, i) for e, i, _, _ in whole], stop
        for (e, i, x, y), (_, _, wx, wy) in zip(got, whole):
            assert torch.equal(x, wx) and torch.equal(y, wy), (stop, e, i)
