"""One validation layer per input format, at the boundary (issue 14, item 4: packs, labels and FFCV files).

A pack's manifest (:func:`lit_imgcls.data.manifest.check_manifest`), each stored label
(:mod:`lit_imgcls.data.labels`) and each ``.beton`` file (:mod:`lit_imgcls.data.formats.beton`) are checked where
they are read, by the same functions on every path, and a bad one is one line, exit 2, naming the field or the
shard and sample. One real pack (both formats) is made by ``dataset pack`` for the session; each test damages a
copy (the pack is conftest's ``tiny_pack``, shared with other test files). The fuzz tests mutate the real manifest and the real ``.beton`` header, field table, metadata and allocation
table in process (derandomized, so CI sees the same cases) and accept two outcomes only: accepted, or the
project's one-line :class:`UsageError`.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit_imgcls.data.formats.beton import FIELD, HEADER, read_beton
from lit_imgcls.data.labels import parse_label
from lit_imgcls.data.manifest import check_manifest, read_manifest
from lit_imgcls.errors import UsageError

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="session")
def pack(tiny_pack) -> Path:
    """The session's real pack (tests/conftest.py: tiny_pack), both formats; tests damage copies of it."""
    return tiny_pack


def _copy(pack: Path, tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "pack"
    shutil.copytree(pack, out)
    return out, json.loads((out / "manifest.json").read_text())


def _save(out: Path, m: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(m))


def _rehash(out: Path, m: dict, entry: dict, rel: str) -> None:
    """Makes the manifest agree with a file rewritten by a test (as a crafted pack would): size and sha256."""
    data = (out / rel).read_bytes()
    entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _save(out, m)


def _one_error(res, *parts: str) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("lit-imgcls: error: "), line
    for part in parts:
        assert part in line, line
    return line


# -------------------------------------------------------------------------------------------------------- manifest


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_a_manifest_claiming_10_to_the_12_samples_is_one_line_naming_the_field(pack, tmp_path, command):
    out, m = _copy(pack, tmp_path)
    m["splits"]["train"]["count"] = 10**12
    _save(out, m)
    _one_error(run_cli("dataset", command, str(out)), "splits.train.count is not a count from 0 to 10000000000")


def test_split_count_not_the_shards_and_a_zero_std_are_named_by_verify(pack, tmp_path):
    out, m = _copy(pack, tmp_path)
    m["splits"]["train"]["wds"][0]["samples"] = 5
    _save(out, m)
    _one_error(run_cli("dataset", "verify", str(out)), "splits.train.wds holds 5 samples, not its count 6")
    m["splits"]["train"]["wds"][0]["samples"] = 6
    m["std"] = [0.2, 0.0, 0.2]
    _save(out, m)
    _one_error(run_cli("dataset", "verify", str(out)), "std is not within (0, 1]")


def _set(path: str, value):
    def mutate(m: dict) -> None:
        *parents, last = path.split(".")
        node = m
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


@pytest.mark.parametrize("mutate, field", [
    (_set("class_names", ["c" * 10**6, "dog"]), "class_names[0] is 1000000 characters long"),
    (_set("class_names", [str(i) for i in range(1_000_001)]), "class_names holds 1000001 names"),
    (_set("class_names", ["cat", ""]), "class_names[1] is 0 characters long"),
    (_set("mean", [0.5, float("nan"), 0.5]), "mean is not a list of 1 or 3 (channels) finite numbers"),
    (_set("mean", [0.5, 0.5]), "mean is not a list of 1 or 3"),
    (_set("std", [0.2, -0.1, 0.2]), "std is not within (0, 1]"),
    (_set("std", [float("inf")] * 3), "std is not a list"),
    (_set("channels", True), "channels is True, not 1 or 3"),
    (_set("format_version", True), "format_version is True"),
    (_set("splits.train.image_size", {"min": [8, 8], "max": [8, 10**9]}), "splits.train.image_size is not"),
    (_set("splits.train.image_size", {"min": [0, 8], "max": [8, 8]}), "splits.train.image_size is not"),
    (_set("splits.train.image_size", {"min": [9, 8], "max": [8, 8]}), "image_size.min [9, 8] is larger than its max"),
    (_set("splits.train.per_class", [3, 4]), "splits.train.per_class adds up to 7, not its count 6"),
    (_set("splits.train.wds.0.bytes", 2**50), "splits.train.wds[0].bytes is not a size from 1 to"),
    (_set("splits.train.wds.0.bytes", 4096), "splits.train.wds[0].samples 6 do not fit in its 4096 bytes"),
    (_set("splits.train.wds.0.sha256", "ab" * 31), "splits.train.wds[0].sha256 is not 64 hex digits"),
    (_set("splits.train.ffcv.samples", 10**12), "splits.train.ffcv.samples is not a count from 0 to"),
    (_set("splits.train.ffcv.file", "../../etc/passwd"), "splits.train.ffcv.file '../../etc/passwd' is not a file"),
    (_set("duplicates.examples", [{"size": 2, "kinds": [], "samples": [
        {"split": "train", "key": "k", "label": -100}]}]), "duplicates.examples[0].samples[0].label is not a class"),
    (lambda m: m["splits"].__setitem__("x" * 1000, m["splits"]["train"]), "splits has a split named 'xxxx"),
])
def test_every_manifest_field_is_bounded_and_named(pack, mutate, field):
    m = json.loads((pack / "manifest.json").read_text())
    mutate(m)
    with pytest.raises(UsageError) as err:
        check_manifest(m, "manifest.json")
    line = str(err.value)
    assert field in line and "\n" not in line and len(line) < 400, line


def test_every_reader_uses_the_one_manifest_check(pack, tmp_path):
    """fit/validate/test (the DataModules read load_pack_manifest), predict (its pack inputs), verify and inspect
    (read_manifest): one function, one line."""
    from lit_imgcls.data.formats.packed import load_pack_manifest
    from lit_imgcls.inputs import _pack_sources

    out, m = _copy(pack, tmp_path)
    m["std"] = [0.0] * 3
    _save(out, m)
    for read in (read_manifest, load_pack_manifest, lambda p: list(_pack_sources(p, "train")),
                 lambda p: load_pack_manifest(f"file://{p}")):
        with pytest.raises(UsageError, match=r"manifest.json is not a lit-imgcls pack manifest .*: std is not within"):
            read(str(out))


# ---------------------------------------------------------------------------------------------------------- labels


def _relabel_first_sample(out: Path, m: dict, label: bytes) -> str:
    """Rewrites the pack's shard with its first sample's ``.cls`` holding ``label``; returns that sample's key."""
    entry = m["splits"]["train"]["wds"][0]
    path = out / "wds" / entry["file"]
    members = []
    with tarfile.open(path) as tar:
        for member in tar:
            members.append((member, tar.extractfile(member).read()))
    first = members[0][0].name.partition(".")[0]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name == f"{first}.cls":
                data = label
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    _rehash(out, m, entry, f"wds/{entry['file']}")
    return first


def test_a_label_of_minus_100_is_refused_on_every_wds_path(pack, tmp_path):
    """verify and inspect (CLI), training and evaluation loaders, predict over a pack: the shard and the key."""
    from lit_imgcls.data.formats.wds import WDSDataModule
    from lit_imgcls.inputs import _pack_sources

    out, m = _copy(pack, tmp_path)
    key = _relabel_first_sample(out, m, b"-100")
    parts = (f"sample {key} of shard", "train-000000.tar", "label '-100' is not a class index in [0, 2)")
    _one_error(run_cli("dataset", "verify", str(out)), *parts)
    _one_error(run_cli("dataset", "inspect", str(out)), *parts)
    dm = WDSDataModule(data_train=str(out), data_nthreads=0, batch_size=2)
    for make in (dm.train_dataloader, lambda: dm._loader(str(out), m, "train", train=False)):
        with pytest.raises(UsageError) as err:
            # Small images are decoded when the loader is made (PackedDataModule.keeps_decoded), others as it is
            # read (shuffled: the bad sample may come in any batch): either way the sample is named.
            list(make())
        assert all(p in str(err.value) for p in parts), err.value
    with pytest.raises(UsageError) as err:
        list(_pack_sources(str(out), "train"))
    assert all(p in str(err.value) for p in parts), err.value


@pytest.mark.parametrize("raw", [b"-100", b"-1", b"2", b"255", b"3.0", b"+1", b"1e2", b"", b"\xff\x00", b"9" * 10**6,
                                 b"99999999999999999999"], ids=lambda raw: repr(raw[:12]))
def test_label_rule_refuses_sentinels_and_out_of_range_values_in_one_short_line(raw):
    with pytest.raises(UsageError) as err:
        parse_label(raw, 2, "sample k of shard s.tar")
    line = str(err.value)
    assert line.startswith("sample k of shard s.tar: label ") and "\n" not in line and len(line) < 300, line


def test_label_rule_accepts_what_pack_writes():
    assert [parse_label(b, 10, "x") for b in (b"0", b"9", b" 7\n", b"007")] == [0, 9, 7, 7]


# ----------------------------------------------------------------------------------------------------- FFCV .beton


def _beton(out: Path) -> Path:
    return out / "ffcv" / "train.beton"


def _layout(path: Path) -> dict:
    h = np.fromfile(path, dtype=HEADER, count=1)[0]
    meta = HEADER.itemsize + int(h["num_fields"]) * FIELD.itemsize
    return {"num_samples": int(h["num_samples"]), "table": int(h["alloc_table_ptr"]), "meta": meta,
            "size": path.stat().st_size}


def _poke(path: Path, offset: int, value: int, dtype: str) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.array([value], dtype=dtype).tobytes())


