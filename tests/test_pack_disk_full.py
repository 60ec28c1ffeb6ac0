"""A disk that fills during a re-pack (or a re-list): one line naming the disk error, exit 1, the previous pack or
lists intact, no temporary file and no lock file left. Each run is a real `python -m lit_imgcls` process on a small
tmpfs of its own (conftest.cli_on_small_disk)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from lit_imgcls.cli import main

from conftest import cli_on_small_disk, needs_mounts

pytestmark = needs_mounts


def noise_images(folder: Path, per_class: int, seed: int) -> Path:
    """PNGs of random pixels (they do not compress), 2 classes."""
    rng = np.random.default_rng(seed)
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_disk_that_fills_during_a_re_pack_is_one_line_and_the_old_pack_stays(tmp_path):
    seed = tmp_path / "seed"
    small, big = noise_images(tmp_path / "small", 4, 0), noise_images(tmp_path / "big", 60, 1)
    assert main(["dataset", "pack", str(small), str(seed), "--pass-through", "--shard-size", "4"]) == 0
    before = files_of(seed)
    # About 40 KB of pack on a 160 KB disk; the new pack needs some 400 KB.
    rc, err = cli_on_small_disk(tmp_path, "size=160k", "dataset", "pack", str(big), str(tmp_path / "disk"),
                                "--pass-through", "--shard-size", "8", seed=seed)
    lines = [line for line in err.splitlines() if not line.startswith("packing ")]  # progress lines
    assert rc == 1 and lines == [
        f"lit-imgcls: error: cannot write the pack into {tmp_path}/disk: No space left on device; the previous pack "
        "there is intact, and no temporary file of this run is left; free space (or fix the folder's permissions), "
        "then rerun"], err
    assert files_of(tmp_path / "left") == before  # no .partial-*, no .tmp, no .pack.lock; the old pack byte for byte


def test_a_disk_that_fills_during_a_first_pack_leaves_nothing(tmp_path):
    big = noise_images(tmp_path / "big", 60, 1)
    rc, err = cli_on_small_disk(tmp_path, "size=96k", "dataset", "pack", str(big), str(tmp_path / "disk/out"),
                                "--pass-through", "--shard-size", "8")
    assert rc == 1 and err.splitlines()[-1].startswith(
        f"lit-imgcls: error: cannot write the pack into {tmp_path}/disk/out: No space left on device; nothing of it "
        "was left there"), err
    assert list((tmp_path / "left").iterdir()) == []  # not even the folder it made


def test_a_disk_that_fills_while_lists_are_rewritten_keeps_the_old_lists_ours(tmp_path):
    seed = tmp_path / "seed"
    small, big = noise_images(tmp_path / "small", 4, 0), noise_images(tmp_path / "big", 400, 1)
    assert main(["dataset", "pack", str(small), str(seed), "--list", "--train-ratio", "0.5"]) == 0
    before = files_of(seed)
    # Fill the disk but for two pages: the lock file and the record (a page each) fit, the 400-line train.lst not.
    (seed / "filler").write_bytes(b"\0" * (4096 * (32 - 2 - len(before))))
    rc, err = cli_on_small_disk(tmp_path, "size=128k", "dataset", "pack", str(big), str(tmp_path / "disk"), "--list",
                                "--train-ratio", "0.5", seed=seed)
    assert rc == 1 and err.splitlines() == [
        f"lit-imgcls: error: cannot write the lists into {tmp_path}/disk: No space left on device; the lists there "
        "before are intact, and no temporary file of this run is left; free space (or fix the folder's "
        "permissions), then rerun"], err
    left = tmp_path / "left"
    (left / "filler").unlink()
    # It failed after its record named both the old and the new content of each list, writing the lists.
    assert len(json.loads((left / ".lit-imgcls-lists").read_text())["files"]["train.lst"]) == 2
    after = files_of(left)
    assert {k: v for k, v in after.items() if k != ".lit-imgcls-lists"} == {
        k: v for k, v in before.items() if k != ".lit-imgcls-lists"}
    # The lists are still ours: on a disk with room, the same command replaces them.
    roomy = tmp_path / "roomy"
    shutil.copytree(left, roomy)
    assert main(["dataset", "pack", str(big), str(roomy), "--list", "--train-ratio", "0.5"]) == 0
    assert len((roomy / "train.lst").read_text().splitlines()) == 400
