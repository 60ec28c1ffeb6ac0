"""Never delete or overwrite what lit-imgcls did not write (issue 14 item 1): `dataset pack` takes an output folder
only when what it would replace there is its own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lit_imgcls.data.manifest import LOCK

from test_pack_lists import _tree, cli, error_line


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("own", ["wds", "ffcv", "manifest.json", "manifest of another tool"])
def test_a_folder_holding_the_users_own_pack_names_is_refused_and_left_as_it_was(tmp_path, capsys, own):
    src = _tree(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    if own in ("wds", "ffcv"):
        (out / own).mkdir()
        (out / own / "my-shard-000.tar").write_bytes(b"the user's own shard")
    elif own == "manifest.json":
        (out / "manifest.json").write_text("not JSON at all")
    else:
        (out / "manifest.json").write_text(json.dumps({"splits": {"train": 3}, "tool": "someone else's"}))
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    code, _, err = cli(capsys, "dataset", "pack", str(src), str(out), "--train-ratio", "0.75")
    assert code == 2
    line = error_line(err)
    assert "which no lit-imgcls pack wrote" in line and "move them out" in line, line
    assert _snapshot(out) == before and not (out / LOCK).exists()


def test_a_previous_pack_is_replaced_and_the_users_other_files_stay(tmp_path, capsys):
    src = _tree(tmp_path / "photos")
    out = tmp_path / "out"
    assert cli(capsys, "dataset", "pack", str(src), str(out), "--train-ratio", "0.75")[0] == 0
    (out / "README.txt").write_text("the user's note beside the pack")
    (out / "photo.jpg").write_bytes(b"\xff\xd8 not ours")
    code, _, err = cli(capsys, "dataset", "pack", str(src), str(out), "--train-ratio", "0.5")
    assert code == 0, err
    assert (out / "README.txt").read_text() == "the user's note beside the pack"
    assert (out / "photo.jpg").read_bytes() == b"\xff\xd8 not ours"
    assert json.loads((out / "manifest.json").read_text())["splits"]["val"]["count"] == 4


def test_a_folder_of_unrelated_files_is_packed_into_without_touching_them(tmp_path, capsys):
    src = _tree(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    (out / "wds.txt").write_text("a name like ours, but not ours")
    before = _snapshot(out)
    code, _, err = cli(capsys, "dataset", "pack", str(src), str(out), "--train-ratio", "0.75")
    assert code == 0, err
    after = _snapshot(out)
    assert all(after[k] == v for k, v in before.items())


@pytest.mark.parametrize("own", ["ffcv beside a wds-only pack", "a file of the user's inside wds/",
                                 "wds/ as a link to the user's folder"])
def test_beside_or_inside_a_previous_pack_only_what_its_manifest_lists_is_replaced(tmp_path, capsys, own):
    src = _tree(tmp_path / "photos")
    out = tmp_path / "out"
    assert cli(capsys, "dataset", "pack", str(src), str(out), "--format", "wds")[0] == 0
    if own.startswith("ffcv"):
        (out / "ffcv").mkdir()
        (out / "ffcv" / "own.beton.txt").write_text("mine")
    elif own.startswith("a file"):
        (out / "wds" / "my-notes.txt").write_text("mine")
    else:
        mine = tmp_path / "mine"
        mine.mkdir()
        (mine / "keep.txt").write_text("mine")
        for p in (out / "wds").iterdir():
            p.unlink()
        (out / "wds").rmdir()
        (out / "wds").symlink_to(mine)
    before = _snapshot(out)
    code, _, err = cli(capsys, "dataset", "pack", str(src), str(out), "--seed", "7")
    assert code == 2, err
    assert "which no lit-imgcls pack wrote" in error_line(err)
    assert _snapshot(out) == before
    if own.startswith("wds/"):
        assert (tmp_path / "mine" / "keep.txt").read_text() == "mine"
