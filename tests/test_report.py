"""`score --report` (issue 18, item 2): the evaluation page and its JSON, from a real LeNet trained one epoch on
320 MNIST digits and scored on 256 others, checked against predict's own path, opened in headless Chromium
offline, with hostile class names, and refusing files lit-imgcls did not write."""

from __future__ import annotations

import base64
import io
import json
import re
from html import unescape

import numpy as np
import pytest

from conftest import quick_args, run_cli
from lit_imgcls.cli import main
from test_plot import CHROMIUM, ProxyTrap, _dump_dom

VAL = 256


@pytest.fixture(scope="module")
def scored(tmp_path_factory, mnist_arrays):
    """(folder, the data .npz, the checkpoint, score's stdout) of ``score --report out/report.html --top-k 3``."""
    tmp = tmp_path_factory.mktemp("report")
    data = tmp / "digits.npz"
    np.savez(data, x_train=mnist_arrays["train_images"][:320, :, :, None], y_train=mnist_arrays["train_labels"][:320],
             x_val=mnist_arrays["test_images"][:VAL, :, :, None], y_val=mnist_arrays["test_labels"][:VAL],
             mean=np.array([0.1307], np.float32), std=np.array([0.3081], np.float32))
    assert main(["fit", *quick_args(tmp, dataset="npz", data_train=data, batch_size=32)]) == 0
    ckpt = tmp / "model" / "mnist-0001.ckpt"
    res = run_cli("score", "--checkpoint", str(ckpt), "--report", str(tmp / "out" / "report.html"), "--top-k", "3",
                  "--batch-size", "50", cwd=tmp)  # 50: the mistakes are spread over several batches
    assert res.returncode == 0, res.stderr
    return tmp, data, ckpt, res.stdout


