"""Fault injection on packed data, with real processes and files: kill -9 during `dataset pack`, truncated and
bit-flipped shards, damaged manifests; what `dataset verify`, `inspect` and `fit` make of them."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import quick_args, run_cli
from lit_imgcls.data.manifest import LOCK, MANIFEST, WORK_PREFIX, read_manifest
from lit_imgcls.data.photos import make_photo_corpus
from lit_imgcls.errors import UsageError

SEED = 20240611  # of the kill moments: the same run of kills every time


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """600 photos (2 classes): packing them with --format both keeps a pack busy for a few seconds."""
    out = tmp_path_factory.mktemp("corpus")
    make_photo_corpus(out, train_per_class=300, val_per_class=0, classes=2, seed=5)
    return out / "train"


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory) -> Path:
    """300 JPEG samples of 28 x 28 px in 3 shards and a .beton: fast to verify and to train a LeNet on."""
    from lit_imgcls.data.encode import EncodeOptions
    from lit_imgcls.data.pack import PackOptions, pack_dataset

    src = tmp_path_factory.mktemp("small-src")
    make_photo_corpus(src, train_per_class=150, val_per_class=0, classes=2, seed=6)
    out = tmp_path_factory.mktemp("small") / "pack"
    pack_dataset(str(src / "train"), str(out), PackOptions(format="both", shard_size="100"),
                 EncodeOptions(resize=28, center_crop=True))
    return out


def copy_of(pack: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pack"
    shutil.copytree(pack, out)
    return out


def one_error_line(stderr: str) -> str:
    """The CLI's single error line; fails on a traceback or on more than one error line."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("lit-imgcls: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------------------------------------ kill -9


def pack_command(src: Path, out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "lit_imgcls", "dataset", "pack", str(src), str(out), "--format", "both",
            "--shard-size", "20", "--num-workers", "2", "--seed", str(seed)]


def session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of a session: a killed pack's own and its workers."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(f"{d.name} {fields[0]}")
    return found


def kill_while_packing(cmd: list[str], out: Path, when: tuple[str, float]) -> None:
    """Starts the pack and SIGKILLs it at a moment of its work: ``("shards", k)`` once its k-th tar shard is
    written, ``("ffcv", seconds)`` that long after it starts writing .beton files. Then waits for its workers
    to go: a killed pack must not leave processes behind."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    work = out / f"{WORK_PREFIX}{proc.pid}"
    phase, amount = when
    try:
        deadline = time.monotonic() + 120
        while not (len(list((work / "wds").glob("*.tar"))) >= amount if phase == "shards" else (work / "ffcv").exists()):
            assert proc.poll() is None, f"the pack ended before {when}"
            assert time.monotonic() < deadline, f"the pack never reached {when}"
            time.sleep(0.005)
        if phase == "ffcv":
            time.sleep(amount)
        assert proc.poll() is None, f"the pack ended before {when}: grow the corpus"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not session_processes(proc.pid), f"workers outlived the killed pack: {session_processes(proc.pid)}"
    finally:
        if session_processes(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def verified_manifest(out: Path, deep: bool = False) -> str | None:
    """The manifest text if `dataset verify` accepts the folder, None if it says there is no finished pack."""
    res = run_cli("dataset", "verify", str(out), *(["--deep"] if deep else []))
    if res.returncode == 0:
        return (out / MANIFEST).read_text()
    assert res.returncode == 2 and "not a finished pack" in one_error_line(res.stderr), res.stderr
    return None


@pytest.mark.slow
def test_kill9_at_random_moments_never_leaves_a_half_pack(corpus, tmp_path):
    """A pack killed while it works (encoding, or writing FFCV files) leaves nothing that verifies, or the
    previous pack exactly as it was; the rerun after a kill succeeds and cleans up."""
    rng = random.Random(SEED)
    moments = [("shards", rng.randint(1, 29)), ("ffcv", rng.uniform(0.0, 0.3)),  # 600 photos: 30 shards of 20
               rng.choice([("shards", rng.randint(1, 29)), ("ffcv", rng.uniform(0.0, 0.3))])]
    out = tmp_path / "pack"
    # No pack yet: a killed first pack leaves nothing valid, and so does a killed rerun, which starts over the
    # first one's leftovers (they do not pile up: each run deletes what earlier ones left).
    for when in moments[:2]:
        kill_while_packing(pack_command(corpus, out, 0), out, when)
        assert verified_manifest(out) is None, when
        assert len(list(out.glob(f"{WORK_PREFIX}*"))) == 1
    done = subprocess.run(pack_command(corpus, out, 0), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    old = verified_manifest(out)
    assert old is not None and not list(out.glob(f"{WORK_PREFIX}*"))
    # Over a finished pack: a killed re-pack (another seed, so other files) leaves the old pack as it was.
    kill_while_packing(pack_command(corpus, out, 1), out, moments[2])
    assert verified_manifest(out, deep=True) == old, moments[2]
    assert len(list(out.glob(f"{WORK_PREFIX}*"))) == 1


SWAP_DRIVER = r"""
import json, os, signal, sys
from pathlib import Path
from lit_imgcls.commands.dataset_verify import verify
from lit_imgcls.data import manifest as M
from lit_imgcls.data.encode import EncodeOptions
from lit_imgcls.data.pack import PackOptions, pack_dataset
from lit_imgcls.errors import UsageError

