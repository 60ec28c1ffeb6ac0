"""Special files, size bounds and a stop that I/O cannot block (issue 14, item 5, and the IDX, list and recipe checks
of item 4).

Every place that takes a path reads through :mod:`lit_imgcls.bounded_read`: a named pipe, a device or a symlink loop
is one line (or a skipped input with its reason), never a hang; a file or a download over its bound is cut there
with one line. The servers here are real (``http.server`` on loopback, started by each test), the FIFOs real
``mkfifo`` pipes nobody writes to, the signal a real SIGTERM to a real ``fit`` process.
"""

from __future__ import annotations

import gzip
import http.server
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit_imgcls.bounded_read import LIMITS, ReadRefused, read_regular, size_text
from lit_imgcls.data.mnist import read_idx, write_idx
from lit_imgcls.errors import UsageError, quoted

from test_input_checks import _tree, in_process, one_line

ONE_LINE_MAX = 400  # characters: a bad value is quoted by its prefix, never in full


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _loop(path: Path) -> Path:
    os.symlink(path.name + ".b", path)
    os.symlink(path.name, path.with_name(path.name + ".b"))
    return path


# ------------------------------------------------------------------------------------------ one rule, every path


def test_fifo_device_and_link_loop_as_predict_inputs_are_named_not_waited_for(tmp_path):
    """predict's inputs: a FIFO (and a link to one), /dev/zero and a symlink loop each become an input with the
    reason; nothing is opened that would block, nothing read for ever."""
    from lit_imgcls.inputs import expand_inputs

    fifo = _fifo(tmp_path / "pipe.jpg")
    os.symlink(fifo, tmp_path / "link-to-pipe.jpg")
    loop = _loop(tmp_path / "loop.jpg")
    start = time.monotonic()
    reasons = {}
    for src in expand_inputs([str(fifo), str(tmp_path / "link-to-pipe.jpg"), "/dev/zero", str(loop)]):
        assert src.error is None
        with pytest.raises(ValueError) as info:  # ImageDecodeError: predict reports it as the input's error
            src.read()
        reasons[Path(src.name).name] = str(info.value)
    assert time.monotonic() - start < 5
    assert reasons == {"pipe.jpg": "not a regular file (a FIFO)", "link-to-pipe.jpg": "not a regular file (a FIFO)",
                       "zero": "not a regular file (a device)",
                       "loop.jpg": "a symbolic link that loops (or a chain of more than 40 links)"}


def test_fifo_or_link_loop_as_recipe_hostfile_list_or_manifest_is_one_line(tmp_path, capsys):
    fifo = _fifo(tmp_path / "r.yaml")
    code, err = in_process(capsys, "fit", "--recipe", str(fifo))
    assert code == 2 and "cannot read recipe" in one_line(err) and "not a regular file (a FIFO)" in err
    code, err = in_process(capsys, "fit", "--recipe", str(_loop(tmp_path / "loop.yaml")))
    assert code == 2 and "a symbolic link that loops" in one_line(err)

    code, err = in_process(capsys, "launch", "-H", str(_fifo(tmp_path / "hosts")), "--", "true")
    assert code == 2 and "cannot read hostfile" in one_line(err) and "not a regular file (a FIFO)" in err
    code, err = in_process(capsys, "launch", "-H", "/dev/zero", "--", "true")
    assert code == 2 and "not a regular file (a device)" in one_line(err)

    code, err = in_process(capsys, "dataset", "pack", str(_fifo(tmp_path / "train.lst")), str(tmp_path / "out"))
    assert code == 2 and "train.lst: not a regular file (a FIFO)" in one_line(err)
    assert not (tmp_path / "out").exists()
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.lst").write_text("0\t0\ta.png\n")
    _fifo(lists / "classes.txt")
    code, err = in_process(capsys, "dataset", "pack", str(lists / "train.lst"), str(tmp_path / "out"))
    assert code == 2 and "cannot read the class map" in one_line(err) and "(a FIFO)" in err

    pack = tmp_path / "pack"
    pack.mkdir()
    _fifo(pack / "manifest.json")
    for command in (("dataset", "verify", str(pack)), ("dataset", "inspect", str(pack))):
        code, err = in_process(capsys, *command)
        assert code == 2 and "manifest.json: not a regular file (a FIFO)" in one_line(err)