def _thumbnails(page: str) -> dict[int, np.ndarray]:
    """Image index -> the pixels of its thumbnail on the page."""
    from PIL import Image

    out = {}
    for index, b64 in re.findall(r'data-index="(\d+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page):
        out[int(index)] = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    return out


def test_report_numbers_agree_with_score_and_with_predicts_path(scored):
    tmp, data, ckpt, stdout = scored
    from lit_imgcls.classifier import Classifier
    from lit_imgcls.evaluation import MISTAKES, summarize
    from lit_imgcls.score import REPORT_FORMAT

    page, doc = tmp / "out" / "report.html", tmp / "out" / "report.json"
    assert f"report: {page}" in stdout and f"report data: {doc}" in stdout
    report = json.loads(doc.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert report["format"] == REPORT_FORMAT and report["count"] == VAL and report["top_k"] == 3
    printed = float(re.search(r"^top-1 accuracy (\S+)$", stdout, re.M).group(1))
    assert report["top1"] == pytest.approx(printed, abs=1e-6)
    assert report["topk"] == pytest.approx(float(re.search(r"^top-3 accuracy (\S+)$", stdout, re.M).group(1)), abs=1e-6)
    assert len(doc.read_bytes()) < 20_000  # numbers only: no images in the JSON

    # The same images through predict's path (Classifier: its own preprocessing and network call), summarised.
    clf = Classifier.load(ckpt)
    arrays = np.load(data)
    probs = clf.probabilities([clf.preprocess(x) for x in arrays["x_val"]]).numpy()
    want = summarize(arrays["y_val"], probs, [str(i) for i in range(10)], top_k=3)
    assert report["confusion"] == want["confusion"]
    for key in ("top1", "topk", "balanced_accuracy", "macro_f1"):
        assert report[key] == pytest.approx(want[key], abs=1e-9), key
    assert report["calibration"]["ece"] == pytest.approx(want["calibration"]["ece"], abs=1e-5)
    assert [m["index"] for m in report["confident_mistakes"]] == [m["index"] for m in want["confident_mistakes"]]
    assert len(report["confident_mistakes"]) == MISTAKES

    # Each thumbnail is its own image, enlarged 3 x by nearest neighbour: the 28 x 28 digit pixel for pixel.
    thumbs = _thumbnails(page.read_text())
    assert sorted(thumbs) == sorted(m["index"] for m in report["confident_mistakes"])
    for index, pixels in thumbs.items():
        assert pixels.shape == (84, 84)
        assert (pixels[::3, ::3] == arrays["x_val"][index, :, :, 0]).all(), index


def test_report_page_renders_offline_without_console_errors(scored):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the page was not opened")
    tmp, _, _, _ = scored
    page = tmp / "out" / "report.html"
    report = json.loads((tmp / "out" / "report.json").read_text())
    text = page.read_text()
    assert re.findall(r"https?://[^\s\"'`<]*", text) == []  # nothing to fetch: the SVG is inline HTML
    assert not re.search(r"<(link|iframe)\b|@import|url\(", text)
    assert set(re.findall(r'src="([a-z]+):', text)) == {"data"}
    trap, console = ProxyTrap(), []
    try:
        dom = _dump_dom(page.resolve().as_uri() + "#selftest", trap.port, tmp / "profile", console)
        page_requests = trap.page_hosts()
    finally:
        trap.close()
    assert page_requests == [] and console == [], (page_requests, console)
    body = {k: unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1))}
    assert body["data-ready"] == "1"
    # The F1 heading sorts the table: highest first, undefined last; a second click lowest first, undefined last.
    f1 = {i: c["f1"] for i, c in enumerate(report["classes"])}
    defined = sorted((i for i in f1 if f1[i] is not None), key=lambda i: (f1[i], -i))
    undefined = [str(i) for i in f1 if f1[i] is None]
    down, up = json.loads(body["data-sorted"])
    assert down[len(defined):] == undefined
    assert [f1[int(v)] for v in down[:len(defined)]] == sorted((f1[i] for i in defined), reverse=True)
    assert [f1[int(v)] for v in up[:len(defined)]] == sorted(f1[i] for i in defined) and up[len(defined):] == undefined
    assert body["data-images-shown"] == str(len(report["confident_mistakes"]))  # every thumbnail decoded
    rows = re.search(r'<table id="classes".*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    cells = [[unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows.split("</tr>") if "<td" in r]
    cells.sort(key=lambda c: int(c[0]))  # the self-test left the rows sorted by F1
    assert [c[1] for c in cells] == [str(i) for i in range(10)]
    for c, want in zip(cells, report["classes"]):
        assert int(c[2]) == want["support"]
        assert c[5] == ("—" if want["f1"] is None else f"{want['f1']:.4f}")
    counts = [int(v) for v in re.findall(r'<rect class="cell"[^>]*data-count="(\d+)"', dom)]
    assert np.array(counts).reshape(10, 10).tolist() == report["confusion"]
    bars = dict(re.findall(r'<rect class="bar"[^>]*data-bin="(\d+)" data-count="(\d+)"', dom))
    assert {int(b): int(n) for b, n in bars.items()} == {
        b: row["count"] for b, row in enumerate(report["calibration"]["reliability"]) if row["count"]}
    assert dom.count('<figure class="mistake"') == len(report["confident_mistakes"])
    assert 'class="diag"' in dom and 'id="worst"' in dom and 'id="topk"' in dom


HOSTILE = ['<img src=x onerror=alert(1)>', '"><script>document.title="owned"</script>', "a & b </svg>"]


def test_class_names_and_paths_are_text_never_markup(tmp_path):
    """Class names and the checkpoint's path are user data: shown as text in the table, the matrix, the lists and
    the header; no element or script of theirs reaches the page. 50 classes also take the many-class matrix."""
    from lit_imgcls.report import MistakeThumbnails, render, write_report
    from lit_imgcls.score import ScoreResult, report_data

    rng = np.random.default_rng(0)
    for classes in (3, 50):
        names = HOSTILE + [f"c{i}" for i in range(classes - 3)]
        labels = rng.integers(0, classes, 200)
        probs = rng.dirichlet(np.ones(classes) * 0.3, 200).astype(np.float32)
        confusion = np.zeros((classes, classes), np.int64)
        np.add.at(confusion, (labels, probs.argmax(1)), 1)
        result = ScoreResult(checkpoint="model/<b>x<i>-0001.ckpt", dataset="npz", class_names=names,
                             confusion=confusion, top1=0.0, top_k=2, topk=0.0, seconds=0.0,
                             images_per_sec=float("inf"), labels=labels, probs=probs)
        data = report_data(result)
        json.dumps(data, allow_nan=False)  # images/s infinite (no measurable time): written as null
        assert data["images_per_sec"] is None
        page = tmp_path / f"r{classes}.html"
        write_report(data, page, page.with_suffix(".json"), MistakeThumbnails())
        text = page.read_text()
        assert "<img src=x" not in text and "<script>document" not in text and "<b>x<i>" not in text
        assert text.count("<script>") == 1
        assert (('<rect class="cell"' in text) == (classes == 3)) and (('id="confusion" class="matrix"' in text)
                                                                     == (classes == 50))
        assert render(data) == text  # no thumbnails kept: the same page
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: the page was not opened")
    trap, console = ProxyTrap(), []
    try:
        dom = _dump_dom((tmp_path / "r3.html").resolve().as_uri(), trap.port, tmp_path / "profile", console)
    finally:
        trap.close()
    assert console == [], console
    assert "<title>lit-imgcls score: &lt;b&gt;x&lt;i&gt;-0001.ckpt on npz</title>" in dom
    assert "<img" not in dom  # no thumbnails here, and no image a class name made
    shown = [unescape(c) for c in re.findall(r'<td class="name">(.*?)</td>', dom)]
    assert shown[:3] == HOSTILE


def test_thumbnails_keep_the_most_confident_mistakes_in_summarize_order():
    """Ties in confidence, mistakes spread over batches, fewer kept than made: the bounded heap keeps what
    summarize lists, and no more."""
    import torch

    from lit_imgcls.evaluation import summarize
    from lit_imgcls.report import MistakeThumbnails

    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0])
    conf = np.array([0.9, 0.8, 0.8, 0.95, 0.6, 0.8, 0.99, 0.7, 0.8, 0.55], np.float32)
    pred = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])  # wrong: 0, 1, 2, 3, 5, 7, 8, 9 (right: 4, 6)
    probs = np.stack([np.where(pred == 0, conf, 1 - conf), np.where(pred == 0, 1 - conf, conf)], 1).astype(np.float32)
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    hook = MistakeThumbnails(keep=4)
    for lo, hi in ((0, 3), (3, 7), (7, 10)):
        hook(images[lo:hi], torch.from_numpy(labels[lo:hi]), torch.from_numpy(probs[lo:hi]), None)
    want = [m["index"] for m in summarize(labels, probs, ["a", "b"], mistakes=4)["confident_mistakes"]]
    assert want == [3, 0, 1, 2]  # 0.95, 0.9, then the 0.8 tie in image order (1, 2; not 5, 8)
    from PIL import Image

    kept = hook.pngs()
    assert sorted(kept) == sorted(want) and len(hook.heap) == 4
    for index, png in kept.items():
        assert (np.asarray(Image.open(io.BytesIO(png))) == index).all()  # each image's own pixels