src, out = sys.argv[1], Path(sys.argv[2])
def pack(seed):
    pack_dataset(src, str(out), PackOptions(format="both", seed=seed, shard_size="8"), EncodeOptions(resize=16, center_crop=True))
pack(0)
old = (out / "manifest.json").read_text()
for step in range(20):
    pid = os.fork()
    if pid == 0:  # a re-pack that SIGKILLs itself just before rename number `step` of its swap
        moves, real = [0], M._move
        def move(a, b):
            if moves[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            moves[0] += 1
            real(a, b)
        M._move = move
        sys.stdout = sys.stderr = open(os.devnull, "w")
        pack(1)
        os._exit(0)
    killed = os.WIFSIGNALED(os.waitpid(pid, 0)[1])
    try:  # what the next reader finds (it puts back an old pack the swap had moved aside)
        verify(str(out)); error = None
    except UsageError as exc:
        error = str(exc)
    text = (out / "manifest.json").read_text() if (out / "manifest.json").exists() else None
    print("STEP " + json.dumps({"step": step, "killed": killed, "error": error, "partials": len(list(out.glob(".partial-*"))),
                                "manifest": "old" if text == old else ("new" if text else None)}), flush=True)
    if not killed:
        break
"""


@pytest.mark.slow
def test_kill9_at_each_step_of_the_swap_keeps_one_complete_pack(tmp_path):
    """Killed before each rename that swaps a new pack for an old one, the next reader finds the old pack whole;
    unkilled, the new one. (Random kills rarely land in the swap, which takes milliseconds.)"""
    make_photo_corpus(tmp_path / "src", train_per_class=10, val_per_class=0, classes=2, seed=7)
    res = subprocess.run([sys.executable, "-c", SWAP_DRIVER, str(tmp_path / "src" / "train"), str(tmp_path / "pack")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    steps = [json.loads(line[5:]) for line in res.stdout.splitlines() if line.startswith("STEP ")]
    # old manifest out, old wds and ffcv out, new wds and ffcv in, new manifest in: 6 renames
    assert [s["killed"] for s in steps] == [True] * 6 + [False], steps
    for s in steps[:-1]:
        assert s["error"] is None and s["manifest"] == "old" and s["partials"] <= 1, s
    assert steps[-1]["error"] is None and steps[-1]["manifest"] == "new" and steps[-1]["partials"] == 0


HOLD_LOCK = """
import sys
from lit_imgcls.data.manifest import PackLock
assert PackLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_a_live_pack_is_not_disturbed_by_a_second_pack_or_a_reader(small_pack, tmp_path):
    """While another process holds the folder, a second pack into it is refused, and a reader that finds the old
    pack moved aside mid-swap says so instead of putting it back under the live pack; once that process is gone,
    the reader puts it back."""
    from PIL import Image

    from lit_imgcls.data.encode import EncodeOptions
    from lit_imgcls.data.pack import PackOptions, pack_dataset

    out = copy_of(small_pack, tmp_path)
    for name in ("a", "b"):
        (tmp_path / "src" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "src" / name / "x.png")
    (out / f"{WORK_PREFIX}1" / "old").mkdir(parents=True)
    (out / MANIFEST).rename(out / f"{WORK_PREFIX}1" / "old" / MANIFEST)
    # A POSIX lock never blocks its own process: the live pack has to be another one.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=f"process {holder.pid}\\) is writing into"):
            pack_dataset(str(tmp_path / "src"), str(out), PackOptions(), EncodeOptions())
        with pytest.raises(UsageError, match="being re-packed right now"):
            read_manifest(out)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert read_manifest(out)["splits"]["train"]["count"] == 300
    assert not list(out.glob(f"{WORK_PREFIX}*")) and not (out / LOCK).exists()


# ----------------------------------------------------------------------------------- damaged shards


def flip_inside_an_image(shard: Path) -> None:
    """Flips one byte in the middle of an image's bytes, choosing one whose image still decodes afterwards, so
    that only the checksum can tell."""
    from lit_imgcls.data.image import decode

    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    mid = member.offset_data + member.size // 2
    for at in range(mid, member.offset_data + member.size):
        data[at] ^= 0x10
        try:
            decode(bytes(data[member.offset_data : member.offset_data + member.size]))
            break
        except ValueError:
            data[at] ^= 0x10
    else:
        pytest.fail("no byte of the image can flip and still decode")
    shard.write_bytes(bytes(data))


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("rel, damage, says", [
    ("wds/train-000001.tar", cut_in_half, "bytes, manifest says"),
    ("wds/train-000001.tar", flip_inside_an_image, "sha256"),
    ("ffcv/train.beton", cut_in_half, "bytes, manifest says"),
    ("ffcv/train.beton", flip_middle_byte, "sha256"),
], ids=["tar-truncated", "tar-flipped-image-byte", "beton-truncated", "beton-flipped-byte"])
def test_verify_names_a_damaged_shard(small_pack, tmp_path, rel, damage, says):
    out = copy_of(small_pack, tmp_path)
    damage(out / rel)
    res = run_cli("dataset", "verify", str(out))
    assert res.returncode == 2
    line = one_error_line(res.stderr)
    assert f"{rel}:" in line and says in line and "1 of 4 files" in line, line


def fit(pack: Path, tmp_path: Path):
    args = quick_args(tmp_path, dataset="wds", data_train=pack, batch_size=32, data_nthreads=1,
                      gpus="", data_dir="")
    return run_cli("fit", *args, cwd=tmp_path, timeout=300)


def test_fit_on_a_truncated_shard_stops_with_one_line_naming_it(small_pack, tmp_path):
    """Caught by the size check before training starts: exit 2, the shard named, no traceback, no hang."""
    out = copy_of(small_pack, tmp_path)
    cut_in_half(out / "wds/train-000001.tar")
    res = fit(out, tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    line = one_error_line(res.stderr)
    assert "wds/train-000001.tar" in line and "truncated" in line, line


def test_fit_on_a_shard_with_a_damaged_tar_header_stops_naming_it(small_pack, tmp_path):
    """Same size, so the size check passes; a member header in the middle of every shard overwritten."""
    out = copy_of(small_pack, tmp_path)
    for shard in sorted((out / "wds").glob("*.tar")):
        data = bytearray(shard.read_bytes())
        with tarfile.open(shard) as tar:
            member = tar.getmembers()[len(tar.getmembers()) // 2]
        data[member.offset : member.offset + 512] = b"\x07" * 512
        shard.write_bytes(bytes(data))
    res = fit(out, tmp_path)
    assert res.returncode in (1, 2), res.stdout[-2000:]
    assert "train-00000" in one_error_line(res.stderr)


# ----------------------------------------------------------------------------------- damaged manifests

def _garbage(text: str) -> str:
    return text[: len(text) // 2]


def _set(path: str, value):
    def edit(text: str) -> str:
        m = json.loads(text)
        *parents, last = path.split(".")
        node = m
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
        return json.dumps(m)
    return edit


MANIFEST_DAMAGE = {
    "truncated": (_garbage, "not valid JSON"),
    "binary": (lambda _: "\x00\xff\x13garbage\x89PNG", "not valid JSON"),
    "empty": (lambda _: "", "not valid JSON"),
    "a list": (lambda _: "[1, 2, 3]", "a JSON list, not an object"),
    "other version": (_set("format_version", 2), "format_version is 2"),
    "splits a list": (_set("splits", []), "splits is not an object"),
    "no sha256": (_set("splits.train.wds.0.sha256", None), "splits.train.wds[0].sha256"),
    "path escape": (_set("splits.train.wds.0.file", "../../../etc/passwd"), "is not a file name of the pack"),
    "bad class count": (_set("splits.train.per_class", [1]), "per_class is not one count per class"),
}


@pytest.mark.parametrize("kind", sorted(MANIFEST_DAMAGE))
def test_a_damaged_manifest_is_one_clear_error(small_pack, tmp_path, kind):
    damage, says = MANIFEST_DAMAGE[kind]
    out = tmp_path / "pack"
    out.mkdir()
    (out / MANIFEST).write_bytes(damage((small_pack / MANIFEST).read_text()).encode("latin-1"))
    with pytest.raises(UsageError, match="manifest.json") as err:
        read_manifest(out)
    assert says in str(err.value) and "\n" not in str(err.value) and "dataset pack" in str(err.value)


@pytest.mark.parametrize("command", ["verify", "inspect", "fit"])
def test_commands_on_a_cut_short_manifest_exit_2_with_one_line(small_pack, tmp_path, command):
    out = copy_of(small_pack, tmp_path)
    (out / MANIFEST).write_text(_garbage((small_pack / MANIFEST).read_text()))
    res = fit(out, tmp_path) if command == "fit" else run_cli("dataset", command, str(out))
    assert res.returncode == 2, res.stderr[-3000:]
    assert "manifest.json is not valid JSON" in one_error_line(res.stderr)


def test_inspect_names_a_truncated_shard(small_pack, tmp_path):
    out = copy_of(small_pack, tmp_path)
    cut_in_half(out / "wds/train-000002.tar")
    res = run_cli("dataset", "inspect", str(out))
    assert res.returncode == 2
    line = one_error_line(res.stderr)  # the shard is hashed as inspect reads it: its end is found missing
    assert "wds/train-000002.tar ends after" in line and "truncated" in line, line
