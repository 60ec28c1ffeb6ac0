"""Dataset checks of `dataset pack` and `dataset inspect` that must not cry wolf, and class names that survive the
im2rec list round trip (issue 12, items 4 and 6).

Storage order: judged against a random order of the same labels, so shuffled packs of any class balance stay
quiet while sorted and block-sorted ones are named with the evidence. Duplicates: byte-identical stored images
within a split, across splits (leakage) and with different labels (conflicts), recorded in the manifest and
reported by both commands. Splits missing a class of train. Lists: classes.txt beside train.lst/val.lst.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_imgcls.data.pack_report import missing_class_warnings, order_evidence, unshuffled_warning
from lit_imgcls.data.sources import open_source
from lit_imgcls.errors import UsageError

from conftest import run_cli

_seed = iter(range(10**6))


def _png(path: Path) -> Path:
    """A distinct tiny image (8 x 8 random pixels; every call a new seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(next(_seed))
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


def _tree(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        for i in range(n):
            _png(root / name / f"{i:03d}.png")
    return root


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lit-imgcls: warning: ")]


# ------------------------------------------------------------------------------------------------ storage order

BALANCES = {
    "balanced 10 x 10": [10] * 10,
    "69% of 116, 10 classes (r12)": [80] + [4] * 9,
    "69% / 31% over 10 classes, 1000": [690] + [34] * 9 + [4],
    "95% / 5%": [95, 5],
    "95% / 5%, 2000": [1900, 100],
    "99% / 1%": [990, 10],
    "2 classes": [30, 30],
    "1000 classes": [5] * 1000,
    "one common class, 20 singletons": [500] + [1] * 20,
    "tiny 3 + 3 + 3": [3, 3, 3],
    "tiny 2 + 1": [2, 1],
    "one sample": [1],
}


@pytest.mark.parametrize("counts", BALANCES.values(), ids=BALANCES.keys())
def test_shuffled_labels_of_any_balance_are_not_called_unshuffled(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    names = [f"c{i}" for i in range(len(counts))]
    rng = np.random.default_rng(12)
    for _ in range(300):
        order = rng.permutation(labels)
        assert unshuffled_warning(order, names) is None, (counts, order_evidence(order))


SORTED = {
    "balanced 10 x 100": [100] * 10,
    "69% / 31% over 10 classes (r12)": [80] + [4] * 9,
    "95% / 5%, 1000": [950, 50],
    "2 classes": [30, 30],
    "1000 classes x 5": [5] * 1000,
    "3 x 12 (the photo corpus)": [12, 12, 12],
}


@pytest.mark.parametrize("counts", SORTED.values(), ids=SORTED.keys())
def test_sorted_and_block_sorted_labels_are_named_with_the_evidence(counts):
    labels = np.repeat(np.arange(len(counts)), counts)
    names = [f"c{i}" for i in range(len(counts))]
    message = unshuffled_warning(labels, names)
    assert message is not None and "not shuffled" in message
    ev = order_evidence(labels)
    assert f"longest: {max(counts)} samples of class 'c{int(np.argmax(counts))}'" in message
    assert f"changes {ev.changes} times in {len(labels)} samples against about {ev.expected_changes:.0f}" in message
    assert "random order" in message and "chance below 1e-" in message
    if len(labels) >= 1000:  # enough samples to tell half sorted, or sorted in blocks, from a random order
        rng = np.random.default_rng(0)
        shuffled = rng.permutation(labels)
        half = np.concatenate([np.sort(shuffled[: len(labels) // 2]), shuffled[len(labels) // 2:]])
        blocks = np.concatenate([np.sort(b) for b in np.array_split(shuffled, 8)])  # each shard sorted
        for order in (half, blocks):
            assert unshuffled_warning(order, names) is not None, order_evidence(order)


def test_order_check_costs_little_for_a_million_labels():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(1000), 1000))
    start = time.perf_counter()
    assert unshuffled_warning(labels.tolist(), [str(i) for i in range(1000)]) is None
    assert unshuffled_warning(np.sort(labels), [str(i) for i in range(1000)]) is not None
    assert time.perf_counter() - start < 3.0


def test_imbalanced_shuffled_pack_is_quiet_and_a_sorted_one_is_named(tmp_path):
    """The r12 repro, with distinct images: one class is 69% of 116."""
    tree = _tree(tmp_path / "tree", {"background": 80, **{f"c{i}": 4 for i in range(9)}})
    res = run_cli("dataset", "pack", str(tree), str(tmp_path / "shuffled"))
    assert res.returncode == 0, res.stderr
    assert _warnings(res.stderr) == [], res.stderr
    inspected = run_cli("dataset", "inspect", str(tmp_path / "shuffled"))
    assert inspected.returncode == 0 and _warnings(inspected.stderr) == [], inspected.stderr
    assert "duplicates (sha256 of the stored images): none" in inspected.stdout

    res = run_cli("dataset", "pack", str(tree), str(tmp_path / "sorted"), "--no-shuffle")
    assert res.returncode == 0, res.stderr
    inspected = run_cli("dataset", "inspect", str(tmp_path / "sorted"))
    (line,) = _warnings(inspected.stderr)
    assert "train: labels are stored in long runs (longest: 80 samples of class 'background'" in line
    assert "the class changes 9 times in 116 samples against about 60" in line and "not shuffled" in line


# ------------------------------------------------------------------------------------------------- duplicates


def _stored_hashes(pack: Path) -> dict[str, list[tuple[str, int]]]:
    """sha256 -> [(split, label)] of every stored image, read with tarfile alone (an independent count)."""
    found: dict[str, list[tuple[str, int]]] = {}
    for shard in sorted((pack / "wds").glob("*.tar")):
        split = shard.name.split("-")[0]
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        for name, data in members.items():
            key, ext = name.rsplit(".", 1)
            if ext != "cls":
                found.setdefault(hashlib.sha256(data).hexdigest(), []).append((split, int(members[f"{key}.cls"])))
    return found


def test_duplicates_leakage_and_label_conflicts_are_counted_and_reported(tmp_path):
    """The r13 repro: every image twice under two names, shuffled into train and val; plus one conflict."""
    tree = _tree(tmp_path / "tree", {"cat": 10, "dog": 10})
    for cls in ("cat", "dog"):
        for i in range(10):
            shutil.copy(tree / cls / f"{i:03d}.png", tree / cls / f"{i:03d} (copy).png")
    shutil.copy(tree / "cat/000.png", tree / "dog/cat-000.png")  # a cat image labelled dog
    pack = tmp_path / "pack"
    res = run_cli("dataset", "pack", str(tree), str(pack), "--train-ratio", "0.7")
    assert res.returncode == 0, res.stderr
    dup = json.loads((pack / "manifest.json").read_text())["duplicates"]

    groups = {h: s for h, s in _stored_hashes(pack).items() if len(s) > 1}
    within = {split: sum(max(0, [x for x, _ in s].count(split) - 1) for s in groups.values())
              for split in ("train", "val")}
    cross = sum(1 for s in groups.values() if {"train", "val"} <= {x for x, _ in s})
    assert dup["groups"] == len(groups) == 20 and dup["copies"] == 21
    assert dup["within_split"] == {k: v for k, v in within.items() if v}
    assert dup["cross_split"] == {"train/val": cross} and cross > 0
    assert dup["label_conflicts"] == 1
    conflict = next(e for e in dup["examples"] if "label_conflict" in e["kinds"])
    assert {(Path(s["path"]).name, s["label"]) for s in conflict["samples"]} == {
        ("000.png", 0), ("000 (copy).png", 0), ("cat-000.png", 1)}
    assert len(dup["examples"]) <= 20

    lines = _warnings(res.stderr)
    assert len([x for x in lines if x.startswith("lit-imgcls: warning: duplicates: ")]) == 1
    assert len([x for x in lines if x.startswith("lit-imgcls: warning: leakage: ")]) == 1
    assert len([x for x in lines if x.startswith("lit-imgcls: warning: label conflicts: ")]) == 1
    assert f"train and val share {cross}" in res.stderr
    assert "1 byte-identical images are stored with different labels" in res.stderr
    assert "cat-000.png' (dog)" in res.stderr

    # inspect says the same, from the manifest ...
    inspected = run_cli("dataset", "inspect", str(pack))
    assert inspected.returncode == 0
    assert [x for x in _warnings(inspected.stderr) if "sha256" in x or "conflict" in x] == \
        [x for x in lines if "sha256" in x or "conflict" in x]
    assert "20 images stored more than once (21 extra copies)" in inspected.stdout
    # ... and, for a pack made before the manifest recorded them, by hashing the shards
    m = json.loads((pack / "manifest.json").read_text())
    del m["duplicates"]
    (pack / "manifest.json").write_text(json.dumps(m))
    old = run_cli("dataset", "inspect", str(pack))
    assert old.returncode == 0, old.stderr
    assert "20 images stored more than once (21 extra copies)" in old.stdout
    assert f"train and val share {cross}" in old.stderr and "1 byte-identical images" in old.stderr


def test_ffcv_only_old_pack_says_duplicates_cannot_be_checked(tiny_pack, tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(tiny_pack, pack)  # both formats; made FFCV-only here, as `--format ffcv` writes it
    m = json.loads((pack / "manifest.json").read_text())
    assert m["duplicates"]["groups"] == 0
    shutil.rmtree(pack / "wds")
    m["formats"] = ["ffcv"]
    for entry in m["splits"].values():
        del entry["wds"]
    del m["duplicates"]
    (pack / "manifest.json").write_text(json.dumps(m))
    inspected = run_cli("dataset", "inspect", str(pack))
    assert inspected.returncode == 0, inspected.stderr
    assert "duplicates: not checked (an FFCV-only pack" in inspected.stdout


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("small")
    pack = tmp / "pack"
    res = run_cli("dataset", "pack", str(_tree(tmp / "tree", {"a": 2, "b": 2})), str(pack))
    assert res.returncode == 0, res.stderr
    return pack


@pytest.mark.parametrize("bad, field", [
    ([], "duplicates is not an object"),
    ({"groups": -1}, "duplicates.groups is not a count"),
    ({"cross_split": {"train/val": "6"}}, "duplicates.cross_split is not an object of counts"),
    ({"examples": {}}, "duplicates.examples is not a list"),
    ({"examples": [{"size": 2, "kinds": [], "samples": [{"split": "train", "key": "train0", "label": "cat"}]}]},
     "duplicates.examples[0].samples[0].label is not an integer"),
])
def test_malformed_duplicates_in_a_manifest_is_one_line_naming_the_field(small_pack, tmp_path, bad, field):
    pack = tmp_path / "pack"
    shutil.copytree(small_pack, pack)
    m = json.loads((pack / "manifest.json").read_text())
    assert m["duplicates"] == {"groups": 0, "copies": 0, "within_split": {}, "cross_split": {}, "label_conflicts": 0,
                               "examples": []}
    m["duplicates"] = bad
    (pack / "manifest.json").write_text(json.dumps(m))
    res = run_cli("dataset", "inspect", str(pack))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("lit-imgcls: error: ") and field in line, line


# -------------------------------------------------------------------------------------- classes missing in a split


def test_val_and_test_without_a_class_of_train_are_named(tmp_path):
    """--no-shuffle slices source order (class by class), so which split lacks which class is known."""
    tree = _tree(tmp_path / "tree", {"ant": 4, "bee": 4, "cow": 4, "doe": 4})
    pack = tmp_path / "pack"
    res = run_cli("dataset", "pack", str(tree), str(pack), "--no-shuffle", "--train-ratio", "0.5",
                  "--test-ratio", "0.25")
    assert res.returncode == 0, res.stderr
    m = json.loads((pack / "manifest.json").read_text())
    assert [m["splits"][s]["per_class"] for s in ("train", "test", "val")] == [[4, 4, 0, 0], [0, 0, 4, 0], [0, 0, 0, 4]]
    expected = ["lit-imgcls: warning: train has no sample of 2 of the 4 classes ('cow', 'doe')",
                "lit-imgcls: warning: val has no sample of 2 of the 2 classes in train ('ant', 'bee')",
                "lit-imgcls: warning: test has no sample of 2 of the 2 classes in train ('ant', 'bee')"]
    for text in (res.stderr, run_cli("dataset", "inspect", str(pack)).stderr):
        found = [x for x in _warnings(text) if " has no sample of " in x]
        assert len(found) == 3 and all(x.startswith(e + ": ") for x, e in zip(found, expected)), text

    # a shuffled pack with enough of each class: nothing to say
    ok = run_cli("dataset", "pack", str(tree), str(tmp_path / "ok"), "--train-ratio", "0.5")
    assert ok.returncode == 0 and not [x for x in _warnings(ok.stderr) if " has no sample of " in x], ok.stderr


def test_missing_class_names_are_bounded_and_empty_splits_are_left_alone():
    names = [f"k{i}" for i in range(30)]
    splits = {"train": {"count": 30, "per_class": [1] * 30},
              "val": {"count": 5, "per_class": [1] * 5 + [0] * 25},
              "test": {"count": 0, "per_class": [0] * 30}}
    (warning,) = missing_class_warnings(splits, names)
    assert warning.startswith("val has no sample of 25 of the 30 classes in train ('k5', 'k6', 'k7', 'k8', 'k9', "
                              "'k10', 'k11', 'k12', 'k13', 'k14' and 15 more)")
    assert missing_class_warnings({"val": splits["val"]}, names) == []  # no train split: nothing to compare


# ------------------------------------------------------------------------------------ im2rec lists and class names


def test_list_round_trip_keeps_class_names_and_finds_the_images(tmp_path):
    names = ["cat", "dog", "zebra"]
    _tree(tmp_path / "photos", {n: 4 for n in names})
    # relative paths, as a user types them: the lists must still work from another folder
    res = run_cli("dataset", "pack", "photos", "lists", "--list", "--train-ratio", "0.5", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "wrote lists/classes.txt, lists/train.lst, lists/val.lst"
    assert (tmp_path / "lists/classes.txt").read_text() == "cat\ndog\nzebra\n"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_cli("dataset", "pack", str(tmp_path / "lists/train.lst"), "pack", cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    m = json.loads((elsewhere / "pack/manifest.json").read_text())
    assert m["class_names"] == names and m["skipped"] == []
    for split in ("train", "val"):  # val.lst, read the same way, numbers its classes the same
        per = [0, 0, 0]
        for row in (tmp_path / f"lists/{split}.lst").read_text().splitlines():
            per[int(row.split("\t")[1])] += 1
        assert sum(per) == 6
        if split == "train":
            assert m["splits"]["train"]["per_class"] == per
        else:
            source = open_source(str(tmp_path / "lists/val.lst"))
            assert source.class_names == names and [sum(it.label == c for it in source.items) for c in range(3)] == per
            assert all(Path(it.path).is_file() for it in source.items)


def test_lst_and_csv_sources_with_and_without_a_class_map(tmp_path):
    images = tmp_path / "img"
    files = [_png(images / f"{i}.png") for i in range(6)]

    # a plain MXNet list, no classes.txt: labels named by number, as before
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "all.lst").write_text("".join(f"{i}\t{i % 2}\t{p}\n" for i, p in enumerate(files)))
    assert open_source(str(plain / "all.lst")).class_names == ["0", "1"]
    # a CSV with names and no class map: sorted names, as before
    (plain / "names.csv").write_text("".join(f"{p},{['zebra', 'cat'][i % 2]}\n" for i, p in enumerate(files)))
    assert open_source(str(plain / "names.csv")).class_names == ["cat", "zebra"]

    # beside a classes.txt: numeric CSV labels take its names; name labels map through it (a CSV without any dog
    # still numbers zebra 2); a .lst takes its names
    mapped = tmp_path / "mapped"
    mapped.mkdir()
    (mapped / "classes.txt").write_text("cat\ndog\nzebra\n")
    (mapped / "num.csv").write_text("path,label\n" + "".join(f"{p},{i % 3}\n" for i, p in enumerate(files)))
    (mapped / "names.csv").write_text("".join(f"{p},{['zebra', 'cat'][i % 2]}\n" for i, p in enumerate(files)))
    for name, labels in (("num.csv", [0, 1, 2, 0, 1, 2]), ("names.csv", [2, 0, 2, 0, 2, 0])):
        source = open_source(str(mapped / name))
        assert source.class_names == ["cat", "dog", "zebra"] and [it.label for it in source.items] == labels

    # end to end: a .lst beside classes.txt packs with the names; a missing file is skipped with the reason
    (mapped / "all.lst").write_text("".join(f"{i}\t{i % 3}\t{p}\n" for i, p in enumerate(files))
                                    + "6\t1\tnot-there.png\n")
    res = run_cli("dataset", "pack", str(mapped / "all.lst"), str(tmp_path / "pack"))
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "pack/manifest.json").read_text())
    assert m["class_names"] == ["cat", "dog", "zebra"] and m["splits"]["train"]["per_class"] == [2, 2, 2]
    assert [Path(r["path"]).name for r in m["skipped"]] == ["not-there.png"]
    assert "unreadable" in m["skipped"][0]["reason"]

    # what does not match the class map, or a broken class map: a UsageError naming file and line ...
    (mapped / "unknown.csv").write_text(f"{files[0]},cat\n{files[1]},horse\n")
    (mapped / "high.csv").write_text(f"path,label\n{files[0]},0\n\n{files[1]},3\n")
    (mapped / "high.lst").write_text(f"0\t1\t{files[0]}\n1\t3\t{files[1]}\n")
    (mapped / "empty.csv").write_text("path,label\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "classes.txt").write_text("cat\ndog\ncat\n")
    (broken / "all.lst").write_text(f"0\t0\t{files[0]}\n")
    for src, words in (
            (mapped / "unknown.csv", f"{mapped}/unknown.csv line 2: class 'horse' is not among the 3 classes of "
                                     f"{mapped}/classes.txt"),
            (mapped / "high.csv", f"{mapped}/high.csv line 4: label 3 is not among the 3 classes"),
            (mapped / "high.lst", f"{mapped}/high.lst line 2: label 3 is outside the 3 classes of "
                                  f"{mapped}/classes.txt (0..2)"),
            (mapped / "empty.csv", f"{mapped}/empty.csv lists no rows (format: path,label)"),
            (broken / "all.lst", f"{broken}/classes.txt line 3 repeats class 'cat' of line 1")):
        with pytest.raises(UsageError) as err:
            open_source(str(src))
        assert words in str(err.value), str(err.value)
    # ... which the CLI prints as one line, exit code 2, nothing written
    res = run_cli("dataset", "pack", str(mapped / "high.lst"), str(tmp_path / "never"))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [f"lit-imgcls: error: {mapped}/high.lst line 2: label 3 is outside the 3 "
                                               f"classes of {mapped}/classes.txt (0..2): the list and its class map "
                                               "do not match"]
    assert not (tmp_path / "never/manifest.json").exists()