def test_a_beton_pointer_past_its_end_is_named_by_verify_and_refused_at_load(pack, tmp_path):
    from lit_imgcls.data.formats.ffcv import FFCVDataModule

    out, m = _copy(pack, tmp_path)
    path = _beton(out)
    lay = _layout(path)
    _poke(path, lay["table"] + 8, lay["size"] + 4096, "<u8")  # allocation 0's ptr, past the end of the file
    _rehash(out, m, m["splits"]["train"]["ffcv"], "ffcv/train.beton")
    _one_error(run_cli("dataset", "verify", str(out)), "ffcv/train.beton is not a readable FFCV file: allocation 0")
    dm = FFCVDataModule(data_train=str(out), data_nthreads=1, batch_size=2)
    with pytest.raises(UsageError, match="train.beton is not a readable FFCV file: allocation 0"):
        dm._path(str(out), m, "train")  # what _loader calls before it imports FFCV


def test_a_beton_label_of_minus_100_is_named_by_verify_and_inspect(pack, tmp_path):
    out, m = _copy(pack, tmp_path)
    path = _beton(out)
    lay = _layout(path)
    _poke(path, lay["meta"] + 3 * 24 + 16, -100, "<i8")  # sample 3's label (image record 13 bytes, label at 16)
    _rehash(out, m, m["splits"]["train"]["ffcv"], "ffcv/train.beton")
    _one_error(run_cli("dataset", "verify", str(out)), "sample 3 of ffcv/train.beton: label -100 is not a class index")
    # inspect reads the labels of an FFCV-only pack from the .beton: the same check, no FFCV import needed
    shutil.rmtree(out / "wds")
    m["formats"] = ["ffcv"]
    del m["splits"]["train"]["wds"]
    _save(out, m)
    _one_error(run_cli("dataset", "inspect", str(out)), "sample 3 of ffcv/train.beton of pack", "label -100")


