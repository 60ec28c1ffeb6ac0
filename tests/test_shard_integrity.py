"""Every byte a loader reads from a pack is checked against the manifest: real packs with one byte changed (same
size), read locally, from the download cache, streamed from a real HTTP server started here, by FFCV, and by
`predict`."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from functools import partial
from pathlib import Path

import pytest
from conftest import quick_args, run_cli

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """A WebDataset pack of 12 photos (2 classes) in 3 shards of 4 samples."""
    from lit_imgcls.data.photos import make_photo_corpus

    root = tmp_path_factory.mktemp("integrity")
    make_photo_corpus(root / "photos", train_per_class=6, val_per_class=1, classes=2, seed=3)
    res = run_cli("dataset", "pack", str(root / "photos" / "train"), str(root / "pack"), "--format", "wds",
                  "--resize", "40", "--shard-size", "4", "--train-ratio", "0")
    assert res.returncode == 0, res.stderr
    return root / "pack"


def copy_of(pack: Path, tmp: Path) -> Path:
    out = tmp / "pack"
    shutil.copytree(pack, out)
    return out


def entries(pack: Path) -> dict[str, dict]:
    manifest = json.loads((pack / "manifest.json").read_text())
    return {e["file"]: e for e in manifest["splits"]["val"]["wds"]}


def flip_label(shard: Path) -> None:
    """The first sample's label "0" <-> "1": same size, the image still decodes, the label is now wrong."""
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        cls = next(m for m in tar.getmembers() if m.name.endswith(".cls"))
    assert data[cls.offset_data : cls.offset_data + 1] in (b"0", b"1")
    data[cls.offset_data] ^= 1
    shard.write_bytes(bytes(data))


def flip_padding(shard: Path) -> None:
    """A byte of the tar file's end padding, which no tar reader reads: only the whole-file hash sees it."""
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x55
    shard.write_bytes(bytes(data))


def read_all(urls: list[str], entry_of: dict[str, dict], cache: Path | None = None, workers: int = 0) -> list:
    """Labels of every validation batch of the WebDataset loader over ``urls``."""
    from lit_imgcls.data.formats.wds import EpochLoader, SampleDecoder, ShardOpener, ShardStream
    from lit_imgcls.data.preprocess import DataConfig

    decoder = SampleDecoder(DataConfig((3, 32, 32), "center", mean=(0.5,) * 3, std=(0.5,) * 3), train=False,
                            augment=False, num_classes=2)
    stream = ShardStream(urls, decoder, 4, False, 0, 0, 1, None, 8,
                         ShardOpener({u: entry_of[u.rsplit("/", 1)[-1]] for u in urls}, str(cache) if cache else None))
    return [y.tolist() for _, y in EpochLoader(stream, workers)]