def test_refusals_are_one_line_before_scoring(scored, tmp_path, capsys):
    _, _, ckpt, _ = scored

    def refused(report: str, *needles: str) -> None:
        assert main(["score", "--checkpoint", str(ckpt), "--report", report, "--confusion-png",
                     str(tmp_path / "c.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, err

    refused(str(tmp_path / "report.txt"), "--report must name an .html file")
    refused("s3://bucket/report.html", "local file")
    theirs = tmp_path / "mine.json"
    theirs.write_text("my notes\n")
    refused(str(tmp_path / "mine.html"), str(theirs), "not a file lit-imgcls wrote")
    assert theirs.read_text() == "my notes\n" and not (tmp_path / "mine.html").exists()
    assert not (tmp_path / "c.png").exists()  # refused before scoring (the PNG comes after it)


def test_write_flags_take_a_file_url_and_refuse_a_file_as_their_folder(scored, tmp_path, capsys, monkeypatch):
    """--report, --calibrated-out and export's --out share one check (lit_imgcls.storage.local_output): a path
    under an existing file was a NotADirectoryError traceback, and file:///x wrote into a folder named "file:"."""
    _, _, ckpt, _ = scored
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.html"
    mine.write_text("my page\n")
    for command, *flags in (["score", "--report", f"{mine}/r.html"],
                            ["score", "--calibrate", "--calibrated-out", f"{mine}/sub/m-calibrated.ckpt"],
                            ["export", "--format", "onnx", "--out", f"{mine}/m.onnx"]):
        assert main([command, "--checkpoint", str(ckpt), *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and "is a file, not a folder" in err, err
    assert mine.read_text() == "my page\n"
    page = tmp_path / "out" / "r.html"
    assert main(["score", "--checkpoint", str(ckpt), "--report", f"file://{page}", "--confusion-png",
                 str(tmp_path / "c.png")]) == 0
    assert f"report: {page}" in capsys.readouterr().out
    assert page.is_file() and page.with_suffix(".json").is_file() and not (tmp_path / "file:").exists()


def test_an_empty_write_flag_is_refused_not_dropped(scored, tmp_path, capsys, monkeypatch):
    """--report '' was ignored (the run went on, no report) and export --out '' meant the default path: an empty
    name is refused in one line by the shared check, before any scoring or export."""
    _, _, ckpt, _ = scored
    monkeypatch.chdir(tmp_path)
    for command, *flags in (["score", "--report", ""], ["score", "--confusion-png", " "],
                            ["score", "--calibrate", "--calibrated-out", ""], ["score", "--calibrated-out", ""],
                            ["export", "--format", "onnx", "--out", ""]):
        assert main([command, "--checkpoint", str(ckpt), *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "needs a file name" in err or "give --calibrate too" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written where it ran


def test_a_confusion_png_of_the_users_is_never_overwritten(scored, tmp_path, capsys):
    """--confusion-png replaced any file, and one that named the report's JSON was written before the report
    refused: both now refused in one line before scoring; a PNG score wrote there is replaced."""
    _, _, ckpt, _ = scored
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my own picture")
    for flags in (["--confusion-png", str(mine)],
                  ["--confusion-png", str(tmp_path / "r.json"), "--report", str(tmp_path / "r.html")]):
        assert main(["score", "--checkpoint", str(ckpt), *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and "--confusion-png" in err, err
    assert mine.read_bytes() == b"my own picture" and sorted(p.name for p in tmp_path.iterdir()) == ["mine.png"]
    ours = tmp_path / "out" / "c.png"
    for _ in range(2):
        assert main(["score", "--checkpoint", str(ckpt), "--top-k", "0", "--confusion-png", str(ours)]) == 0
    assert ours.read_bytes().startswith(b"\x89PNG")


def test_sigterm_while_a_file_is_written_leaves_no_temporary_file(tmp_path):
    """score --report/--calibrate and export leave SIGTERM at its default, which skipped atomic_write's clean-up: a
    score killed while writing left a `.NAME.XXXX.tmp` beside the confusion PNG. The writer here stalls inside the
    write, so the signal lands there every time; the process still dies of SIGTERM, the old file intact."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "report.html"
    target.write_text("the report written before\n")
    code = ("import sys, time\nfrom lit_imgcls.io import atomic_write\n"
            "def stalled(f):\n    f.write(b'<html>'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
            "atomic_write(sys.argv[1], stalled)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    assert len(list(tmp_path.glob(".report.html.*.tmp"))) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert target.read_text() == "the report written before\n"


def test_a_report_of_ours_is_replaced_and_an_edited_one_is_not(scored):
    """The pair written by the fixture's run is recorded as ours: checked as replaceable; once a person edits
    the page, it is theirs."""
    from lit_imgcls.errors import UsageError
    from lit_imgcls.report import report_paths

    tmp, _, _, _ = scored
    page = tmp / "out" / "report.html"
    assert report_paths(str(page)) == (page, page.with_suffix(".json"))
    original = page.read_text()
    try:
        page.write_text(original + "<!-- my notes -->")
        with pytest.raises(UsageError, match="changed since lit-imgcls wrote it"):
            report_paths(str(page))
    finally:
        page.write_text(original)
