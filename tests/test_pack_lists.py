"""Routes of `dataset` that end in nothing are errors (issue 13, item 4), and list paths follow im2rec.

im2rec's rule: the paths in a .lst are relative to the root folder named on the command line, when the list is
written (`--list`) and when it is read. Here that is `--root`, and without it the list's own folder, on both
sides, so list-then-pack works from any current folder. A pack with no usable sample, a split the ratios ask for
that ends empty, an empty pack read back: each is one line and exit 2, and a failed pack leaves the output folder
as it found it (no folder it made, no `.pack.lock` it made).

Each test runs the CLI in this process (``lit_imgcls.cli.main``) from a current folder other than the data's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_imgcls.data.manifest import LOCK, MANIFEST


def _tree(root: Path, per_class: int = 4, classes=("cat", "dog")) -> Path:
    rng = np.random.default_rng(3)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``lit-imgcls ARGS`` through the CLI's entry point, in this process: exit code, stdout, stderr."""
    from lit_imgcls.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(stderr: str) -> str:
    """The one error line (progress lines aside); no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("lit-imgcls: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def rows(lst: Path) -> list[list[str]]:
    return [line.split("\t") for line in lst.read_text().splitlines()]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """data/ (a class tree) and two current folders, here/ and there/; the test starts in here/."""
    _tree(tmp_path / "data" / "photos")
    for d in ("here", "there"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "here")
    return tmp_path


def test_list_then_pack_without_root_works_from_any_folder(place, capsys, monkeypatch):
    code, out, err = cli(capsys, "dataset", "pack", "../data/photos", "../lists", "--list", "--train-ratio", "0.5")
    assert code == 0, err
    assert out.strip() == "wrote ../lists/classes.txt, ../lists/train.lst, ../lists/val.lst"
    # relative to the list's own folder: the same wherever the list was written from
    assert {r[2] for r in rows(place / "lists/train.lst")} <= {f"../data/photos/{c}/{i}.png" for c in ("cat", "dog") for i in range(4)}
    monkeypatch.chdir(place / "there")
    for split in ("train", "val"):
        code, out, err = cli(capsys, "dataset", "pack", f"{place}/lists/{split}.lst", f"../pack-{split}")
        assert code == 0, err
        m = json.loads((place / f"pack-{split}" / MANIFEST).read_text())
        assert m["splits"]["train"]["count"] == 4 and m["skipped"] == [] and m["class_names"] == ["cat", "dog"]


def test_list_and_pack_with_root_follow_im2rec(place, capsys, monkeypatch):
    code, _, err = cli(capsys, "dataset", "pack", "../data/photos", "../lists", "--list", "--root", "../data/photos")
    assert code == 0, err
    # im2rec's layout: paths relative to the root named on the command line
    assert sorted(r[2] for r in rows(place / "lists/train.lst")) == [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(4)]
    monkeypatch.chdir(place / "there")
    code, out, err = cli(capsys, "dataset", "pack", "../lists/train.lst", "../pack", "--root", str(place / "data/photos"))
    assert code == 0, err
    assert out.startswith("packed train 8 samples of 2 classes")

    # The same list read without --root looks beside the list, finds nothing: one line that says where it looked
    # and which flag moves it; no folder is made.
    code, _, err = cli(capsys, "dataset", "pack", "../lists/train.lst", "../nothing")
    assert code == 2
    line = error_line(err)
    assert "nothing to pack" in line and "relative to ../lists" in line and "--root" in line, line
    assert not (place / "nothing").exists()


def test_a_list_written_by_im2rec_packs_with_its_root(place, capsys, monkeypatch):
    # im2rec.py writes index, label(s) as floats, and the path relative to its root; no classes.txt
    lst = place / "im2rec" / "mine.lst"
    lst.parent.mkdir()
    lst.write_text("".join(f"{i}\t{float(c)}\t{name}/{i % 4}.png\n"
                           for i, (c, name) in enumerate([(0, "cat"), (1, "dog")] * 4)))
    monkeypatch.chdir(place / "there")
    code, out, err = cli(capsys, "dataset", "pack", str(lst), "pack", "--root", "../data/photos", "--train-ratio", "0.75")
    assert code == 0, err
    m = json.loads((place / "there/pack" / MANIFEST).read_text())
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 6, "val": 2} and m["class_names"] == ["0", "1"]


@pytest.mark.parametrize("what", ["missing", "undecodable"])
def test_a_pack_with_no_usable_sample_is_an_error_that_leaves_nothing(place, capsys, what):
    files = place / "files"
    files.mkdir()
    if what == "undecodable":
        for i in range(4):
            (files / f"{i}.png").write_bytes(b"not an image at all")
    (files / "all.lst").write_text("".join(f"{i}\t{i % 2}\t{i}.png\n" for i in range(4)))
    out = place / "out" / "deeper"  # neither exists yet

    code, stdout, err = cli(capsys, "dataset", "pack", str(files / "all.lst"), str(out))
    assert code == 2 and "packed" not in stdout
    line = error_line(err)
    assert "nothing to pack" in line and ("No such file" in line if what == "missing" else "not an image" in line), line
    assert ("read relative to" in line) == (what == "missing"), line  # where it looked, when that is the question
    assert not (place / "out").exists(), "a failed pack left the folders it made"

    # into an empty folder that was there: it stays empty (no .pack.lock)
    out.mkdir(parents=True)
    assert cli(capsys, "dataset", "pack", str(files / "all.lst"), str(out))[0] == 2
    assert list(out.iterdir()) == []

    # over a good pack: the pack stays as it was (and neither pack leaves its lock file)
    assert cli(capsys, "dataset", "pack", str(place / "data/photos"), str(out))[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    manifest = (out / MANIFEST).read_bytes()
    assert cli(capsys, "dataset", "pack", str(files / "all.lst"), str(out))[0] == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and not (out / LOCK).exists()
    assert (out / MANIFEST).read_bytes() == manifest
    assert cli(capsys, "dataset", "verify", str(out))[0] == 0


def test_a_split_with_no_usable_sample_is_an_error(place, capsys):
    photos = place / "data/photos"
    bad = place / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"{i}.png").write_bytes(b"")
    # in this order (--no-shuffle): 6 good images for train, then the 2 bad ones, which are all of val
    good = [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(3)]
    lst = place / "ordered.lst"
    lst.write_text("".join(f"{n}\t{int(p.startswith('dog'))}\t{photos / p}\n" for n, p in enumerate(good))
                   + "".join(f"{6 + i}\t{i}\t{bad / f'{i}.png'}\n" for i in range(2)))
    code, stdout, err = cli(capsys, "dataset", "pack", str(lst), str(place / "out"), "--no-shuffle", "--train-ratio", "0.75")
    assert code == 2 and "packed" not in stdout
    line = error_line(err)
    assert "val split" in line and "2 images all fail" in line and "0.png" in line, line
    assert not (place / "out").exists()


@pytest.mark.parametrize("ratios, empty", [(("--train-ratio", "0.9"), "val"),  # 3 images: 0.9 rounds to all 3
                                           (("--test-ratio", "0.1", "--train-ratio", "0.5"), "test"),
                                           (("--train-ratio", "0.1"), "train")])
@pytest.mark.parametrize("listing", [False, True])
def test_ratios_that_leave_a_split_empty_are_refused(tmp_path, capsys, monkeypatch, ratios, empty, listing):
    _tree(tmp_path / "three", per_class=1, classes=("a", "b", "c"))
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli(capsys, "dataset", "pack", "three", "out", *ratios, *(["--list"] if listing else []))
    assert code == 2 and not stdout
    line = error_line(err)
    assert f"the {empty} split would be empty" in line and "of the 3 samples" in line, line
    assert not (tmp_path / "out").exists()


def test_ratios_over_one_and_root_without_lists_are_refused_before_any_work(place, capsys):
    code, _, err = cli(capsys, "dataset", "pack", "../data/photos", "../out", "--train-ratio", "0.6", "--test-ratio", "0.5")
    assert code == 2 and "add up to more than 1" in error_line(err)
    code, _, err = cli(capsys, "dataset", "pack", "../data/photos", "../out", "--root", "../data")
    assert code == 2 and "leave --root out" in error_line(err)
    assert not (place / "out").exists()


def test_an_empty_class_tree_lists_nothing_and_says_so(tmp_path, capsys, monkeypatch):
    for c in ("cat", "dog"):
        (tmp_path / "tree" / c / "more").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "tree" / c / "more" / "x.png")
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--list"]):
        code, stdout, err = cli(capsys, "dataset", "pack", "tree", "out", *extra)
        assert code == 2 and not stdout
        assert "hold no images directly" in error_line(err) and "--recursive" in error_line(err)
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_verify_and_inspect_refuse_an_empty_split(place, capsys, command):
    """A pack made before empty splits were refused held `count: 0`: read back, it is one line, not `ok`."""
    out = place / "pack"
    assert cli(capsys, "dataset", "pack", str(place / "data/photos"), str(out), "--train-ratio", "0.5")[0] == 0
    m = json.loads((out / MANIFEST).read_text())
    m["splits"]["val"].update(count=0, per_class=[0, 0], wds=[])
    (out / MANIFEST).write_text(json.dumps(m))
    code, stdout, err = cli(capsys, "dataset", command, str(out))
    assert code == 2 and not stdout.startswith("ok")
    assert "splits.val holds no sample" in error_line(err)

    m["splits"]["val"].update(count=4, per_class=[2, 2], wds=[])  # counts that its shards do not hold
    (out / MANIFEST).write_text(json.dumps(m))
    code, _, err = cli(capsys, "dataset", command, str(out))
    assert code == 2 and "splits.val.wds holds 0 samples, not its count 4" in error_line(err)


def test_photos_refuses_a_corpus_without_training_images(tmp_path, capsys):
    code, stdout, err = cli(capsys, "dataset", "photos", str(tmp_path / "p"), "--train-per-class", "0", "--classes", "2")
    assert code == 2 and not stdout and "train_per_class must be >= 1" in error_line(err)
    assert not (tmp_path / "p").exists()


def test_a_second_pack_waiting_on_a_removed_lock_file_does_not_share_the_folder(tmp_path):
    """A pack removes its lock file when it ends; a pack that opened that file just before holds a lock on a file
    that is gone, and must notice and take the new one instead."""
    from lit_imgcls.data.manifest import PackLock

    first = PackLock(tmp_path)
    assert first.acquire()
    fd = os.open(tmp_path / LOCK, os.O_RDWR)  # what a second pack's open got just before the first one ended
    first.release()
    assert not (tmp_path / LOCK).exists()
    second = PackLock(tmp_path)
    assert second.acquire()
    assert os.fstat(second._fd).st_ino == os.stat(tmp_path / LOCK).st_ino != os.fstat(fd).st_ino
    second.release()
    os.close(fd)
    assert not (tmp_path / LOCK).exists()  # every ending removes it