@pytest.fixture(scope="module")
def served(pack):
    """A real HTTP server on loopback serving the pack; ``gets`` lists the paths it was asked for."""
    gets: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # http.server's name
            gets.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    root = pack.parent / "served"
    shutil.copytree(pack, root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, gets
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------------- local shards

@pytest.mark.parametrize("damage", [flip_label, flip_padding], ids=["label", "padding"])
def test_a_changed_byte_in_a_local_shard_stops_the_loader_naming_it(pack, tmp_path, damage):
    from lit_imgcls.errors import DamagedShard

    out = copy_of(pack, tmp_path)
    urls = [str(out / "wds" / f) for f in sorted(entries(out))]
    assert len(read_all(urls, entries(out))) == 3  # undamaged: every batch
    damage(out / "wds" / "val-000001.tar")
    assert (out / "wds" / "val-000001.tar").stat().st_size == entries(out)["val-000001.tar"]["bytes"]
    with pytest.raises(DamagedShard, match=r"shard .*/val-000001\.tar fails its sha256 check") as err:
        read_all(urls, entries(out))
    assert "\n" not in str(err.value)


def test_worker_processes_go_when_a_shard_is_damaged(pack, tmp_path):
    from lit_imgcls.errors import DamagedShard

    out = copy_of(pack, tmp_path)
    flip_label(out / "wds" / "val-000002.tar")
    urls = [str(out / "wds" / f) for f in sorted(entries(out))]
    start = time.monotonic()
    with pytest.raises(DamagedShard, match=r"val-000002\.tar fails its sha256 check"):
        read_all(urls, entries(out), workers=2)
    # the one line of the worker's message, not its traceback; both workers gone while the error is still held
    assert time.monotonic() - start < 60
    assert multiprocessing.active_children() == []


def test_a_cut_or_lengthened_shard_is_named_as_it_is_read(pack, tmp_path):
    from lit_imgcls.data.shard_check import open_shard
    from lit_imgcls.errors import DamagedShard

    shard = tmp_path / "val-000000.tar"
    good = (pack / "wds" / "val-000000.tar").read_bytes()
    entry = entries(pack)["val-000000.tar"]
    for data, message in ((good[:5000], "ends after 5000 of its"), (good + b"\0" * 512, "longer than the")):
        shard.write_bytes(data)
        with pytest.raises(DamagedShard, match=message), open_shard(str(shard), entry) as f:
            while f.read(1 << 16):
                pass


# ---------------------------------------------------------------------------------- streamed over HTTP

def test_a_streamed_http_shard_is_hashed_as_it_is_read(served, pack):
    from lit_imgcls.errors import DamagedShard

    base, root, _ = served
    urls = [f"{base}/wds/{f}" for f in sorted(entries(pack))]
    assert len(read_all(urls, entries(pack))) == 3
    flip_label(root / "wds" / "val-000000.tar")
    try:
        with pytest.raises(DamagedShard, match=re.escape(f"shard {base}/wds/val-000000.tar fails its sha256 check")):
            read_all(urls, entries(pack))
    finally:
        shutil.copy(pack / "wds" / "val-000000.tar", root / "wds" / "val-000000.tar")


# ------------------------------------------------------------------------------------ the download cache

def test_the_cache_trusts_only_copies_it_wrote_and_proved(served, pack, tmp_path):
    from lit_imgcls.data.remote import RECORD_SUFFIX, cached_copy
    from lit_imgcls.errors import DamagedShard, UsageError

    base, _, gets = served
    name = "val-000001.tar"
    url, entry = f"{base}/wds/{name}", entries(pack)[name]
    good = (pack / "wds" / name).read_bytes()
    cache = tmp_path / "cache"

    def fetches() -> int:
        return sum(g.endswith(name) for g in gets)

    before = fetches()
    copy = cached_copy(url, cache, entry["sha256"], entry["bytes"])
    record = copy.with_name(copy.name + RECORD_SUFFIX)
    assert copy.read_bytes() == good and json.loads(record.read_text())["sha256"] == entry["sha256"]
    assert cached_copy(url, cache, entry["sha256"], entry["bytes"]) == copy and fetches() == before + 1  # reused

    # One byte changed in place, size and modification time kept: no longer the file that was proven; fetched again.
    st = copy.stat()
    data = bytearray(good)
    data[-10] ^= 0x55  # in the tar's end padding: nothing but the hash can see it
    with open(copy, "r+b") as f:
        f.write(bytes(data))
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cached_copy(url, cache, entry["sha256"], entry["bytes"]) == copy and fetches() == before + 2
    assert copy.read_bytes() == good

    # A record forged to match a changed copy still does not get its bytes past the loader: they are hashed as read.
    copy.write_bytes(bytes(data))
    held = json.loads(record.read_text())
    st = copy.stat()
    record.write_text(json.dumps({**held, "stat": [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]}))
    assert cached_copy(url, cache, entry["sha256"], entry["bytes"]) == copy and fetches() == before + 2
    with pytest.raises(DamagedShard, match=re.escape(f"{url} fails its sha256 check")):
        read_all([url], entries(pack), cache=cache)

    # A record of ours naming another hash: fetched again.
    record.write_text(json.dumps({**held, "sha256": "0" * 64}))
    cached_copy(url, cache, entry["sha256"], entry["bytes"])
    assert fetches() == before + 3 and copy.read_bytes() == good

    # A file of that name that lit-imgcls did not write: refused, left as it is, nothing fetched.
    record.unlink()
    copy.write_bytes(b"the user's own file")
    with pytest.raises(UsageError, match="which lit-imgcls did not write") as err:
        cached_copy(url, cache, entry["sha256"], entry["bytes"])
    assert "\n" not in str(err.value) and copy.read_bytes() == b"the user's own file" and fetches() == before + 3


def test_one_download_per_cached_file_at_a_time(served, pack, tmp_path):
    from filelock import FileLock

    from lit_imgcls.data.remote import cached_copy

    base = served[0]
    name = "val-000002.tar"
    entry = entries(pack)[name]
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / f"{entry['sha256'][:16]}-{name}"
    done: list[Path] = []
    with FileLock(str(target) + ".lock"):  # another process downloading it
        thread = threading.Thread(target=lambda: done.append(cached_copy(f"{base}/wds/{name}", cache, entry["sha256"],
                                                                          entry["bytes"])))
        thread.start()
        thread.join(0.5)
        assert not done and not target.exists()
    thread.join(30)
    assert done == [target] and target.read_bytes() == (pack / "wds" / name).read_bytes()


# ----------------------------------------------------------------------------------- memory-mapped files

def test_a_memory_mapped_file_is_hashed_whole_once_per_process(pack, tmp_path):
    """FFCV's .beton is memory-mapped: hashed whole when the loader opens it (here a shard stands in for one)."""
    from lit_imgcls.data.shard_check import check_whole_file
    from lit_imgcls.errors import DamagedShard

    path = tmp_path / "val.beton"
    shutil.copy(pack / "wds" / "val-000000.tar", path)
    entry = entries(pack)["val-000000.tar"]
    check_whole_file(path, entry)
    flip_padding(path)
    with pytest.raises(DamagedShard, match=r"val\.beton: sha256 .* differs from the manifest's"):
        check_whole_file(path, entry)


@pytest.mark.slow
def test_fit_on_a_beton_with_a_changed_byte_stops_naming_it(tmp_path):
    pytest.importorskip("ffcv")
    from lit_imgcls.data.photos import make_photo_corpus

    make_photo_corpus(tmp_path / "photos", train_per_class=6, val_per_class=2, classes=2, seed=4)
    for split, ratio in (("train", "1"), ("val", "0")):
        res = run_cli("dataset", "pack", str(tmp_path / "photos" / split), str(tmp_path / split), "--format", "ffcv",
                      "--resize", "32", "--train-ratio", ratio)
        assert res.returncode == 0, res.stderr
    beton = tmp_path / "train" / "ffcv" / "train.beton"
    data = bytearray(beton.read_bytes())
    data[len(data) // 3] ^= 1
    beton.write_bytes(bytes(data))
    res = run_cli("fit", *quick_args(tmp_path, dataset="ffcv", network="resnet10t", image_shape="3,32,32", batch_size=4,
                                     data_nthreads=1, data_train=tmp_path / "train", data_val=tmp_path / "val"))
    assert res.returncode == 2, res.stderr[-2000:]
    assert "train.beton: sha256" in res.stderr and "Traceback" not in res.stderr


# -------------------------------------------------------------------------------------------- commands

@pytest.mark.slow
def test_fit_on_a_changed_label_stops_with_one_line_and_leaves_no_process(pack, tmp_path):
    out = tmp_path / "train"
    res = run_cli("dataset", "pack", str(pack.parent / "photos" / "train"), str(out), "--format", "wds",
                  "--resize", "40", "--shard-size", "4", "--train-ratio", "1")
    assert res.returncode == 0, res.stderr
    flip_label(out / "wds" / "train-000001.tar")
    args = quick_args(tmp_path, dataset="wds", network="resnet10t", image_shape="3,32,32", batch_size=4,
                      data_nthreads=2, data_train=out, data_val=pack)
    proc = subprocess.Popen([sys.executable, "-m", "lit_imgcls", "fit", *args], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 2, stderr[-2000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("lit-imgcls: error:")]
    assert len(lines) == 1 and "train-000001.tar fails its sha256 check" in lines[0] and "Traceback" not in stderr
    left = [p for p in os.listdir("/proc") if p.isdigit() and _session(p) == proc.pid]
    assert left == [], "loader workers outlived the run"


def _session(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[4])
    except (OSError, IndexError, ValueError):
        return None


def test_predict_over_a_pack_with_a_damaged_shard_names_it_and_exits_1(pack, tmp_path):
    fit = run_cli("fit", *quick_args(tmp_path, num_examples="256"))
    assert fit.returncode == 0, fit.stderr[-2000:]
    out = copy_of(pack, tmp_path)
    flip_label(out / "wds" / "val-000001.tar")
    res = run_cli("predict", "--checkpoint", str(tmp_path / "model" / "mnist-0001.ckpt"), "--format", "json",
                  "--top-k", "1", "--threads", "2", str(out))
    assert res.returncode == 1, res.stderr[-2000:]
    docs = json.loads(res.stdout)
    predicted = [d for d in docs if "error" not in d]
    assert len(predicted) == 8  # the good shards' samples, none of the damaged one's
    assert [d["input"] for d in docs if "error" in d] == [str(out / "wds" / "val-000001.tar")]
    assert "val-000001.tar fails its sha256 check" in res.stderr and "Traceback" not in res.stderr
