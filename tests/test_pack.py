"""dataset pack / inspect / verify, and training from the packed formats."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_imgcls.data.pack import PackOptions, split_items
from lit_imgcls.data.pack_check import iter_tar_samples
from lit_imgcls.data.photos import make_photo_corpus
from lit_imgcls.data.sources import open_source

from conftest import REPO, quick_args, run_cli


def _shard_samples(shard: Path):
    """(key, image bytes, label) of a shard of a pack, labels checked against the pack's classes."""
    pack = Path(shard).parents[1]
    return iter_tar_samples(shard, len(json.loads((pack / "manifest.json").read_text())["class_names"]))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("photos")
    make_photo_corpus(out, train_per_class=12, val_per_class=4, classes=3, seed=1)
    return out


def _storage_order(src: str, **opts) -> dict:
    return split_items(open_source(src), PackOptions(**opts))


def test_folder_pack_round_trip_with_stock_readers(photos, tmp_path):
    out = tmp_path / "pack"
    res = run_cli("dataset", "pack", str(photos / "train"), str(out), "--format", "both", "--pass-through", "--shard-size", "10")
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["class_names"] == ["astronaut", "chelsea", "coffee"]
    assert m["splits"]["train"]["count"] == 36 and m["splits"]["train"]["per_class"] == [12, 12, 12]
    assert len(m["splits"]["train"]["wds"]) == 4  # 10 + 10 + 10 + 6
    order = _storage_order(str(photos / "train"))["train"]

    # WebDataset: a plain webdataset.WebDataset reads it, keys in storage order, original bytes kept
    import webdataset as wds

    urls = [str(out / "wds" / s["file"]) for s in m["splits"]["train"]["wds"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [int(s["cls"]) for s in samples] == [it.label for it in order]
    assert all(s["jpg"] == Path(it.path).read_bytes() for s, it in zip(samples, order))
    # and so does tar
    listing = subprocess.run(["tar", "-tf", urls[0]], capture_output=True, text=True, check=True).stdout.split()
    assert listing[:2] == ["train00000000.jpg", "train00000000.cls"]

    # FFCV: a plain ffcv Loader reads it; labels exact, pixels within JPEG tolerance. (Its simple decoder needs
    # one image size, so this pack is cut to 64 x 64 squares.)
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    sq = tmp_path / "square"
    res = run_cli("dataset", "pack", str(photos / "train"), str(sq), "--format", "both", "--resize", "64", "--center-crop")
    assert res.returncode == 0, res.stderr
    ms = json.loads((sq / "manifest.json").read_text())
    loader = Loader(str(sq / ms["splits"]["train"]["ffcv"]["file"]), batch_size=1, num_workers=1,
                    order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    seen = 0
    refs = list(_shard_samples(sq / "wds/train-000000.tar"))
    for (image, label), (_, data, ref_label), item in zip(loader, refs, order):
        assert int(label[0][0]) == ref_label == item.label
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
        assert image[0].shape == ref.shape == (64, 64, 3)
        assert np.abs(image[0].astype(np.float32) - ref).mean() < 4.0  # FFCV re-encodes at quality 95
        seen += 1
    assert seen == 36


def test_resize_crop_and_shuffle_by_seed(photos, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 0), (b, 1)):
        res = run_cli("dataset", "pack", str(photos / "train"), str(out), "--resize", "64", "--center-crop", "--seed", str(seed))
        assert res.returncode == 0, res.stderr
    la = [lbl for _, _, lbl in _shard_samples(a / "wds/train-000000.tar")]
    lb = [lbl for _, _, lbl in _shard_samples(b / "wds/train-000000.tar")]
    assert sorted(la) == sorted(lb) and la != lb
    img = Image.open(io.BytesIO(next(_shard_samples(a / "wds/train-000000.tar"))[1]))
    assert img.size == (64, 64)
    m = json.loads((a / "manifest.json").read_text())
    assert m["splits"]["train"]["image_size"] == {"min": [64, 64], "max": [64, 64]}


def test_list_lst_and_csv_sources_and_ratios(photos, tmp_path):
    files = sorted((photos / "train").rglob("*.jpg"))
    names = ["astronaut", "chelsea", "coffee"]
    lst = tmp_path / "all.lst"
    lst.write_text("".join(f"{i}\t{names.index(p.parent.name)}.000000\t{p.relative_to(photos)}\n" for i, p in enumerate(files))
                   + "99\t-1\tbad.jpg\n")
    res = run_cli("dataset", "pack", str(lst), str(tmp_path / "lst"), "--root", str(photos), "--train-ratio", "0.5", "--test-ratio", "0.25")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "lst/manifest.json").read_text())
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 18, "test": 9, "val": 9}
    assert any("not a non-negative integer" in row["reason"] for row in m["skipped"])

    csv = tmp_path / "all.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in files))
    res = run_cli("dataset", "pack", str(csv), str(tmp_path / "csv"))
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "csv/manifest.json").read_text())
    assert m["class_names"] == names and m["splits"]["train"]["per_class"] == [12, 12, 12]

    res = run_cli("dataset", "pack", str(photos / "train"), str(tmp_path / "lists"), "--list", "--train-ratio", "0.75")
    assert res.returncode == 0, res.stderr
    rows = (tmp_path / "lists/train.lst").read_text().splitlines()
    assert len(rows) == 27 and rows[0].split("\t")[0] == "0"
    assert not (tmp_path / "lists/manifest.json").exists()


