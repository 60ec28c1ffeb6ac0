"""`dataset pack --list` replaces only the lists it wrote itself and that nobody changed since
(lit_imgcls.owned_files, the record OUT/.lit-imgcls-lists); a user's own train.lst of the same name is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from lit_imgcls.cli import main

RECORD = ".lit-imgcls-lists"


@pytest.fixture
def src(tmp_path) -> Path:
    for name in ("cat", "dog"):
        (tmp_path / "src" / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (50 * i, 0, 0)).save(tmp_path / "src" / name / f"{i}.png")
    return tmp_path / "src"


def lists(capsys, src: Path, out: Path, *extra: str) -> tuple[int, list[str]]:
    """Runs `dataset pack SRC OUT --list` in this process (the CLI's own entry point); exit code and stderr lines."""
    capsys.readouterr()
    code = main(["dataset", "pack", str(src), str(out), "--list", "--train-ratio", "0.6", *extra])
    return code, capsys.readouterr().err.splitlines()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


def test_a_users_own_list_of_the_same_name_is_refused_and_kept(tmp_path, capsys, src):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.lst").write_text("0\t0\tmy/own/image.jpg\n")
    code, err = lists(capsys, src, out)
    assert code == 2 and err == [f"lit-imgcls: error: {out}/train.lst is not a file lit-imgcls wrote (its record "
                                 f"{RECORD} does not name it); move it away or write the lists into another folder"]
    assert snapshot(out) == {"train.lst": b"0\t0\tmy/own/image.jpg\n"}  # nothing else written either


def test_lists_of_ours_are_replaced_and_the_ones_no_longer_written_go(tmp_path, capsys, src):
    out = tmp_path / "out"
    assert lists(capsys, src, out, "--test-ratio", "0.2")[0] == 0
    assert {"train.lst", "val.lst", "test.lst", "classes.txt", RECORD} == set(snapshot(out))
    record = json.loads((out / RECORD).read_text())
    assert record["written_by"] == "lit-imgcls" and set(record["files"]) == {"train.lst", "val.lst", "test.lst",
                                                                             "classes.txt"}
    first_train = (out / "train.lst").read_bytes()

    assert lists(capsys, src, out, "--seed", "1")[0] == 0  # no test split now: its old list is ours, so it goes
    assert set(snapshot(out)) == {"train.lst", "val.lst", "classes.txt", RECORD}
    assert (out / "train.lst").read_bytes() != first_train  # another shuffle, written over our own file
    assert set(json.loads((out / RECORD).read_text())["files"]) == {"train.lst", "val.lst", "classes.txt"}
    # what the lists say is still readable as a source
    assert main(["dataset", "pack", str(out / "train.lst"), str(tmp_path / "packed")]) == 0


def test_a_list_of_ours_that_the_user_edited_is_theirs_now(tmp_path, capsys, src):
    out = tmp_path / "out"
    assert lists(capsys, src, out, "--test-ratio", "0.2")[0] == 0
    with open(out / "val.lst", "a") as f:
        f.write("99\t1\textra.png\n")
    before = snapshot(out)
    code, err = lists(capsys, src, out, "--test-ratio", "0.2", "--seed", "3")
    assert code == 2 and len(err) == 1 and f"{out}/val.lst was changed since lit-imgcls wrote it" in err[0]
    assert snapshot(out) == before

    # an edited list that a new run no longer writes is left where it is, and is no longer ours
    with open(out / "test.lst", "a") as f:
        f.write("# mine\n")
    (out / "val.lst").unlink()
    assert lists(capsys, src, out, "--train-ratio", "0.5")[0] == 0  # writes train and val only
    assert (out / "test.lst").read_text().endswith("# mine\n")
    assert "test.lst" not in json.loads((out / RECORD).read_text())["files"]


@pytest.mark.parametrize("what", ["link", "folder"])
def test_a_link_or_folder_in_a_lists_place_is_refused(tmp_path, capsys, src, what):
    out, target = tmp_path / "out", tmp_path / "mine.txt"
    out.mkdir()
    target.write_text("mine\n")
    if what == "link":
        (out / "classes.txt").symlink_to(target)
    else:
        (out / "classes.txt").mkdir()
    code, err = lists(capsys, src, out)
    assert code == 2 and err == [f"lit-imgcls: error: {out}/classes.txt is a {what}, not a file lit-imgcls wrote; "
                                 "move it away or write the lists into another folder"]
    assert target.read_text() == "mine\n" and sorted(os.listdir(out)) == ["classes.txt"]


@pytest.mark.parametrize("record", ['{"files": {"train.lst": []}}', "not json", "link"])
def test_a_record_lit_imgcls_did_not_write_is_refused(tmp_path, capsys, src, record):
    out = tmp_path / "out"
    out.mkdir()
    if record == "link":
        (out / RECORD).symlink_to(tmp_path / "nowhere")
    else:
        (out / RECORD).write_text(record)
    code, err = lists(capsys, src, out)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"lit-imgcls: error: {out}/{RECORD} is ")
    assert "lit-imgcls keeps there the list of the files it wrote" in err[0]
    assert sorted(os.listdir(out)) == [RECORD] and not (tmp_path / "nowhere").exists()


def test_a_record_naming_a_file_elsewhere_does_not_make_it_ours(tmp_path, capsys, src):
    """What a record says is data: a name with a folder in it is refused, never followed to delete a file."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.txt").write_text("keep\n")
    (out / RECORD).write_text(json.dumps({"written_by": "lit-imgcls", "files": {"../precious.txt": []}}))
    code, err = lists(capsys, src, out)
    assert code == 2 and "is not a record lit-imgcls wrote" in err[0]
    assert (tmp_path / "precious.txt").read_text() == "keep\n"
