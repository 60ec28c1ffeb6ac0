"""plot: PNG and a self-contained interactive HTML page from real fit runs, checked in headless Chromium offline."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from html import unescape
from pathlib import Path

import pytest

from conftest import quick_args, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """Two short real runs (different LR) in one run folder; the second also writes TensorBoard events."""
    tmp = tmp_path_factory.mktemp("plot")
    for lr, extra in (("0.05", []), ("0.2", ["--tensorboard", "true"])):
        res = run_cli("fit", *quick_args(tmp, num_examples=1500, num_epochs=2, disp_batches=5, lr=lr, threads=1,
                                         model_prefix=tmp / f"model/lr{lr}"), *extra)
        assert res.returncode == 0, res.stderr
    return tmp / "runs" / "mnist-lenet"


# Debian's Chromium (built with Google API keys) calls these on its own, on a timer, whatever the page is, even for
# about:blank and with every background switch below; they are the browser's, never the page's.
BROWSER_OWN_HOSTS = {"clients2.google.com", "update.googleapis.com", "accounts.google.com"}


class ProxyTrap:
    """A listening socket posing as the browser's proxy: every request the browser makes arrives here, and the
    host it asked for is recorded (the request is then dropped)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hosts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(2)
            try:
                head = conn.recv(1024).decode("latin-1")
            except OSError:
                head = ""
            conn.close()
            # "GET http://host/path HTTP/1.1" or "CONNECT host:443 HTTP/1.1"
            m = re.match(r"\S+ (?:\w+://)?([^/:\s]+)", head)
            self.hosts.append(m.group(1) if m else f"unparsed: {head[:60]!r}")

    def page_hosts(self, since: int = 0) -> list[str]:
        return [h for h in self.hosts[since:] if h not in BROWSER_OWN_HOSTS]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _dump_dom(url: str, proxy_port: int, profile: Path, console: list[str] | None = None) -> str:
    """The DOM of ``url`` after its scripts ran, in headless Chromium with every request sent to the trap at
    ``proxy_port``; ``console`` (a list) receives the page's console messages (errors, CSP refusals, logs)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--disable-default-apps", "--no-pings", "--disable-domain-reliability",
           "--disable-client-side-phishing-detection", "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter",
           f"--user-data-dir={profile}", "--window-size=1200,900",
           # No name resolves; the trap's address is exempt, or the browser could not reach even the trap.
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           f"--proxy-server=http://127.0.0.1:{proxy_port}", "--virtual-time-budget=3000", "--dump-dom", url]
    if console is not None:
        cmd[1:1] = ["--enable-logging=stderr", "--v=0"]  # console messages as INFO:CONSOLE lines on stderr
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if console is not None:
        console += [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout


def _body_attrs(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return {k: unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', body)}


def test_plot_png_and_offline_interactive_html(two_runs, tmp_path):
    versions = sorted(p.name for p in two_runs.iterdir())
    assert versions == ["version_0", "version_1"]
    assert list((two_runs / "version_1").glob("events.out.tfevents.*")), "tensorboard: true writes event files beside metrics.csv"

    out = tmp_path / "out" / "curves"
    res = run_cli("plot", str(two_runs / "version_0"), str(two_runs / "version_1"), "--out", str(out), "--x", "epoch")
    assert res.returncode == 0, res.stderr
    png, page = Path(f"{out}.png"), Path(f"{out}.html")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[:2] == (800, 1200)  # 12 x 8 inches at 100 dpi: the 2 x 2 grid

    text = page.read_text()
    embedded = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1)
    chart = json.loads(embedded)
    assert [r["label"] for r in chart["runs"]] == ["mnist-lenet/version_0", "mnist-lenet/version_1"]
    assert chart["x"] == "epoch" and [p["title"] for p in chart["panels"]] == ["accuracy", "loss", "learning rate", "samples/s"]
    lrs = [r["series"]["lr"]["y"][0] for r in chart["runs"]]
    assert lrs == [0.05, 0.2]
    assert max(chart["runs"][0]["series"]["val/acc"]["epoch"]) == 2.0
    # Self-contained: no URL outside the data block but the SVG namespace, which is a name, never fetched.
    rest = text.replace(embedded, "")
    assert re.findall(r"https?://[^\s\"'`]*", rest) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"<(link|img|iframe)\b|src=|@import|url\(http", rest)

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium, or scripts/setup.sh): the HTML page was not opened")
    trap = ProxyTrap()
    try:
        dom = _dump_dom(page.resolve().as_uri() + "#selftest", trap.port, tmp_path / "profile")
        attrs = _body_attrs(dom)
        # Control: the same browser settings do send a page's request to the trap, so zero below means none was made.
        control = tmp_path / "control.html"
        control.write_text('<!doctype html><img src="http://example.com/x.png"><script>fetch("http://example.org/")</script>')
        time.sleep(0.5)  # the trap's thread may still be reading a request
        page_requests = trap.page_hosts()
        before = len(trap.hosts)
        _dump_dom(control.as_uri(), trap.port, tmp_path / "profile2")
        time.sleep(0.5)
        reached = trap.page_hosts(before)
    finally:
        trap.close()
    assert page_requests == [], f"the plot page made network requests to {page_requests}"
    assert sorted(set(reached)) == ["example.com", "example.org"], f"the control page's requests did not reach the trap: {reached}"

    assert attrs["data-drawn-panels"] == "4"
    assert attrs["data-paths"] == "4,4,2,2"  # per panel: train + val of two runs; one line of two runs
    assert dom.count('data-drawn="1"') == 4
    selftest = json.loads(attrs["data-selftest"])
    assert selftest["hidden_paths"] == [2, 2, 1, 1] and selftest["shown_again"]  # legend toggles a run
    lo, hi = (float(v) for v in selftest["drag_zoom"].split(","))
    assert 0 <= lo < hi <= 2 and hi - lo < 1.5  # drag selects part of the 2 epochs
    assert selftest["wheel_zoom"]  # the wheel zooms too
    assert "mnist-lenet/version_" in selftest["tooltip"] and "epoch" in selftest["tooltip"]


def test_parent_folder_takes_every_version(two_runs, tmp_path):
    res = run_cli("plot", str(two_runs), "--out", str(tmp_path / "all"))
    assert res.returncode == 0, res.stderr
    chart = json.loads(re.search(r'id="data">(.*?)</script>', (tmp_path / "all.html").read_text(), re.S).group(1))
    assert len(chart["runs"]) == 2 and chart["x"] == "step"


def test_folder_without_metrics_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_cli("plot", str(tmp_path / "empty"))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "no metrics.csv" in res.stderr


def test_script_json_cannot_close_its_block():
    from lit_imgcls.plot import script_json

    text = script_json({"label": "</script><!-- & -->"})
    assert "</" not in text and "<!--" not in text and json.loads(text) == {"label": "</script><!-- & -->"}


def test_many_runs_get_distinct_colours_and_a_legend_outside_the_panels(tmp_path):
    """A sweep of 12 runs (metrics.csv as fit writes them, made here): every run its own colour in the PNG and in
    the HTML page, and the PNG's one legend beside the panels, overlapping none of them."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from lit_imgcls.plot import chart_data, figure, load_runs, plot, run_colors

    for v in range(12):
        folder = tmp_path / "runs" / "mnist-lenet" / f"version_{v}"
        folder.mkdir(parents=True)
        rows = ["epoch,step,lr,train/acc,train/loss,train/samples_per_sec,train/epoch_time,val/acc,val/loss"]
        rows += [f"{e},{10 * e + 5},0.1,{0.5 + v / 100},{1 - v / 100},1000,," for e in range(2)]
        rows += [f"{e},{10 * e + 10},,,,,1.0,{0.6 + v / 100},{0.9 - v / 100}" for e in range(2)]
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    png, page = plot([str(tmp_path / "runs")], out=str(tmp_path / "sweep"))
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[:2] == (800, 1200)
    chart = json.loads(re.search(r'id="data">(.*?)</script>', page.read_text(), re.S).group(1))
    assert len({r["color"] for r in chart["runs"]}) == 12 and "COLORS[" not in page.read_text()

    runs = load_runs([str(tmp_path / "runs")])
    assert [r["color"] for r in chart_data(runs, "step")["runs"]] == run_colors(12)
    fig = figure(runs)
    try:
        fig.canvas.draw()
        (legend,) = fig.legends
        box = legend.get_window_extent()
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), "the legend covers a panel"
            assert len({to_hex(line.get_color()) for line in ax.get_lines()}) == 12  # train and val of a run alike
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == [f"mnist-lenet/version_{v}" for v in range(12)] + ["train", "validation"]
    finally:
        plt.close(fig)
    for n in (3, 10, 20, 45):
        assert len(set(run_colors(n))) == n
    assert run_colors(10)[:3] == ["#1f77b4", "#ff7f0e", "#2ca02c"]  # up to ten runs: matplotlib's usual colours