def test_fifo_as_a_checkpoint_checksum_file_is_one_line(tmp_path):
    from lit_imgcls.io import verify_checksum

    (tmp_path / "m-0001.ckpt").write_bytes(b"x")
    _fifo(tmp_path / "m-0001.ckpt.sha256")
    with pytest.raises(UsageError, match=r"m-0001\.ckpt\.sha256: not a regular file \(a FIFO\)"):
        verify_checksum(tmp_path / "m-0001.ckpt")


def test_oversize_and_long_string_recipes_are_refused_before_parsing(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("lr: 0.1\n" + "#" * LIMITS["recipe"] + "\n")
    code, err = in_process(capsys, "fit", "--recipe", str(big))
    assert code == 2 and "larger than 1 MiB" in one_line(err)
    long = tmp_path / "long.yaml"
    long.write_text("network: " + "a" * 100_000 + "\n")
    code, err = in_process(capsys, "fit", "--recipe", str(long))
    line = one_line(err)
    assert code == 2 and "has a string of 100,000 characters" in line and "at most 4096" in line
    assert len(line) < ONE_LINE_MAX
    junk_key = tmp_path / "key.yaml"
    junk_key.write_text("x" * 1000 + ": 1\n")  # YAML's longest plain key
    code, err = in_process(capsys, "fit", "--recipe", str(junk_key))
    line = one_line(err)
    assert code == 2 and "unknown recipe key 'xxx" in line and "(1,000 characters)" in line
    assert len(line) < 1500  # the list of valid keys is most of it; the bad key is 60 characters of it
    code, err = in_process(capsys, "fit", "--network", "n" * 10_000)
    assert code == 2 and "argument 2 has 10,000 characters" in one_line(err)


def test_quoted_cuts_long_values_and_escapes_control_characters():
    assert quoted("abc") == "'abc'"
    assert quoted("a" * 100, 10) == "'aaaaaaaaaa'... (100 characters)"
    assert quoted("x\x1b[31m\n") == "'x\\x1b[31m\\n'"
    assert quoted(list(range(100)), 10).endswith("... (390 characters)")


def test_a_file_or_stream_over_its_bound_is_refused(tmp_path, monkeypatch):
    """By the size seen at open; and while reading, for what has no size (a stream, a file that grows)."""
    from lit_imgcls.bounded_read import bounded_stream

    path = tmp_path / "hosts"
    path.write_bytes(b"a\n" * 1000)
    monkeypatch.setitem(LIMITS, "hostfile", 1000)
    with pytest.raises(ReadRefused, match=r"larger than 1000 bytes \(2.0 KiB\), the most lit-imgcls reads as a hostfile"):
        read_regular(path, "hostfile")
    with open(path, "rb") as raw:
        stream = bounded_stream(raw, "hostfile", str(path))
        assert len(stream.read(600)) == 600 and len(stream.read(400)) == 400
        with pytest.raises(ReadRefused, match="the download was cut there"):
            stream.read(1)
    assert size_text(LIMITS["recipe"]) == "1 MiB" and size_text(1536) == "1.5 KiB"


# ----------------------------------------------------------------------------------------------------- im2rec lists


def test_list_labels_and_lines_are_bounded(tmp_path, capsys, monkeypatch):
    """A label of 10**7 in an im2rec list is a column out of place, not ten million classes; a list longer than
    the line bound is refused before a row is used."""
    (tmp_path / "a.png").write_bytes(b"")
    lst = tmp_path / "train.lst"
    lst.write_text("0\t1\ta.png\n1\t10000000\ta.png\n")
    code, err = in_process(capsys, "dataset", "pack", str(lst), str(tmp_path / "out"))
    line = one_line(err)
    assert code == 2 and "train.lst line 2: label 10,000,000 would mean 10,000,001 classes" in line
    assert "more than the 100,000" in line
    csv = tmp_path / "train.csv"
    csv.write_text("path,label\na.png,3\na.png,99999999\n")
    code, err = in_process(capsys, "dataset", "pack", str(csv), str(tmp_path / "out"))
    assert code == 2 and "train.csv line 3: label 99,999,999" in one_line(err)
    from lit_imgcls.data import sources

    csv.write_text("a.png,\u00b2\na.png,1\n")  # "²".isdigit() is true, int("²") fails: a class name, not a crash
    assert sources.open_source(str(csv)).class_names == ["1", "\u00b2"]
    monkeypatch.setattr(sources, "MAX_LIST_LINES", 3)
    lst.write_text("0\t0\ta.png\n" * 4)
    with pytest.raises(UsageError, match="has 4 lines, more than the 3"):
        sources.open_source(str(lst))
    lst.write_text("0\t0\ta.png\r\n1\tinf\ta.png\r\n")  # CR-LF ends a line; an infinite label is skipped, not a crash
    src = sources.open_source(str(lst))
    assert [i.label for i in src.items] == [0] and "inf" in src.skipped[0]["reason"]


# ------------------------------------------------------------------------------------------------------- MNIST IDX


def _idx_header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def test_idx_header_that_overflows_or_claims_too_much_is_refused_before_reading(tmp_path):
    """(2**32-1)**3 bytes overflowed numpy's int64 product into a wrong size; now the product is exact and checked
    against the bound and the file's size before anything is allocated."""
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(_idx_header(0x08, (2**32 - 1, 2**32 - 1, 2**32 - 1)) + b"\0" * 100)
    with pytest.raises(UsageError, match=r"4294967295 x 4294967295 x 4294967295 values .* more than the 1 GiB"):
        read_idx(path)
    path.write_bytes(_idx_header(0x0E, (2**16, 2**16)) + b"\0" * 100)  # 32 GiB of float64
    with pytest.raises(UsageError, match="more than the 1 GiB"):
        read_idx(path)
    path.write_bytes(_idx_header(0x08, (3, 4)) + b"\0" * 100)
    with pytest.raises(UsageError, match="truncated or padded: 112 bytes, header says 24"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(UsageError, match="declares 0 dimensions"):
        read_idx(path)
    fifo = _fifo(tmp_path / "f-idx1-ubyte")
    with pytest.raises(UsageError, match=r"not a regular file \(a FIFO\)"):
        read_idx(fifo)


def test_idx_gzip_bomb_is_cut_at_what_the_header_says(tmp_path):
    """A 1 MB .gz that inflates to 1 GiB behind a header saying 28 x 28 bytes: refused after 785 bytes, at
    once; one whose header claims more than the bound is refused before inflating anything."""
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)  # one gzip member of 1 MiB of zeros, repeated
    member = zeros.compress(b"\0" * 2**20) + zeros.flush()
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(_idx_header(0x08, (1, 28, 28))) + member * 1024)
    assert bomb.stat().st_size < 2 * 2**20
    start = time.monotonic()
    with pytest.raises(UsageError, match=r"truncated or padded: 801\+ bytes, header says 800"):
        read_idx(bomb)
    assert time.monotonic() - start < 2
    bomb.write_bytes(gzip.compress(_idx_header(0x08, (60000, 280, 280))) + member * 1024)
    with pytest.raises(UsageError, match="more than the 1 GiB"):
        read_idx(bomb)
    bomb.write_bytes(gzip.compress(_idx_header(0x08, (1, 28, 28)) + b"\0" * 784)[:-9])  # cut inside the stream
    with pytest.raises(UsageError, match="cannot read IDX file"):
        read_idx(bomb)


