"""WebDataset loader: shuffled shards and a sample shuffle buffer, split by rank and by worker, equal batches.

The pipeline is a list of small webdataset stages; webdataset is imported inside the factory that builds it.
Workers hand over uint8 images; they become normalised floats on the training device.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Iterator

import numpy as np
import torch

from lit_imgcls.callbacks.interrupt import loader_worker_init
from lit_imgcls.data.formats.packed import PackedDataModule
from lit_imgcls.data.remote import is_remote, local_path
from lit_imgcls.data.shard_check import finish, open_shard
from lit_imgcls.data.resumable import ResumableEpoch
from lit_imgcls.errors import RunFailed, UsageError, from_worker

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def shard_urls(location: str, manifest: dict, split: str) -> list[str]:
    files = [s["file"] for s in manifest["splits"][split]["wds"]]
    if is_remote(location):
        return [f"{location.rstrip('/')}/wds/{f}" for f in files]
    return [str(local_path(location) / "wds" / f) for f in files]


def check_local_shards(urls: list[str], entries: list[dict]) -> None:
    """Missing or cut-short local shards are named before training starts (a cheap size check; the sha256 is
    checked as each shard is read, :mod:`lit_imgcls.data.shard_check`)."""
    for url, entry in zip(urls, entries):
        if is_remote(url):
            continue
        path = local_path(url)
        if not path.is_file():
            raise UsageError(f"shard {path} is missing: run `lit-imgcls dataset verify` on the pack")
        if path.stat().st_size != entry["bytes"]:
            raise UsageError(f"shard {path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}: truncated or replaced")


class ShardOpener:
    """webdataset stage: {"url"} -> {"url", "stream"}: each shard hashed as it streams and checked against its
    manifest entry at its end (:func:`~lit_imgcls.data.shard_check.open_shard`), through the local cache when
    one is set."""

    def __init__(self, entries: dict[str, dict], cache: str | None) -> None:
        self.entries, self.cache = entries, cache

    def __call__(self, source):
        for sample in source:
            url = sample["url"]
            yield {"url": url, "stream": open_shard(url, self.entries.get(url), self.cache)}


class NamedErrors:
    """webdataset handler: a broken shard or sample stops the run with the shard's name in one clear line."""

    def __call__(self, exc: Exception) -> bool:
        if isinstance(exc, (UsageError, RunFailed)):  # RemoteUnavailable: the storage failed past its retries
            raise exc
        raise UsageError(f"cannot read packed data ({type(exc).__name__}: {exc}); check the shard with `lit-imgcls dataset verify`") from None