def test_a_run_shorter_than_disp_batches_plots_its_epoch_summaries(tmp_path):
    """``fit --num-examples 2000`` with the MNIST recipe (31 steps, disp_batches 200) logs no window rows: the train
    accuracy, loss and samples/s come from each epoch's summary row, at the epoch's end, not an empty panel."""
    from lit_imgcls.plot import read_run

    folder = tmp_path / "runs" / "mnist-lenet" / "version_0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text(
        "epoch,step,train/epoch_acc,train/epoch_loss,train/epoch_samples_per_sec,train/epoch_time,val/acc,val/loss\n"
        "0,31,,,,,0.848,0.521\n0,31,0.554,1.468,65.1,30.5,,\n"
        "1,62,,,,,0.9,0.3\n1,62,0.8,0.6,70.0,29.0,,\n")
    run = read_run(folder)
    assert run.series["train/acc"].y == [0.554, 0.8] and run.series["train/acc"].step == [31, 62]
    assert run.series["train/acc"].epoch == [1.0, 2.0]
    assert run.series["train/loss"].y == [1.468, 0.6] and run.series["train/samples_per_sec"].y == [65.1, 70.0]
    assert run.series["val/acc"].y == [0.848, 0.9]


def test_a_train_curve_of_one_value_is_drawn_as_a_point(tmp_path):
    """One epoch shorter than disp_batches: the train accuracy is one value, drawn with a marker (a line of one
    point is invisible), in the PNG and in the HTML page."""
    import matplotlib.pyplot as plt

    from lit_imgcls.plot import figure, plot, read_run

    folder = tmp_path / "version_0"
    folder.mkdir()
    (folder / "metrics.csv").write_text(
        "epoch,step,train/epoch_acc,train/epoch_loss,train/epoch_samples_per_sec,train/epoch_time,val/acc,val/loss\n"
        "0,31,,,,,0.848,0.521\n0,31,0.554,1.468,65.1,30.5,,\n")
    fig = figure([read_run(folder)])
    try:
        lines = [line for ax in fig.axes for line in ax.get_lines()]
        assert lines and all(line.get_marker() not in (None, "None", "") for line in lines)
    finally:
        plt.close(fig)
    _, page = plot([str(folder)], out=str(tmp_path / "one"))
    assert "val || s.y.length === 1" in page.read_text()
