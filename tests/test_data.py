"""Data sources: MNIST's IDX files, packaged copy and download; CIFAR-10's tarball; image folders."""

from __future__ import annotations

import http.server
import io
import pickle
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_imgcls.data.arrays import TensorBatches
from lit_imgcls.data.cifar import CIFAR10DataModule, load_cifar10
from lit_imgcls.data.mnist import load_mnist, read_idx, write_idx
from lit_imgcls.errors import UsageError

from conftest import quick_args, run_cli


def test_packaged_mnist_is_the_real_one(mnist_arrays):
    assert mnist_arrays["train_images"].shape == (60000, 28, 28)
    assert mnist_arrays["test_images"].shape == (10000, 28, 28)
    assert np.bincount(mnist_arrays["train_labels"]).tolist()[:3] == [5923, 6742, 5958]


def test_idx_round_trip_and_header_checks(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x.idx", "x.idx.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)
    raw = (tmp_path / "x.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-3])
    with pytest.raises(UsageError, match="truncated"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "junk.idx").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(UsageError, match="not an IDX"):
        read_idx(tmp_path / "junk.idx")


def test_mnist_from_official_idx_files(mnist_idx_dir, mnist_arrays):
    arrays, source = load_mnist(mnist_idx_dir)
    assert source.startswith("IDX files")
    for key in arrays:
        assert np.array_equal(arrays[key], mnist_arrays[key])


def test_mnist_idx_with_a_changed_pixel_fails_its_checksum(tmp_path, mnist_arrays, mnist_idx_dir):
    for f in mnist_idx_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    bad = mnist_arrays["test_images"].copy()
    bad[5, 10, 10] ^= 0xFF
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", bad)
    with pytest.raises(UsageError, match="test_images .* sha256"):
        load_mnist(tmp_path)


@pytest.fixture
def http_server(mnist_idx_dir):
    """A real HTTP server on loopback serving the IDX files, standing in for the official mirror."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(mnist_idx_dir))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_mnist_download_checks_and_caches(tmp_path, http_server, mnist_arrays):
    target = tmp_path / "mnist"
    target.mkdir()
    arrays, source = load_mnist(target, data_url=http_server)
    assert np.array_equal(arrays["train_labels"], mnist_arrays["train_labels"])
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{s}.gz" for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    # second time: read from the folder, no server needed
    arrays2, source2 = load_mnist(target, data_url=None)
    assert source2.startswith("IDX files") and np.array_equal(arrays2["test_images"], mnist_arrays["test_images"])


def test_mnist_download_failure_is_one_clear_line(tmp_path):
    res = run_cli("fit", *quick_args(tmp_path, data_dir=tmp_path, data_url="http://127.0.0.1:9/"))
    assert res.returncode == 2 and "no download worked" in res.stderr and "Traceback" not in res.stderr


def test_batches_are_equal_per_rank_and_fixed_by_seed_and_epoch():
    x = torch.arange(103, dtype=torch.float32).view(103, 1, 1, 1)
    y = torch.arange(103)
    ranks = [TensorBatches(x, y, 10, shuffle=True, seed=1, drop_last=True, rank=r, world_size=3) for r in range(3)]
    for loader in ranks:
        loader.set_epoch(4)
    seen = [torch.cat([b[1] for b in loader]) for loader in ranks]
    assert [len(loader) for loader in ranks] == [3, 3, 3]
    assert all(len(s) == 30 for s in seen)
    assert len(set(torch.cat(seen).tolist())) == 90  # disjoint shards
    again = TensorBatches(x, y, 10, shuffle=True, seed=1, drop_last=True, rank=0, world_size=3)
    again.set_epoch(4)
    assert torch.equal(torch.cat([b[1] for b in again]), seen[0])
    again.set_epoch(5)
    assert not torch.equal(torch.cat([b[1] for b in again]), seen[0])
    ordered = TensorBatches(x, y, 10, shuffle=False)
    assert len(ordered) == 11 and torch.equal(torch.cat([b[1] for b in ordered]), y)


def _cifar_batch(n: int, rng: np.random.Generator, offset: int) -> dict:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return {b"batch_label": b"batch", b"labels": [int(v) for v in (np.arange(n) + offset) % 10], b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def _write_cifar_tarball(path: Path, per_batch: int = 20) -> dict:
    """The official layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}, pickled dicts."""
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": _cifar_batch(per_batch, rng, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(per_batch, rng, 7)
    batches["batches.meta"] = {b"label_names": [b"airplane"], b"num_cases_per_batch": per_batch}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return batches


def test_cifar10_official_tarball(tmp_path):
    batches = _write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    arrays = load_cifar10(tmp_path)
    assert arrays["train_images"].shape == (100, 3, 32, 32)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    assert np.array_equal(arrays["train_images"][0], first)
    assert arrays["train_labels"][:3].tolist() == [1, 2, 3]
    assert arrays["test_labels"][0] == 7
    dm = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=8)
    dm.setup()
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (8, 3, 32, 32) and xb.dtype == torch.float32


def test_cifar10_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(4, rng, 0), protocol=2))
    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(UsageError, match="refusing to load builtins.exec"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar10_trains_through_the_cli(tmp_path):
    _write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=40)
    res = run_cli("fit", *quick_args(tmp_path, dataset="cifar10", data_dir=tmp_path, network="lenet", num_examples=200,
                                     batch_size=16), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "val top-1 accuracy" in res.stdout


def test_image_folder_dataset_trains(tmp_path):
    """The folder baseline (ImageNet layout) on real photos from scikit-image, two classes."""
    from PIL import Image

    skdata = pytest.importorskip("skimage.data")
    photos = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee()}
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 4)):
        for name, img in photos.items():
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                y0, x0 = rng.integers(0, 100, size=2)
                Image.fromarray(img[y0 : y0 + 300, x0 : x0 + 300]).save(folder / f"{i}.jpg", quality=90)
    res = run_cli("fit", *quick_args(tmp_path, dataset="folder", data_dir=tmp_path / "data", image_shape="3,64,64",
                                     network="resnet10t", batch_size=8, data_nthreads=0, num_epochs=2, lr=0.02), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "val top-1 accuracy" in res.stdout
    from lit_imgcls.io import load_checkpoint

    assert load_checkpoint(tmp_path / "model/mnist-0002.ckpt")["lit_imgcls"]["class_names"] == ["astronaut", "coffee"]