_TYPES = st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF])
_DIM = st.one_of(st.integers(0, 6), st.sampled_from([2**31, 2**32 - 1, 65536, 60000]))


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(zero=st.sampled_from([b"\0\0", b"\0\1", b"PK"]), type_code=_TYPES, ndim=st.integers(0, 12),
       dims=st.lists(_DIM, max_size=12), extra=st.integers(-8, 8), gz=st.booleans(), cut=st.integers(0, 60))
def test_fuzz_idx_headers(zero, type_code, ndim, dims, extra, gz, cut):
    """Whatever an IDX header says (magic, type, dimension count, dimensions up to 2**32-1) and however its data
    is cut or padded, read_idx returns the array the header describes or raises UsageError: never another
    exception, never a large allocation."""
    dims = (dims + [1] * 12)[:ndim]
    header = zero + bytes([type_code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(type_code, 1)
    want = int(np.prod(dims, dtype=object)) * itemsize if dims else 0
    body = b"\x07" * max(0, min(want, 4096) + extra)
    data = (header + body)[: max(0, len(header) + len(body) - cut)] if cut > 40 else header + body
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("x.idx.gz" if gz else "x.idx")
        path.write_bytes(gzip.compress(data) if gz else data)
        try:
            array = read_idx(path)
        except UsageError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < ONE_LINE_MAX
            return
    assert array.shape == tuple(dims) and array.nbytes == want == len(data) - len(header)


def test_idx_round_trip_still_reads(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x.idx", "x.idx.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)


# ------------------------------------------------------------------------------------------- endless http streams


class _Endless(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and then zeros for as long as the client reads."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        chunk = b"\0" * 2**20
        try:
            while True:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def _serve(handler) -> tuple[str, http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_endless_http_stream_is_cut_at_the_bound(tmp_path, capsys, monkeypatch):
    """A pack manifest served without end (a misconfigured server, or a hostile one) is cut at the manifest bound
    (64 MiB) with one line; an image URL for predict at the image bound (lowered here to 8 MiB to save time)."""
    url, server = _serve(_Endless)
    try:
        start = time.monotonic()
        code, err = in_process(capsys, "fit", "--dataset", "wds", "--data-train", f"{url}/pack",
                               "--model-prefix", str(tmp_path / "m"), "--run-dir", str(tmp_path / "runs"))
        line = one_line(err)
        assert code == 2 and f"manifest {url}/pack/manifest.json: larger than 64 MiB" in line
        assert "the download was cut there" in line
        from lit_imgcls.inputs import read_location

        monkeypatch.setitem(LIMITS, "image", 8 * 2**20)
        with pytest.raises(ReadRefused, match=r"image http://.*/x\.jpg: larger than 8 MiB"):
            read_location(f"{url}/x.jpg")
        assert time.monotonic() - start < 30
    finally:
        server.shutdown()
        server.server_close()


# -------------------------------------------------------------------------------------- a stop that I/O cannot block


def test_sigterm_stops_a_fit_blocked_reading_data(tmp_path, capsys):
    """A `fit` over an http pack whose shard server stalls (headers sent, then nothing) is blocked in a read that
    Lightning's graceful stop waits on for ever; the first SIGTERM still ends it within LIT_IMGCLS_STOP_GRACE
    seconds, with 143 and one line saying why, and the pack server sees no more requests."""
    data = _tree(tmp_path / "d", train=8, val=2)
    pack = tmp_path / "pack"
    code, err = in_process(capsys, "dataset", "pack", str(data / "train"), str(pack), "--format", "wds")
    assert code == 0, err
    asked = threading.Event()
    release = threading.Event()

    class Stalling(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(tmp_path), **kw)

        def do_GET(self):  # noqa: N802
            if not self.path.endswith(".tar"):
                return super().do_GET()
            self.send_response(200)
            self.send_header("Content-Length", str(10**6))
            self.end_headers()
            self.wfile.write(b"\0" * 100)
            self.wfile.flush()
            asked.set()
            release.wait(60)  # stalls: the client's read blocks

        def log_message(self, *args):
            pass

    url, server = _serve(Stalling)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "LIT_IMGCLS_STOP_GRACE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lit_imgcls", "fit", "--dataset", "wds", "--data-train", f"{url}/pack",
         "--network", "lenet", "--image-shape", "3,28,28", "--batch-size", "2", "--data-nthreads", "0",
         "--num-epochs", "1", "--progress-bar", "false", "--model-prefix", str(tmp_path / "m" / "m"),
         "--run-dir", str(tmp_path / "runs"), "--threads", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert asked.wait(120), proc.communicate(timeout=5)
        time.sleep(0.5)  # inside the blocking read
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 143, err[-3000:]
    assert 0.9 < took < 15, took
    assert "SIGTERM: the run did not reach the end of its step within 1 s (LIT_IMGCLS_STOP_GRACE)" in err
    assert "Traceback" not in err


def test_stop_grace_must_be_a_positive_number(tmp_path, capsys, monkeypatch):
    from lit_imgcls.callbacks.interrupt import GracefulInterrupt, stop_grace

    assert stop_grace() == 25.0
    monkeypatch.setenv("LIT_IMGCLS_STOP_GRACE", "0.5")
    assert GracefulInterrupt().grace == 0.5
    for bad in ("0", "-3", "soon", "nan", "inf"):
        monkeypatch.setenv("LIT_IMGCLS_STOP_GRACE", bad)
        with pytest.raises(UsageError, match="LIT_IMGCLS_STOP_GRACE=.*positive number of seconds"):
            stop_grace()




def test_ctrl_c_does_not_print_lightnings_received_sigterm(capsys, caplog):
    """The first Ctrl-C goes through Lightning's SIGTERM handler; its ``[rank: 0] Received SIGTERM: 15`` log line
    under lit-imgcls's own Ctrl-C line read as if something else had sent SIGTERM. Only the Ctrl-C line is left."""
    import logging
    import signal

    from lit_imgcls.callbacks.interrupt import GracefulInterrupt

    called = []

    def lightning_handler(signum, frame):  # what SignalConnector._sigterm_notifier_fn does first
        logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").info("[rank: 0] Received SIGTERM: 15")
        called.append(signum)

    previous = signal.signal(signal.SIGTERM, lightning_handler)
    try:
        with caplog.at_level(logging.INFO):
            GracefulInterrupt(grace=60)._on_sigint(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert called == [signal.SIGTERM]
    assert "Received SIGTERM" not in caplog.text
    assert "Ctrl-C: stopping after this step" in capsys.readouterr().err
    assert not logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").disabled


def test_loader_workers_forked_during_a_run_leave_ctrl_c_to_the_run():
    """A terminal's Ctrl-C reaches the whole process group. Loader workers forked during a run inherited the run's
    Ctrl-C handler, printed their own "Ctrl-C: stopping" and exited 130, and the run died with a DataLoader
    traceback instead of saving PREFIX-stop.ckpt. A process forked between setup and teardown ignores SIGINT."""
    import os
    import signal

    from lit_imgcls.callbacks.interrupt import GracefulInterrupt

    def forked_child_ignores_sigint() -> bool:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else 1)
        return os.waitpid(pid, 0)[1] == 0

    callback = GracefulInterrupt(grace=60)
    assert not forked_child_ignores_sigint()
    callback.setup(None, None, "fit")
    try:
        assert forked_child_ignores_sigint()
        assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # the run's own process keeps handling it
    finally:
        callback.teardown(None, None, "fit")
    assert not forked_child_ignores_sigint()


def test_loader_workers_of_a_run_ignore_sigterm_sent_to_the_whole_job():
    """SLURM's SIGTERM reaches every process of the job; PyTorch's worker loop makes a worker die of it, which failed
    the run with a DataLoader traceback. The run's loaders (folder, wds) pass ``loader_worker_init``, which, in a
    worker forked during a run, ignores SIGTERM (after PyTorch's own handler is in place); elsewhere it does nothing."""
    import os
    import signal

    from lit_imgcls.callbacks.interrupt import GracefulInterrupt, loader_worker_init
    from lit_imgcls.data.folder import FolderDataModule

    def child_ignores_sigterm_after_init() -> bool:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as PyTorch's worker loop leaves it: dying of it
            loader_worker_init(0)
            os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN else 1)
        return os.waitpid(pid, 0)[1] == 0

    assert not child_ignores_sigterm_after_init()
    callback = GracefulInterrupt(grace=60)
    callback.setup(None, None, "fit")
    try:
        assert child_ignores_sigterm_after_init()
    finally:
        callback.teardown(None, None, "fit")
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    import inspect

    from lit_imgcls.data.formats import wds

    assert "worker_init_fn=loader_worker_init" in inspect.getsource(wds)
    assert "worker_init_fn=loader_worker_init" in inspect.getsource(FolderDataModule)
