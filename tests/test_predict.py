"""predict and score on a LeNet trained once for this module on a few thousand MNIST images."""

from __future__ import annotations

import csv
import http.server
import io
import json
import re
import shutil
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import quick_args, run_cli
from PIL import Image

NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
HELD_BACK = 40  # images of MNIST's test set: never trained on (training takes the first 3,000 training images)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, float]:
    """(checkpoint, fit's final val top-1) of a one-epoch LeNet."""
    tmp = tmp_path_factory.mktemp("predict-fit")
    res = run_cli("fit", *quick_args(tmp))
    assert res.returncode == 0, res.stderr[-3000:]
    acc = float(re.search(r"final: val top-1 accuracy ([0-9.]+)", res.stdout).group(1))
    ckpt = tmp / "model" / "mnist-0001.ckpt"
    assert ckpt.is_file() and acc > 0.8
    return ckpt, acc


@pytest.fixture(scope="module")
def digits(tmp_path_factory, mnist_arrays) -> tuple[Path, dict[str, str]]:
    """Held-back MNIST test digits as grey PNG files, and each file's true class."""
    folder = tmp_path_factory.mktemp("digits")
    labels = {}
    for i in range(HELD_BACK):
        name = f"digit{i:03d}.png"
        Image.fromarray(mnist_arrays["test_images"][i]).save(folder / name)
        labels[name] = str(int(mnist_arrays["test_labels"][i]))
    return folder, labels


@pytest.fixture(scope="module")
def http_root(digits):
    """A real HTTP server on loopback serving the digit files."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(digits[0]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cli_json(trained, digits, http_root) -> list[dict]:
    """predict --format json on a glob of all digits plus one digit by URL."""
    folder, _ = digits
    res = run_cli("predict", "--checkpoint", str(trained[0]), "--format", "json", "--top-k", "3", "--threads", "2",
                  str(folder / "digit*.png"), f"{http_root}/digit007.png", env=NO_PROXY)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.strip() == ""  # json output: nothing else on any stream
    return json.loads(res.stdout)


def _parse_table(text: str) -> dict[str, list[tuple[str, float]] | str]:
    """The rows of predict's table (inputs without a true label), after its header."""
    rows: dict[str, list[tuple[str, float]] | str] = {}
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["input", "top-1"], lines[0]
    for line in lines[1:]:
        parts = line.split()
        if len(parts) > 1 and parts[1] == "error:":
            rows[parts[0]] = line.split("error:", 1)[1].strip()
        elif parts:
            rows[parts[0]] = [(parts[i], float(parts[i + 1])) for i in range(1, len(parts), 2)]
    return rows


