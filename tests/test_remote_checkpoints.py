"""Checkpoints at a URL (issue 15): `--model-prefix s3://bucket/prefix` against a real S3 server (SeaweedFS on
loopback), and storage that fails for a while under a run.

The fast tests use fsspec's in-memory filesystem (``memory://``) for the rules that need no server: names,
checksums, ordering, ownership. The others run the real CLI against SeaweedFS.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import SeaweedS3, quick_args, run_cli, start_fit, wait_for_step
from test_faults_fit import assert_same_training

from lit_imgcls import checkpoints, storage
from lit_imgcls.errors import UsageError
from lit_imgcls.io import load_checkpoint, remove_checkpoint, save_checkpoint

# test_faults_fit's short MNIST run: 15 steps an epoch, 45 in all.
COMMON = {"num_examples": 1000, "lr": 0.1, "lr_factor": 0.9, "lr_factor_epoch": 0.5, "seed": 2, "num_epochs": 3,
          "disp_batches": 1}


@pytest.fixture
def memory_prefix():
    """A fresh prefix in fsspec's in-memory filesystem, removed afterwards."""
    import fsspec

    fs = fsspec.filesystem("memory")
    name = f"/b{random.getrandbits(32):08x}"
    yield f"memory://{name[1:]}/model/x"
    if fs.exists(name):
        fs.rm(name, recursive=True)


def _ckpt(value: float) -> dict:
    return {"state_dict": {"w": torch.full((100,), value)}, "epoch": 0}