class SampleDecoder:
    """Turns a webdataset sample dict into (uint8 (H, W, C) image, label); a picklable stage for worker processes.

    Args:
        config: the evaluation preprocessing (:class:`~lit_imgcls.data.preprocess.DataConfig`); its input size is
            what comes out, training included.
        train: training samples; with ``augment``, a random-resized crop and flip drawn from :attr:`rng`.
        augment: crop and flip training images (photos); small same-size images are used whole.
        pipeline: the recipe's stages (:class:`~lit_imgcls.data.augment.Pipeline`), run instead on each decoded
            training image, seeded by (seed, :attr:`epoch`, the sample's key); the result is brought to the input
            size by the evaluation rule when the stages leave it another size.
        num_classes: the pack's class count; a label outside [0, num_classes) is a :class:`UsageError`
            (:func:`lit_imgcls.data.labels.parse_label`).
    """

    def __init__(self, config, train: bool, augment: bool, num_classes: int, pipeline=None, seed: int = 0) -> None:
        from lit_imgcls.data.preprocess import EvalTransform

        self.config, self.train, self.augment, self.num_classes = config, train, augment, num_classes
        self.pipeline, self.seed, self.epoch = pipeline, seed, 0
        self.eval = EvalTransform(config)
        self.rng = random.Random(0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image this decoder returns."""
        c, h, w = self.config.input_size
        return h, w, c

    def __call__(self, sample: dict):
        from lit_imgcls.data import image, transforms
        from lit_imgcls.data.labels import parse_label

        key = next((k for k in IMAGE_KEYS if k in sample), None)
        where = f"sample {sample.get('__key__')} of shard {sample.get('__url__')}"
        if key is None or "cls" not in sample:
            raise UsageError(f"{where} lacks an image or a label: the shard is corrupt")
        data = sample[key]
        label = parse_label(sample["cls"], self.num_classes, where)
        try:
            if self.train and self.pipeline is not None:
                from lit_imgcls.data.augment import sample_seed

                c, h, w = self.config.input_size
                pixels = self.pipeline.numpy_hwc(image.decode(data, c), sample_seed(self.seed, self.epoch, sample_index(sample)))
                pixels = pixels if pixels.shape[:2] == (h, w) else self.eval(pixels)
            elif self.train and self.augment:
                c, h, w = self.config.input_size
                pixels = transforms.random_resized_crop(image.decode(data, c), h, w, self.rng)
                pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
            else:
                pixels = self.eval(data)
            return pixels, label
        except (OSError, ValueError, SyntaxError) as exc:
            raise UsageError(f"{where} does not decode ({exc}): the shard is corrupt") from None


def sample_index(sample: dict) -> int | str:
    """What seeds a sample's augmentation: its number for a key that ``dataset pack`` wrote (``train00000042`` ->
    42, as an in-memory image's index does), any other key as it is; never the worker or the shard order."""
    key = str(sample.get("__key__", ""))
    digits = key.lstrip("abcdefghijklmnopqrstuvwxyz")
    return int(digits) if digits.isdigit() and len(digits) == 8 else key


class ShardStream(torch.utils.data.IterableDataset):
    """This rank's and this worker's share of the shards, as batches.

    Training: shards shuffled by (seed, epoch) and dealt round-robin to the (rank, worker) slots (or, with
    fewer shards than slots, every slot reads all shards and keeps every n-th sample); the slot's stream repeats
    its shards if it runs short, and stops after exactly its quota of batches, so every rank yields the same
    number of batches whatever the shard sizes. Validation: every sample exactly once, in order.
    """

    def __init__(self, urls: list[str], decoder: SampleDecoder, batch_size: int, train: bool, seed: int,
                 rank: int, world: int, batches: int | None, buffer: int, opener: ShardOpener | None = None) -> None:
        super().__init__()
        self.urls, self.decoder, self.batch_size, self.train = urls, decoder, batch_size, train
        self.opener = opener or ShardOpener({}, None)
        self.seed, self.rank, self.world, self.batches, self.buffer = seed, rank, world, batches, buffer
        self.epoch = 0
        # url -> (uint8 (n, H, W, C) images, labels) of the shard in storage order, once :meth:`decode_all` ran.
        self.decoded: dict[str, tuple[np.ndarray, list[int]]] | None = None

    def decode_all(self, workers: int = 0) -> None:
        """Reads and decodes every shard once, in storage order, through the same stages as the stream (each shard
        hashed as it streams and checked at its end, its sample count, every label by the label rule), and keeps
        the decoded images: later iterations serve them from memory, in the order the stream would give.

        Only for a deterministic decoder (small images used whole: no random crop), whose output is the same
        every time a sample is read.

        Args:
            workers: processes decoding shards side by side (0: this process).

        Raises:
            UsageError: a shard that fails a check (as the stream would, naming it).
        """
        if self.decoder.train and self.decoder.augment:
            raise ValueError("decode_all needs a deterministic decoder (no random crops)")
        shards = torch.utils.data.DataLoader(_DecodedShards(self), batch_size=None, worker_init_fn=loader_worker_init,
                                             num_workers=min(workers, len(self.urls)))
        decoded = {}
        it = iter(shards)
        try:
            for url, (images, labels) in zip(self.urls, it):
                decoded[url] = (images.numpy(), labels.tolist())
        except (UsageError, RunFailed) as exc:
            raise from_worker(exc) from None
        finally:
            # The workers go now, not when the error's traceback lets go of the iterator (as EpochLoader's).
            getattr(it, "_shutdown_workers", lambda: None)()
        self.decoded = decoded

    def decode_shard(self, url: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One shard's samples decoded, in storage order: (uint8 (n, H, W, C) images, int64 (n,) labels)."""
        from webdataset.tariterators import group_by_keys

        errors = NamedErrors()
        samples = group_by_keys(self._counted_expander(errors)(self.opener([{"url": url}])), handler=errors)
        pairs = [self.decoder(sample) for sample in samples]
        images = np.stack([p for p, _ in pairs]) if pairs else np.empty((0, *self.decoder.shape), np.uint8)
        return torch.from_numpy(images), torch.tensor([label for _, label in pairs], dtype=torch.long)

    def _slot(self) -> tuple[int, int, int]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        return self.rank * workers + worker, self.world * workers, workers

    def _quota(self, slot: int, workers: int) -> int:
        worker = slot % workers
        return self.batches // workers + (1 if worker < self.batches % workers else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.slot_batches(*self._slot())

    def slot_batches(self, slot: int, slots: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one (rank, worker) slot: ``slot`` of ``slots`` in all, ``workers`` per rank."""
        import webdataset as wds

        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        self.decoder.rng = random.Random(f"{self.seed}-{self.epoch}-{slot}")  # augmentation, fixed per slot and epoch
        self.decoder.epoch = self.epoch  # the recipe's stages: seeded per sample by (seed, epoch, key)
        urls = list(self.urls)
        if self.train:
            rng.shuffle(urls)
        by_shard = len(urls) >= slots
        mine = urls[slot::slots] if by_shard else urls

        def shard_source():
            passes = itertools.count() if self.train else range(1)
            for p in passes:
                order = list(mine)
                if self.train and p:
                    random.Random(self.seed * 7919 + self.epoch * 131 + p).shuffle(order)
                yield from ({"url": u} for u in order)

        from webdataset.tariterators import group_by_keys

        errors = NamedErrors()
        decoded = self.decoded
        if decoded is not None:
            # The decoded samples of each shard, in storage order: what the stages below would have made of it.
            def cached(src):
                for item in src:
                    images, labels = decoded[item["url"]]
                    yield from zip(images, labels)

            stages: list[Any] = [shard_source, cached]
        else:
            stages = [shard_source, self.opener, self._counted_expander(errors),
                      lambda src: group_by_keys(src, handler=errors)]
        if not by_shard:
            stages.append(wds.select(_EveryNth(slot, slots)))
        if self.train:
            stages.append(wds.shuffle(self.buffer, initial=min(self.buffer, 1000), rng=random.Random(rng.random() + slot)))
        from lit_imgcls.data.transforms import collate

        if decoded is None:
            stages.append(wds.map(self.decoder))
        stages.append(wds.batched(self.batch_size, collation_fn=collate, partial=not self.train))
        pipeline = wds.DataPipeline(*stages)
        it = iter(pipeline)
        if self.train:
            it = itertools.islice(it, self._quota(slot, workers))
        yield from it


    def _counted_expander(self, errors: "NamedErrors"):
        """tar_file_expander per shard, checking each shard yields the files its manifest entry counts.

        tarfile ends a stream quietly at a damaged member header: without the count a damaged shard would be
        read in part (and repeated) and the run would go on as if nothing were wrong.
        """
        from webdataset.tariterators import base_plus_ext, tar_file_expander

        samples = {url: entry.get("samples") for url, entry in self.opener.entries.items()}

        def expand(src):
            for shard in src:
                keys: set[str] = set()
                for item in tar_file_expander([shard], handler=errors):
                    if "fname" in item:  # webdataset also passes on items that carry only the shard's url
                        keys.add(base_plus_ext(item["fname"])[0])  # the sample it belongs to, as group_by_keys sees it
                    yield item
                # The shard's sha256 and size, over every byte (tar stops reading at its end-of-archive blocks).
                finish(shard["stream"])
                want = samples.get(shard["url"])
                if want is not None and len(keys) != want:
                    raise UsageError(f"shard {shard['url']} ends after {len(keys)} of its {want} samples: it is "
                                     "damaged; run `lit-imgcls dataset verify` on the pack")

        return expand


class _DecodedShards(torch.utils.data.Dataset):
    """Shard i of a stream, decoded (:meth:`ShardStream.decode_shard`): what loader workers hand back to fill
    :attr:`ShardStream.decoded`."""

    def __init__(self, stream: ShardStream) -> None:
        self.stream = stream

    def __len__(self) -> int:
        return len(self.stream.urls)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.stream.decode_shard(self.stream.urls[i])


class _EveryNth:
    """Keeps samples slot, slot + n, slot + 2n, ... of the stream (webdataset's select stage)."""

    def __init__(self, slot: int, n: int) -> None:
        self.slot, self.n, self.i = slot, n, -1

    def __call__(self, sample: dict) -> bool:
        self.i += 1
        return self.i % self.n == self.slot


class EpochLoader(ResumableEpoch):
    """A DataLoader over a ShardStream with a length and ``set_epoch`` (through ``sampler``), as Lightning expects.

    Resumable mid-epoch (:class:`~lit_imgcls.data.resumable.ResumableEpoch`): a restored loader rebuilds the
    epoch's streams and discards the batches handed out before the checkpoint. They are decoded all the same:
    the random crops draw from one generator per worker in stream order (the number of draws depends on each
    image's size), and the DataLoader deals batches round-robin over the workers, so decoding and dropping them
    is what keeps every later batch, pixels included, the same as in the uninterrupted epoch.
    """

    def __init__(self, stream: ShardStream, workers: int) -> None:
        self.stream, self.workers = stream, workers
        self.sampler = self
        self.batch_sampler = None
        self.dataset = stream

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self.stream.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.stream.batches is None:
            raise TypeError("validation streams have no fixed length")
        return self.stream.batches

    def __iter__(self):
        skip = self.start_epoch()
        if self.stream.decoded is not None:
            batches = self._in_process()
        else:
            loader = torch.utils.data.DataLoader(self.stream, batch_size=None, num_workers=self.workers,
                                                 pin_memory=torch.cuda.is_available(), persistent_workers=False,
                                                 worker_init_fn=loader_worker_init)
            batches = iter(loader)
        try:
            # Batches arrive channels-last already (NHWC memory): the model takes them as they are.
            yield from self.counted(self.skipped(batches, skip))
        except (UsageError, RunFailed) as exc:
            # From a worker process the message carries the worker's traceback; the user needs its last line.
            raise from_worker(exc) from None
        finally:
            # Worker processes go now (a damaged shard, an early stop), not when the last reference to this
            # iterator does: the error's traceback keeps this frame, and with it the iterator, alive.
            getattr(batches, "_shutdown_workers", lambda: None)()

    def _in_process(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches a DataLoader with ``workers`` processes would hand out, made in this process from the decoded
        samples: the workers' slots, one batch from each in turn (the DataLoader's order), a slot that has run out
        left out. Served from memory a sample costs a few microseconds, so worker processes would only take cores
        from training and add the hand-over between processes (docs/BENCHMARKS.md, "Packs of small images")."""
        workers = max(1, self.workers)
        first, slots = self.stream.rank * workers, self.stream.world * workers
        active = [self.stream.slot_batches(first + w, slots, workers) for w in range(workers)]
        while active:
            for it in list(active):
                batch = next(it, None)
                if batch is None:
                    active.remove(it)
                else:
                    yield batch


class WDSDataModule(PackedDataModule):
    """Trains from the WebDataset shards of a pack (local folder, file://, http(s):// or s3:// URL).

    Arguments as :class:`PackedDataModule`; ``data_nthreads`` worker processes decode with libjpeg-turbo.
    """

    format_name = "wds"
    shuffle_buffer = 5000

    def use_eval_config(self, config) -> bool:
        """Evaluates with ``config`` (a checkpoint's): every input size and crop is in reach of this loader."""
        if config.input_size != self.image_shape:
            return False
        self._eval_config = config
        return True

    def _loader(self, location: str, manifest: dict, split: str, train: bool) -> EpochLoader:
        rank, world = self.rank_world()
        pipeline = None
        if train and self.stages is not None:
            from lit_imgcls.data.augment import Pipeline, StageContext

            pipeline = Pipeline(self.stages, StageContext(self.image_shape, self.num_classes))
        decoder = SampleDecoder(self.data_config, train, augment=not self.small, num_classes=len(manifest["class_names"]),
                                pipeline=pipeline, seed=self.seed)
        count = manifest["splits"][split]["count"]
        urls, entries = shard_urls(location, manifest, split), manifest["splits"][split]["wds"]
        check_local_shards(urls, entries)
        stream = ShardStream(
            urls, decoder, self.batch_size, train,
            self.seed, rank, world, self.batches_per_rank(count) if train else None, self.shuffle_buffer,
            ShardOpener(dict(zip(urls, entries)), self.data_cache),
        )
        # Decoded pixels are kept only when they are the same every epoch: augmentation stages draw anew per epoch.
        if pipeline is None and self.keeps_decoded(count):
            stream.decode_all(self.workers)
        return EpochLoader(stream, self.workers)