def test_the_real_beton_reads_back_with_its_labels(pack):
    m = read_manifest(pack)
    info = read_beton(_beton(pack), 2, 6)
    assert info.num_samples == 6 and sorted(info.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    from lit_imgcls.data.pack_check import storage_labels

    m = {**m, "splits": {"train": {k: v for k, v in m["splits"]["train"].items() if k != "wds"}}}
    assert storage_labels(pack, m, "train") == info.labels.tolist()


# ----------------------------------------------------------------------------------------------------------- fuzz


def _json_values():
    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.sampled_from([0, 1, 2, 6, -1, 10**12, 2**63])
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
               | st.sampled_from(["ab" * 32, "x" * 5000, "wds", "ffcv", "../x.tar", "train-000000.tar"]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=8)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _outcome_is_accepted_or_one_line(call) -> None:
    try:
        call()
    except UsageError as exc:
        line = str(exc)
        assert line and "\n" not in line and len(line) < 1000, line


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_fields(pack, data):
    """Any field of the real manifest replaced by any JSON value, or deleted: accepted, or one short line."""
    base = json.loads((pack / "manifest.json").read_text())
    m = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(m) if p]
        path = data.draw(st.sampled_from(paths))
        parent = m
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_json_values())
    _outcome_is_accepted_or_one_line(lambda: check_manifest(m, "manifest.json"))


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_bytes(pack, tmp_path_factory, data):
    """Bytes of the real manifest file flipped, cut or inserted, read as readers read it: accepted or one line."""
    text = bytearray((pack / "manifest.json").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and at < len(text):
            text[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del text[at:]
        else:
            text[at:at] = data.draw(st.sampled_from([b"1e999", b"NaN", b"-", b"9" * 30, b"[", b'"', b"\xff"]))
    folder = tmp_path_factory.getbasetemp() / "fuzz-manifest"
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_bytes(bytes(text))
    _outcome_is_accepted_or_one_line(lambda: read_manifest(folder))


_U8_EDGE = [0, 1, 2, 6, 7, 24, 511, 512, 4096, 2**21, 2**22, 2**23, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]


@pytest.fixture(scope="module")
def fuzz_beton(pack, tmp_path_factory) -> tuple[Path, bytes, dict]:
    """A copy of the real .beton, poked and restored by each example; the original of the regions that are poked."""
    path = tmp_path_factory.mktemp("fuzz-beton") / "train.beton"
    shutil.copyfile(_beton(pack), path)
    return path, path.read_bytes(), _layout(path)


@FUZZ
@given(data=st.data())
def test_fuzz_beton_header_and_tables(fuzz_beton, data):
    """Header fields, field table, metadata and allocation table of the real .beton overwritten with edge values or
    random bytes, or the file cut: accepted, or one line; never another exception, never a read past the file."""
    path, original, lay = fuzz_beton
    regions = {"header": (0, HEADER.itemsize), "fields": (HEADER.itemsize, lay["meta"]),
               "metadata": (lay["meta"], lay["meta"] + lay["num_samples"] * 24), "table": (lay["table"], lay["size"])}
    pokes = []
    for _ in range(data.draw(st.integers(1, 3))):
        lo, hi = regions[data.draw(st.sampled_from(sorted(regions)))]
        dtype = data.draw(st.sampled_from(["<u1", "<u2", "<u4", "<u8", "<i8"]))
        at = data.draw(st.integers(lo, hi - np.dtype(dtype).itemsize))
        info = np.iinfo(dtype)
        value = data.draw(st.sampled_from([v for v in _U8_EDGE + [-1, -100, lay["size"], lay["table"]]
                                           if info.min <= v <= info.max]) | st.integers(info.min, info.max))
        pokes.append((at, value, dtype))
    cut = data.draw(st.none() | st.integers(0, lay["meta"] + 200) | st.integers(lay["table"], lay["size"]))
    try:
        for at, value, dtype in pokes:
            _poke(path, at, value, dtype)
        if cut is not None:
            os.truncate(path, cut)
        _outcome_is_accepted_or_one_line(lambda: read_beton(path, 2, None, "train.beton"))
    finally:
        with open(path, "r+b") as f:  # restore what was poked or cut (the pages of images are never touched)
            for lo, hi in ((0, lay["meta"] + lay["num_samples"] * 24), (lay["table"], lay["size"])):
                f.seek(lo)
                f.write(original[lo:hi])
            if cut is not None and cut < lay["table"]:
                f.seek(cut)
                f.write(original[cut:])