def test_builtin_mnist_packs_exact_pixels(tmp_path, mnist_arrays):
    res = run_cli("dataset", "pack", "mnist", str(tmp_path / "mnist"), "--num-workers", "2")
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "mnist/manifest.json").read_text())
    assert m["splits"]["train"]["count"] == 60000 and m["splits"]["val"]["count"] == 10000
    assert m["channels"] == 1 and m["mean"] == [0.1307]
    order = split_items(open_source("mnist"), PackOptions())["val"]
    for (key, data, label), item in zip(_shard_samples(tmp_path / "mnist/wds/val-000000.tar"), order[:50]):
        assert label == mnist_arrays["test_labels"][item.index]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), mnist_arrays["test_images"][item.index])


def test_unshuffled_pack_is_named_and_explained(photos, tmp_path):
    res = run_cli("dataset", "pack", str(photos / "train"), str(tmp_path / "sorted"), "--no-shuffle")
    assert res.returncode == 0 and "--no-shuffle" in res.stderr and "chance" in res.stderr
    inspected = run_cli("dataset", "inspect", str(tmp_path / "sorted"))
    assert inspected.returncode == 0
    assert "not shuffled" in inspected.stderr and "longest: 12 samples" in inspected.stderr
    shuffled = run_cli("dataset", "pack", str(photos / "train"), str(tmp_path / "shuffled"))
    assert shuffled.returncode == 0
    assert "not shuffled" not in run_cli("dataset", "inspect", str(tmp_path / "shuffled")).stderr


def test_verify_names_a_corrupt_or_truncated_shard(photos, tmp_path):
    out = tmp_path / "pack"
    assert run_cli("dataset", "pack", str(photos / "train"), str(out), "--shard-size", "10").returncode == 0
    ok = run_cli("dataset", "verify", str(out), "--deep")
    assert ok.returncode == 0 and "ok: 4 files" in ok.stdout
    shard = out / "wds/train-000002.tar"
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = run_cli("dataset", "verify", str(out))
    assert bad.returncode == 2 and "wds/train-000002.tar" in bad.stderr and "sha256" in bad.stderr
    assert "Traceback" not in bad.stderr
    (out / "wds/train-000001.tar").write_bytes(b"x" * 100)
    bad = run_cli("dataset", "verify", str(out))
    assert "train-000001.tar: 100 bytes" in bad.stderr and "train-000002.tar" in bad.stderr


