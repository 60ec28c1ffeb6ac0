"""Packs read by URL: a real S3-compatible server (SeaweedFS) and a real HTTP server, both on loopback."""

from __future__ import annotations

import http.server
import shutil
import threading
from functools import partial
from pathlib import Path

import pytest

from lit_imgcls.data.photos import make_photo_corpus

from conftest import quick_args, run_cli


@pytest.fixture(scope="module")
def packs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("remote-packs")
    make_photo_corpus(root / "photos", train_per_class=10, val_per_class=4, classes=3, seed=2)
    for split, ratio in (("train", "1"), ("val", "0")):
        res = run_cli("dataset", "pack", str(root / "photos" / split), str(root / split), "--format", "both",
                      "--resize", "48", "--shard-size", "8", "--train-ratio", ratio)
        assert res.returncode == 0, res.stderr
    return root


def _fit(tmp: Path, train: str, val: str, env: dict | None = None, **extra):
    tmp.mkdir(parents=True, exist_ok=True)
    return run_cli("fit", *quick_args(tmp, dataset=extra.pop("dataset", "wds"), network="resnet10t", image_shape="3,32,32",
                                      batch_size=6, data_nthreads=1, num_epochs=1, data_train=train, data_val=val, **extra),
                   cwd=tmp, env=env)


def test_train_from_s3(s3, packs, tmp_path):
    fs, env = s3
    for split in ("train", "val"):
        fs.put(str(packs / split), f"packs/photos/{split}", recursive=True)
    res = _fit(tmp_path, "s3://packs/photos/train", "s3://packs/photos/val", env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "val top-1 accuracy" in res.stdout
    # through the cache: shards land locally, checked against the manifest's sha256; FFCV reads the cached copy
    cache = tmp_path / "cache"
    for fmt in ("wds", "ffcv"):
        res = _fit(tmp_path / fmt, "s3://packs/photos/train", "s3://packs/photos/val", env, dataset=fmt, data_cache=cache)
        assert res.returncode == 0, (fmt, res.stderr[-3000:])
    assert len(list(cache.glob("*.tar"))) == 4 + 2 and len(list(cache.glob("*.beton"))) == 2


def test_corrupt_shard_in_s3_is_named(s3, packs, tmp_path):
    fs, env = s3
    fs.put(str(packs / "train"), "packs/bad/train", recursive=True)
    data = bytearray((packs / "train/wds/train-000001.tar").read_bytes())
    data[3000] ^= 0xFF
    with fs.open("packs/bad/train/wds/train-000001.tar", "wb") as f:
        f.write(bytes(data))
    res = _fit(tmp_path, "s3://packs/bad/train", str(packs / "val"), env, data_cache=tmp_path / "cache")
    assert res.returncode == 2, res.stderr[-3000:]
    assert "train-000001.tar fails its sha256 check" in res.stderr and "Traceback" not in res.stderr


def test_missing_s3_pack_is_one_clear_line(s3, tmp_path):
    _, env = s3
    res = _fit(tmp_path, "s3://packs/nothing-here", "s3://packs/nothing-here", env)
    assert res.returncode == 2 and "cannot" in res.stderr and "manifest" in res.stderr
    assert "Traceback" not in res.stderr


def test_train_over_http(packs, tmp_path):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(packs))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        res = _fit(tmp_path, f"{base}/train", f"file://{packs / 'val'}")
        assert res.returncode == 0, res.stderr[-3000:]
        assert "val top-1 accuracy" in res.stdout
    finally:
        server.shutdown()
        server.server_close()


def test_truncated_local_shard_is_named_before_training(packs, tmp_path):
    bad = tmp_path / "train"
    shutil.copytree(packs / "train", bad)
    shard = bad / "wds/train-000002.tar"
    shard.write_bytes(shard.read_bytes()[:1000])
    res = _fit(tmp_path, str(bad), str(packs / "val"))
    assert res.returncode == 2 and "train-000002.tar has 1000 bytes" in res.stderr


def test_flipped_byte_in_a_local_shard_is_named_at_load_time(packs, tmp_path):
    bad = tmp_path / "train"
    shutil.copytree(packs / "train", bad)
    shard = bad / "wds/train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # inside the first image's JPEG data
    shard.write_bytes(bytes(data))
    res = _fit(tmp_path, str(bad), str(packs / "val"))
    assert res.returncode == 2, res.stderr[-2000:]
    assert "train-000000.tar" in res.stderr and "Traceback" not in res.stderr