def test_a_checkpoint_at_a_url_is_one_object_with_its_checksum_after_it(memory_prefix):
    url = checkpoints.epoch_path(memory_prefix, 1)
    save_checkpoint(_ckpt(1.0), url)
    side = storage.read_bytes(f"{url}.sha256").decode()
    assert side.endswith("  x-0001.ckpt\n") and len(side.split()[0]) == 64
    assert load_checkpoint(url)["state_dict"]["w"][0] == 1.0
    # one flipped byte in the object: named, never loaded
    data = bytearray(storage.read_bytes(url))
    data[len(data) // 2] ^= 1
    storage.write_bytes(url, bytes(data))
    with pytest.raises(UsageError, match=r"x-0001.ckpt is damaged: its sha256 .* differs from x-0001.ckpt.sha256"):
        load_checkpoint(url)
    save_checkpoint(_ckpt(2.0), url)  # rewritten whole, with a new checksum
    assert load_checkpoint(url)["state_dict"]["w"][0] == 2.0
    remove_checkpoint(url)
    assert storage.listing(memory_prefix) == {}
    with pytest.raises(UsageError, match="checkpoint not found: memory://"):
        load_checkpoint(url)


def test_checkpoints_at_a_url_are_found_newest_written_first_and_equal_seconds_break_by_kind(memory_prefix, monkeypatch):
    for path in (checkpoints.epoch_path(memory_prefix, 1), checkpoints.step_path(memory_prefix, 20),
                 checkpoints.step_path(memory_prefix, 25), checkpoints.stop_path(memory_prefix)):
        save_checkpoint(_ckpt(0.0), path)
    storage.write_bytes(f"{memory_prefix}-notes.txt", b"the user's")  # a name of theirs: never listed as ours
    assert checkpoints.existing_epochs(memory_prefix) == [1]
    assert checkpoints.saved_checkpoints(memory_prefix)[0] == checkpoints.stop_path(memory_prefix)
    # S3 dates objects in whole seconds: within one, epoch > stop > step, then the higher number
    same = {p: 10**18 for p in storage.listing(memory_prefix)}
    monkeypatch.setattr(storage, "listing", lambda prefix: same)
    assert [p.rpartition("/")[2] for p in checkpoints.saved_checkpoints(memory_prefix)] == [
        "x-0001.ckpt", "x-stop.ckpt", "x-step-00000025.ckpt", "x-step-00000020.ckpt"]
    assert checkpoints.step_checkpoints(memory_prefix)[-1].endswith("x-step-00000025.ckpt")


def test_a_url_prefix_is_ours_only_with_its_marker(memory_prefix, monkeypatch, tmp_path):
    from lit_imgcls.remote_prefix import holding_remote, lock_path

    monkeypatch.setenv("LIT_IMGCLS_CACHE", str(tmp_path / "cache"))
    marker = checkpoints.marker_path(memory_prefix)
    with holding_remote(memory_prefix):  # an empty prefix: claimed with a marker, which goes again when unused
        assert json.loads(storage.read_bytes(marker))["written_by"] == "lit-imgcls"
        assert os.path.exists(lock_path(memory_prefix))
    assert not storage.exists(marker) and not os.path.exists(lock_path(memory_prefix))
    with holding_remote(memory_prefix):
        save_checkpoint(_ckpt(0.0), checkpoints.epoch_path(memory_prefix, 1))
    assert json.loads(storage.read_bytes(marker))["running"] is False
    # objects of our names that no marker claims: refused, whatever the run, and nothing is touched
    storage.remove(marker)
    with pytest.raises(UsageError, match=r"holds 2 object\(s\) named as lit-imgcls names its checkpoints "
                                         r"\(x-0001.ckpt, x-0001.ckpt.sha256\) but no .x.lit-imgcls.json marker"), \
            holding_remote(memory_prefix):
        pass
    assert not storage.exists(marker) and storage.exists(checkpoints.epoch_path(memory_prefix, 1))
    storage.write_bytes(marker, b'{"written_by": "someone else"}')
    with pytest.raises(UsageError, match="is not a marker lit-imgcls wrote"), holding_remote(memory_prefix):
        pass


def test_s3_retries_are_botocores_own_and_the_users_settings_win(monkeypatch):
    import fsspec.config

    def configured(**env) -> dict:
        for key in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(fsspec.config, "conf", {})
        monkeypatch.setattr(storage, "_configured", False)
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        storage.configure()
        return fsspec.config.conf["s3"]

    conf = configured()
    assert conf["config_kwargs"]["retries"] == storage.S3_RETRIES
    assert conf["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    assert "config_kwargs" not in configured(AWS_MAX_ATTEMPTS="3")  # botocore reads the user's own setting


def test_url_prefixes_that_cannot_hold_checkpoints_are_one_line(tmp_path):
    base = quick_args(tmp_path, num_examples=100)
    i = base.index("--model-prefix")
    for prefix, said in [("https://host/model/x", "checkpoints cannot be kept at a https:// URL"),
                         ("nosuchfs://b/x", "fsspec knows no filesystem nosuchfs://"),
                         ("s3://bucket", "must end in a name below a bucket or folder")]:
        res = run_cli("fit", *base[:i], "--model-prefix", prefix, *base[i + 2:], cwd=tmp_path)
        assert res.returncode == 2 and said in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "https:").exists()


def test_a_file_url_prefix_is_the_local_path(tmp_path):
    from lit_imgcls.recipe import Recipe, expand_paths

    recipe = expand_paths(Recipe(model_prefix=f"file://{tmp_path}/model/x"))
    assert recipe.model_prefix == f"{tmp_path}/model/x"


# ---- against SeaweedFS -----------------------------------------------------------------------------------------


def _get(fs, url: str, dest: Path) -> dict:
    """A checkpoint object, read through the test's own client and loaded as lit-imgcls loads a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fs.get(url.split("://", 1)[1], str(dest))
    fs.get(url.split("://", 1)[1] + ".sha256", str(dest) + ".sha256")
    return load_checkpoint(dest)


@pytest.mark.slow
def test_fit_writes_checkpoints_recipe_and_marker_to_s3_and_validate_reads_them(s3, tmp_path):
    fs, env = s3
    fs.mkdir("models") if not fs.exists("models") else None
    url = "s3://models/first/mnist"
    args = quick_args(tmp_path, num_examples=300, num_epochs=2, save_every_steps=2, model_prefix=url)
    res = run_cli("fit", *args, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"checkpoint {url}-0002.ckpt" in res.stdout
    names = sorted(p.rpartition("/")[2] for p in fs.ls("models/first"))
    assert names == [".mnist.lit-imgcls.json", "mnist-0001.ckpt", "mnist-0001.ckpt.sha256", "mnist-0002.ckpt",
                     "mnist-0002.ckpt.sha256", "mnist-recipe.yaml", "mnist-step-00000002.ckpt",
                     "mnist-step-00000002.ckpt.sha256", "mnist-step-00000006.ckpt", "mnist-step-00000006.ckpt.sha256"]
    assert "model_prefix: s3://models/first/mnist" in fs.cat("models/first/mnist-recipe.yaml").decode()
    assert not (tmp_path / "s3:").exists()  # nothing local named after the URL
    # the same command again: the prefix holds a run, as a local one would
    again = run_cli("fit", *args, cwd=tmp_path, env=env)
    assert again.returncode == 2 and f"model_prefix {url} already holds checkpoints" in again.stderr
    # validate with --load-epoch, and a missing epoch named with the ones there
    val = run_cli("validate", *quick_args(tmp_path, num_examples=300, model_prefix=url, load_epoch=1), cwd=tmp_path,
                  env=env)
    assert val.returncode == 0 and "epoch 1: val/acc" in val.stdout, val.stderr[-2000:]
    val = run_cli("validate", *quick_args(tmp_path, num_examples=300, model_prefix=url, load_epoch=7), cwd=tmp_path,
                  env=env)
    assert val.returncode == 2 and f"no checkpoint for epoch 7 at {url}-0007.ckpt; epochs saved under this prefix: 1, 2" \
        in val.stderr
    # a second run on this machine while one holds the prefix: refused at once (the lock is local, keyed by the URL)
    from lit_imgcls.locks import ProcessLock
    from lit_imgcls.remote_prefix import lock_path

    Path(lock_path(url)).parent.mkdir(parents=True, exist_ok=True)
    with ProcessLock(lock_path(url)) as lock:
        assert lock.acquire()
        busy = run_cli("fit", *args, "--resume", "auto", cwd=tmp_path, env=env)
    assert busy.returncode == 2 and f"(process {os.getpid()}) on this machine is writing checkpoints under " \
        f"model_prefix {url}" in busy.stderr


def test_objects_of_our_names_that_lit_imgcls_did_not_write_are_refused_and_kept(s3, tmp_path):
    fs, env = s3
    fs.pipe("packs/theirs/mnist-0001.ckpt", b"someone's own file")
    args = quick_args(tmp_path, num_examples=300, model_prefix="s3://packs/theirs/mnist")
    for extra in ([], ["--overwrite"], ["--resume", "auto"]):
        res = run_cli("fit", *args, *extra, cwd=tmp_path, env=env)
        assert res.returncode == 2 and "lit-imgcls did not write them" in res.stderr, (extra, res.stderr[-2000:])
    assert fs.cat("packs/theirs/mnist-0001.ckpt") == b"someone's own file"
    assert sorted(fs.ls("packs/theirs")) == ["packs/theirs/mnist-0001.ckpt"]


@pytest.mark.slow
def test_kill9_mid_run_on_s3_then_resume_auto_score_and_predict_from_s3(s3, tmp_path, mnist_arrays):
    """Issue 15's done-when: fit to an S3 prefix, kill -9 mid-run, --resume auto from S3, then score and predict
    with the checkpoint's URL; the weights are those of an uninterrupted run."""
    fs, env = s3
    local = run_cli("fit", *quick_args(tmp_path / "local", **COMMON), cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    uninterrupted = load_checkpoint(tmp_path / "local/model/mnist-0003.ckpt")

    url = "s3://packs/killed/mnist"
    args = quick_args(tmp_path / "s3", **COMMON, save_every_steps=5, resume="auto", model_prefix=url)
    seed = int.from_bytes(os.urandom(4), "little")
    kill_at = random.Random(seed).randrange(7, 38)
    proc = start_fit(args, tmp_path, env)
    try:
        wait_for_step(proc, tmp_path / "s3/runs", kill_at, timeout=180)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    res = run_cli("fit", *args, cwd=tmp_path, env=env)
    why = f"kill -9 at step {kill_at} (seed {seed})"
    assert res.returncode == 0, f"{why}: {res.stderr[-2000:]}"
    assert f"resuming from {url}-" in res.stderr + res.stdout, why
    assert len([p for p in fs.ls("packs/killed") if p.endswith(".ckpt") and "-step-" in p]) <= 2, why
    assert_same_training(uninterrupted, _get(fs, f"{url}-0003.ckpt", tmp_path / "got/mnist-0003.ckpt"), why)

    score = run_cli("score", "--checkpoint", f"{url}-0003.ckpt", "--num-examples", "1000", cwd=tmp_path, env=env)
    assert score.returncode == 0, score.stderr[-2000:]
    assert "mnist-0003-confusion.png" in score.stdout and (tmp_path / "mnist-0003-confusion.png").is_file()
    from PIL import Image

    Image.fromarray(mnist_arrays["test_images"][0]).save(tmp_path / "digit.png")
    pred = run_cli("predict", "--checkpoint", f"{url}-0003.ckpt", "--format", "json", "digit.png", cwd=tmp_path,
                   env=env)
    assert pred.returncode == 0, pred.stderr[-2000:]
    same = run_cli("predict", "--checkpoint", str(tmp_path / "local/model/mnist-0003.ckpt"), "--format", "json",
                   "digit.png", cwd=tmp_path)
    assert json.loads(pred.stdout) == json.loads(same.stdout) and json.loads(pred.stdout)[0]["predictions"]


# ---- a server that stops and starts again under a run --------------------------------------------------------------


@pytest.fixture(scope="module")
def restartable(tmp_path_factory):
    """A SeaweedFS server of its own (the tests stop and start it), holding a tiny photo pack in s3://packs/p."""
    from lit_imgcls.data.photos import make_photo_corpus

    root = tmp_path_factory.mktemp("restartable")
    make_photo_corpus(root / "photos", train_per_class=20, val_per_class=4, classes=3, seed=2)
    for split, ratio, size in (("train", "1", "6"), ("val", "0", "8")):
        res = run_cli("dataset", "pack", str(root / "photos" / split), str(root / "pack" / split), "--format", "wds",
                      "--resize", "32", "--shard-size", size, "--train-ratio", ratio)
        assert res.returncode == 0, res.stderr
    server = SeaweedS3(root / "server")
    server.start()
    fs = server.fs()
    for split in ("train", "val"):
        fs.put(str(root / "pack" / split), f"packs/p/{split}", recursive=True)
    yield server
    server.stop()


def _photo_args(tmp: Path, prefix: str) -> list[str]:
    # 60 images in shards of 6, batches of 6: 10 steps an epoch, each shard read from S3 as the epoch reaches it.
    return quick_args(tmp, dataset="wds", network="lenet", image_shape="3,32,32", batch_size=6, data_nthreads=1,
                      num_epochs=3, lr=0.05, seed=3, disp_batches=1, data_train="s3://packs/p/train",
                      data_val="s3://packs/p/val", model_prefix=prefix, save_every_steps=2, resume="auto")


@pytest.fixture(scope="module")
def photo_uninterrupted(restartable, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("photo-uninterrupted")
    res = run_cli("fit", *_photo_args(tmp, str(tmp / "model/m")), cwd=tmp, env=restartable.env)
    assert res.returncode == 0, res.stderr[-3000:]
    return load_checkpoint(tmp / "model/m-0003.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("retries", ["default", "none"])
def test_s3_server_restarting_mid_epoch_then_resume_auto_ends_as_uninterrupted(restartable, photo_uninterrupted,
                                                                                tmp_path, retries):
    """The server stops mid-epoch (SIGTERM) and starts again 3 s later on the same data and port. With the
    default retries the run rides it out (or, should the backoff run out first, stops with one line); with
    retries off (AWS_MAX_ATTEMPTS=1) it stops with one line naming the shard or checkpoint. Either way --resume
    auto then ends with the weights of an uninterrupted run, and no object is half-written."""
    server = restartable
    url = f"s3://packs/restart-{retries}/m"
    env = {**server.env, **({"AWS_MAX_ATTEMPTS": "1"} if retries == "none" else {})}
    args = _photo_args(tmp_path, url)
    proc = start_fit(args, tmp_path, env)
    try:
        wait_for_step(proc, tmp_path / "runs", 13, timeout=180)  # in the second epoch
        server.stop()
        time.sleep(3)
        server.start()
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err[-3000:]
    if retries == "none":
        assert proc.returncode == 1, err[-3000:]
    if proc.returncode != 0:
        assert proc.returncode == 1, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("lit-imgcls: error: cannot ") and "s3://packs/" in last, err[-3000:]
        assert "rerun the same command with --resume auto" in last, last
    res = run_cli("fit", *args, cwd=tmp_path, env=server.env)
    assert res.returncode == 0, res.stderr[-3000:]
    fs = server.fs()
    for obj in fs.ls(f"packs/restart-{retries}"):
        if obj.endswith(".ckpt"):  # every checkpoint whole: it loads and matches its checksum
            _get(fs, f"s3://{obj}", tmp_path / "all" / obj.rpartition("/")[2])
    assert_same_training(photo_uninterrupted, _get(fs, f"{url}-0003.ckpt", tmp_path / "got/m-0003.ckpt"), retries,
                         steps=30)