def _bad_inputs(folder: Path) -> dict[str, str]:
    """A class folder of troublesome files; returns file name -> expected outcome (a reason word or 'ok')."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    good = Image.fromarray(rgb)
    good.save(folder / "good.jpg", quality=90)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    raw = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    good.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.dstack([rgb, np.full((120, 160), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray((rng.integers(0, 65535, (120, 160))).astype(np.uint16)).save(folder / "sixteen.png")
    good.convert("P").save(folder / "palette.png")
    good.convert("L").save(folder / "grey.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap when applied
    good.save(folder / "rotated.jpg", exif=exif)
    Image.new("L", (5000, 5000)).save(folder / "huge.png")
    (folder / "folder.jpg").mkdir()
    return {"good.jpg": "ok", "empty.jpg": "empty", "text.jpg": "not an image", "truncated.jpg": "corrupt",
            "cmyk.jpg": "ok", "rgba.png": "ok", "sixteen.png": "ok", "palette.png": "ok", "grey.png": "ok",
            "rotated.jpg": "ok", "huge.png": "too many pixels"}


def test_bad_inputs_are_converted_or_skipped_with_a_reason(tmp_path):
    cls = tmp_path / "src" / "things"
    cls.mkdir(parents=True)
    expected = _bad_inputs(cls)
    (tmp_path / "src" / "other").mkdir()
    Image.new("RGB", (50, 40), (200, 10, 10)).save(tmp_path / "src/other/red.png")
    out = tmp_path / "pack"
    res = run_cli("dataset", "pack", str(tmp_path / "src"), str(out), "--max-pixels", "10000000", "--pass-through")
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "manifest.json").read_text())
    reasons = {Path(r["path"]).name: r["reason"] for r in m["skipped"]}
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name not in reasons, (name, reasons.get(name))
        else:
            assert outcome in reasons[name], (name, reasons.get(name))
    assert m["splits"]["train"]["count"] == sum(v == "ok" for v in expected.values()) + 1
    sizes = {}
    order = [it for it in _storage_order(str(tmp_path / "src"))["train"] if Path(it.path).name not in reasons]
    for (key, data, label), item in zip(_shard_samples(out / "wds/train-000000.tar"), order):
        img = Image.open(io.BytesIO(data))
        assert img.mode in ("RGB", "L") and label == item.label
        sizes[Path(item.path).name] = img.size
    assert sizes["rotated.jpg"] == (120, 160)  # EXIF orientation applied
    assert sizes["good.jpg"] == (160, 120)


def test_interrupted_pack_leaves_nothing_valid_and_a_rerun_succeeds(tmp_path):
    src = tmp_path / "src"
    make_photo_corpus(src, train_per_class=150, val_per_class=0, classes=2, seed=3)
    out = tmp_path / "pack"
    cmd = [sys.executable, "-m", "lit_imgcls", "dataset", "pack", str(src / "train"), str(out), "--shard-size", "20",
           "--format", "both"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob(".partial-*/wds/*.tar")):
        time.sleep(0.05)
    assert list(out.glob(".partial-*/wds/*.tar")), "the pack never started writing shards"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    inspected = run_cli("dataset", "verify", str(out))
    assert inspected.returncode == 2 and "interrupted pack leaves none" in inspected.stderr
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert run_cli("dataset", "verify", str(out), "--deep").returncode == 0
    assert not list(out.glob(".partial-*"))


def test_equal_batches_for_every_rank_and_worker(photos, tmp_path):
    """Uneven shards (10, 10, 10, 6 samples), 2 ranks x 2 workers: both ranks yield the same number of batches."""
    from lit_imgcls.data.formats.wds import EpochLoader, SampleDecoder, ShardStream, shard_urls

    out = tmp_path / "pack"
    assert run_cli("dataset", "pack", str(photos / "train"), str(out), "--shard-size", "10", "--resize", "32",
                   "--center-crop").returncode == 0
    m = json.loads((out / "manifest.json").read_text())
    urls = shard_urls(str(out), m, "train")
    from lit_imgcls.data.preprocess import DataConfig

    decoder = SampleDecoder(DataConfig((3, 24, 24), "center", mean=(0.5,) * 3, std=(0.5,) * 3), train=True, augment=True,
                           num_classes=len(m["class_names"]))
    counts = []
    for rank in range(2):
        stream = ShardStream(urls, decoder, batch_size=4, train=True, seed=0, rank=rank, world=2, batches=36 // 2 // 4,
                             buffer=8)
        loader = EpochLoader(stream, workers=2)
        loader.set_epoch(1)
        batches = list(loader)
        counts.append(len(batches))
        assert all(x.shape == (4, 3, 24, 24) and x.dtype == torch.uint8 for x, _ in batches)
    assert counts == [4, 4] == [len(loader)] * 2


def test_imagenet_recipe_trains_on_photo_packs_from_both_formats(photos, tmp_path):
    """recipes/imagenet.yaml at small scale: a small ResNet validated at 64 px on the CPU, from each packed format,
    trained at 32 px (its progressive resizing, scaled down: the batches of each format resized on the device)."""
    packs = tmp_path / "packs"
    for split, ratio in (("train", "1"), ("val", "0")):
        res = run_cli("dataset", "pack", str(photos / split), str(packs / split), "--format", "both", "--resize", "72",
                      "--train-ratio", ratio)
        assert res.returncode == 0, res.stderr
    for fmt in ("wds", "ffcv"):
        small = quick_args(tmp_path / fmt, dataset=fmt, network="resnet10t", image_shape="3,64,64", batch_size=6,
                           data_nthreads=1, num_epochs=1, lr=0.05, data_train=packs / "train", data_val=packs / "val",
                           gpus="", precision="32-true", lr_schedule="linear", data_dir="", min_res=32, max_res=64,
                           start_ramp=0, end_ramp=1)
        if fmt == "wds":  # the check runs before any loader is built, so one format proves it
            res = run_cli("fit", "--recipe", str(REPO / "recipes/imagenet.yaml"), *small, cwd=tmp_path)
            # the recipe's top-5 cannot apply to 3 classes: one clear line; then with top-2
            assert res.returncode == 2 and "top_k 5 exceeds the 3 classes" in res.stderr, res.stderr[-2000:]
        res = run_cli("fit", "--recipe", str(REPO / "recipes/imagenet.yaml"), *small, "--top-k", "2", cwd=tmp_path)
        assert res.returncode == 0, (fmt, res.stderr[-3000:])
        assert "val top-1 accuracy" in res.stdout
        assert "Epoch[0] Train-resolution=32x32 (progressive resizing of the 64x64 batches" in res.stdout, res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["wds", "ffcv"])
def test_mnist_trains_from_each_format(tmp_path_factory, fmt):
    out = tmp_path_factory.getbasetemp() / "mnist-pack"
    if not (out / "manifest.json").exists():
        res = run_cli("dataset", "pack", "mnist", str(out), "--format", "both", "--num-workers", "2")
        assert res.returncode == 0, res.stderr
    tmp = tmp_path_factory.mktemp(fmt)
    res = run_cli("fit", *quick_args(tmp, dataset=fmt, data_train=out, data_nthreads=2, lr=0.05,
                                     lr_schedule="onecycle", nesterov="true", wd=0.0005, channels_last="true"), cwd=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    acc = float(res.stdout.rsplit("val top-1 accuracy ", 1)[1].split()[0])
    assert acc >= 0.985, res.stdout[-1500:]


def test_ffcv_writing_into_a_log_prints_whole_lines(tmp_path, capsys, monkeypatch):
    """Into a log (stderr not a terminal), ``dataset pack --format ffcv`` printed FFCV's own tqdm bar, carriage
    returns and all; its progress now follows lit-imgcls's rule: whole lines at most every 5 s. (FFCV's
    writer stands in as a fake that reports progress the way ``DatasetWriter._write_common`` does.)"""
    import types

    import ffcv.writer

    from lit_imgcls.data.formats.ffcv import write_beton

    class Writer:
        def __init__(self, path, fields, num_workers):
            self.path = path

        def from_indexed_dataset(self, dataset, chunksize):
            bar = ffcv.writer.tqdm(total=100)
            for _ in range(4):
                bar.update(25)
            bar.close()
            Path(self.path).write_bytes(b"beton")

    monkeypatch.setattr(ffcv.writer, "DatasetWriter", Writer)
    own = ffcv.writer.tqdm
    entry = write_beton(tmp_path, "train", [], [], types.SimpleNamespace(encoding=".jpg", quality=90), 1)
    assert entry["file"] == "ffcv/train.beton" and ffcv.writer.tqdm is own
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err, err