def test_predict_names_held_back_digits_in_every_format(trained, digits, cli_json, http_root):
    ckpt, _ = trained
    folder, labels = digits

    # json: a glob and a URL
    assert len(cli_json) == HELD_BACK + 1
    by_file = {Path(d["input"]).name: d for d in cli_json if not d["input"].startswith("http")}
    assert set(by_file) == set(labels)
    for doc in cli_json:
        probs = [p["probability"] for p in doc["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    right = sum(by_file[name]["predictions"][0]["class"] == label for name, label in labels.items())
    assert right >= 0.85 * HELD_BACK, f"only {right} of {HELD_BACK} held-back digits named right"
    url_doc = next(d for d in cli_json if d["input"] == f"{http_root}/digit007.png")
    assert url_doc["predictions"] == by_file["digit007.png"]["predictions"]

    # table: the folder, searched recursively
    res = run_cli("predict", "--checkpoint", str(ckpt), "--top-k", "3", "--threads", "2", str(folder))
    assert res.returncode == 0, res.stderr[-3000:]
    table = _parse_table(res.stdout)
    assert {Path(k).name for k in table} == set(labels)
    starts = {len(line) - len(line.split(maxsplit=1)[1]) for line in res.stdout.splitlines()}
    assert len(starts) == 1, "the predictions do not start in one column"

    # csv: the same folder
    res = run_cli("predict", "--checkpoint", str(ckpt), "--top-k", "3", "--format", "csv", "--threads", "2", str(folder))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(rows[0]) == ["input", "rank", "class", "probability"] and len(rows) == 3 * HELD_BACK
    csv_top = {Path(r["input"]).name: r["class"] for r in rows if r["rank"] == "1"}

    for path, preds in table.items():
        name = Path(path).name
        top_json = by_file[name]["predictions"][0]
        assert preds[0][0] == top_json["class"] == csv_top[name]
        assert abs(preds[0][1] - top_json["probability"]) < 1e-4


def test_python_api_gives_what_the_cli_gives(trained, digits, cli_json):
    import torch

    import lit_imgcls
    from lit_imgcls import Classifier

    assert "Classifier" not in vars(lit_imgcls)  # exported lazily
    folder, labels = digits
    clf = Classifier.load(trained[0], device="cpu")
    assert clf.class_names == [str(i) for i in range(10)]
    names = sorted(labels)
    results = clf.predict([folder / n for n in names], top_k=3)
    by_file = {Path(d["input"]).name: d for d in cli_json if not d["input"].startswith("http")}
    for name, preds in zip(names, results):
        cli = [(p["class"], p["probability"]) for p in by_file[name]["predictions"]]
        assert [c for c, _ in preds] == [c for c, _ in cli]
        assert np.allclose([p for _, p in preds], [p for _, p in cli], atol=1e-5)

    # one image in any form: path str, PIL image, numpy HW uint8, torch CHW uint8 and float
    pil = Image.open(folder / names[0])
    arr = np.array(pil)  # a writable copy, as torch.from_numpy wants
    forms = [str(folder / names[0]), pil, arr, torch.from_numpy(arr)[None], torch.from_numpy(arr)[None].float() / 255]
    outs = [clf.predict(form, top_k=2) for form in forms]
    for out in outs:
        assert isinstance(out, list) and len(out) == 2 and isinstance(out[0], tuple)
        assert out[0][0] == outs[0][0][0] and abs(out[0][1] - outs[0][0][1]) < 1e-5


def test_predict_every_sample_of_a_pack(trained, digits, tmp_path, capsys):
    folder, labels = digits
    classes = tmp_path / "by-class"
    for name, label in labels.items():
        (classes / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, classes / label / name)
    pack = tmp_path / "pack"
    res = run_cli("dataset", "pack", str(classes), str(pack), "--format", "wds", "--train-ratio", "0", "--pass-through",
                  "--shard-size", "16")
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("predict", "--checkpoint", str(trained[0]), "--format", "json", "--top-k", "1", "--threads", "2", str(pack))
    assert res.returncode == 0, res.stderr[-3000:]
    docs = json.loads(res.stdout)
    assert len(docs) == HELD_BACK
    assert all(re.fullmatch(re.escape(str(pack)) + r":val\d{8}", d["input"]) for d in docs)
    assert sorted(d["label"] for d in docs) == sorted(labels.values())
    right = sum(d["predictions"][0]["class"] == d["label"] for d in docs)
    assert right >= 0.85 * HELD_BACK
    # the table shows each sample's true class too, under a header
    from lit_imgcls.cli import main

    assert main(["predict", "--checkpoint", str(trained[0]), "--top-k", "2", "--threads", "2", str(pack)]) in (0, None)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["input", "label", "top-1", "top-2"]
    shown = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert shown == {d["input"]: d["label"] for d in docs}
    # a split the pack does not have is bad usage
    res = run_cli("predict", "--checkpoint", str(trained[0]), "--split", "train", str(pack))
    assert res.returncode == 2 and "no 'train' samples" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_unreadable_images_are_reported_and_the_rest_predicted(trained, digits, tmp_path):
    folder, labels = digits
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    good = sorted(labels)[:3]
    for name in good:
        shutil.copy(folder / name, mixed / name)
    (mixed / "broken.png").write_bytes((folder / good[0]).read_bytes()[:60])  # a PNG cut short
    (mixed / "empty.jpg").write_bytes(b"")
    res = run_cli("predict", "--checkpoint", str(trained[0]), "--threads", "2", str(mixed), str(tmp_path / "missing.png"))
    assert res.returncode == 1
    table = _parse_table(res.stdout)
    failed = {Path(k).name for k, v in table.items() if isinstance(v, str)}
    assert failed == {"broken.png", "empty.jpg", "missing.png"}
    assert {Path(k).name for k, v in table.items() if not isinstance(v, str)} == set(good)
    assert "3 of 6 inputs could not be predicted" in res.stderr

    res = run_cli("predict", "--checkpoint", str(tmp_path / "nope.ckpt"), str(mixed))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"lit-imgcls: error: checkpoint not found: {tmp_path / 'nope.ckpt'}"]


def test_score_matches_fit_and_writes_the_confusion_png(trained):
    ckpt, fit_acc = trained
    png = ckpt.with_name("mnist-0001-confusion.png")
    res = run_cli("score", "--checkpoint", str(ckpt), "--threads", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    top1 = float(re.search(r"^top-1 accuracy ([0-9.]+)$", out, re.MULTILINE).group(1))
    assert abs(top1 - fit_acc) <= 1e-4
    top5 = float(re.search(r"^top-5 accuracy ([0-9.]+)$", out, re.MULTILINE).group(1))
    assert top1 <= top5 <= 1
    assert re.search(r"\d+ images/s", out)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024
    assert f"confusion matrix PNG: {png}" in out

    per_class = {m.group(1): (int(m.group(2)), int(m.group(3)), float(m.group(4)))
                 for m in re.finditer(r"^  (\d)\s+(\d+)\s+(\d+)\s+([0-9.]+)$", out.split("confusion matrix")[0], re.MULTILINE)}
    assert sorted(per_class) == [str(i) for i in range(10)]
    assert sum(n for n, _, _ in per_class.values()) == 10000  # MNIST's test set, fit's validation data
    matrix_text = out.split("confusion matrix (rows")[1].split("confusion matrix PNG")[0]
    rows = [line.split() for line in matrix_text.splitlines()[2:] if line.strip()]
    assert len(rows) == 10
    for row in rows:
        name, values = row[0], [int(v) for v in row[1:]]
        count, correct, acc = per_class[name]
        assert sum(values) == count and values[int(name)] == correct and abs(correct / count - acc) < 1e-4
    assert abs(sum(c for _, c, _ in per_class.values()) / 10000 - top1) < 1e-6


def test_a_file_that_is_no_image_is_named_once_without_nested_reasons(tmp_path, capsys):
    """The reason a file is refused reads as one phrase: ``not an image (not a JPEG, ...)``, not wrapped again in
    ``not a readable image (...)``."""
    from ckpt_factory import checkpoint, write

    from lit_imgcls.cli import main

    ckpt = write(tmp_path / "model" / "m-0001.ckpt", checkpoint())
    folder = tmp_path / "my digits"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:  # some inputs could not be predicted: exit 1
        main(["predict", "--checkpoint", str(ckpt), "--threads", "1", str(folder)])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert re.search(r"broken\.png +error: not an image \(not a JPEG, PNG", out), out
    assert re.search(r"empty\.png +error: empty file", out), out
    assert "not a readable image" not in out
