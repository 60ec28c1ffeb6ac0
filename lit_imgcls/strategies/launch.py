"""Start one command as N workers, locally or over ssh, and keep them together: one fails, all stop.

Each worker is one Lightning "node" with one device: it gets ``NODE_RANK`` = its rank, ``WORLD_SIZE`` = N,
``LOCAL_RANK`` = 0 and the rendezvous ``MASTER_ADDR``/``MASTER_PORT``, which is what Lightning reads to run
``Trainer(num_nodes=N, devices=1)`` as one DDP job. Workers sharing a host still count as separate nodes.

Remote workers run through ``ssh`` with every word shell-quoted, under a small wrapper that kills the worker's
process group when the ssh session's stdin closes: an ssh client without a tty cannot otherwise stop the
remote process, so closing the pipe (or the connection dropping) is the stop signal.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from lit_imgcls.errors import UsageError

DEFAULT_PORT = 29500
TAIL_LINES = 10

# One DNS label: letters, digits and inner dashes. A leading dash would read as an ssh option.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# An IPv6 zone id: a Linux interface name (at most 15 characters, IFNAMSIZ) or an interface number.
_ZONE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Host:
    """A machine to run workers on.

    Attributes:
        name: hostname or IPv4/IPv6 literal, validated (nothing in it can reach a shell or ssh's option parser).
        port: ssh port; None leaves it to ssh (22 or the user's ssh config).
    """

    name: str
    port: int | None = None

    @property
    def rsync_name(self) -> str:
        """The name as rsync's ``host:path`` wants it: an IPv6 literal in brackets."""
        return f"[{self.name}]" if ":" in self.name else self.name


@dataclass(frozen=True)
class Worker:
    """One process of the job: its rank, where it runs and the variables it gets on top of its environment."""

    rank: int
    host: Host
    env: dict[str, str] = field(hash=False)


def _shown(text: str) -> str:
    """``text`` quoted for a message, at most 64 characters of it (a hostfile line can be any length)."""
    return repr(text[:64]) + ("..." if len(text) > 64 else "")


def check_hostname(name: str, where: str = "host") -> str:
    """Return ``name`` if it is a hostname, an IPv4 or an IPv6 literal, else raise a one-line UsageError.

    What passes holds letters, digits and ``.-:`` only, plus, for a link-local IPv6 address, one ``%`` and a zone:
    an interface name (``fe80::1%eth0``: letters, digits, ``_.-``, at most 15, no leading dash) or number. Nothing
    in it can reach a shell (the name is a word of ssh's and rsync's argv and of ``MASTER_ADDR``) or be read as an
    ssh option (no leading ``-``), whatever :mod:`ipaddress` would accept as a scope id (it takes anything).

    Raises:
        UsageError: naming ``where`` (the hostfile line) and quoting at most a short prefix of ``name``.
    """
    if len(name) <= 253 and name.isascii():
        address, percent, zone = name.partition("%")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is not None and (not percent or (ip.version == 6 and _ZONE.fullmatch(zone))):
            return name
        if ip is None and not percent and _HOSTNAME.fullmatch(name):
            return name
    raise UsageError(f"{where}: bad hostname {_shown(name)} (letters, digits, dots and dashes, or an IP address; an IPv6 "
                     "zone as %IFNAME like fe80::1%eth0)")


def parse_host(text: str, where: str = "host") -> Host:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 literal -> Host."""
    name, port = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise UsageError(f"{where}: bad host entry {_shown(text)} (write [IPv6]:port)")
        name, port = text[1:close], text[close + 2:] if close + 1 < len(text) else None
        if ":" not in name:
            raise UsageError(f"{where}: brackets are only for IPv6 addresses, got {_shown(text)}")
    elif text.count(":") == 1:
        name, port = text.split(":")
    if port is not None and (not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535):
        raise UsageError(f"{where}: bad ssh port {_shown(port)} in {_shown(text)} (1-65535)")
    return Host(check_hostname(name, where), int(port) if port is not None else None)


def read_hostfile(path: str | os.PathLike) -> list[Host]:
    """Hosts from a file of ``host[:port]`` lines; blank lines and ``#`` comments are skipped."""
    from lit_imgcls.bounded_read import ReadRefused, read_text

    if not os.path.lexists(path):
        raise UsageError(f"hostfile not found: {path}")
    try:  # a regular file of at most 1 MiB: a FIFO or /dev/zero as -H would block or never end
        text = read_text(path, "hostfile")
    except ReadRefused as exc:
        raise UsageError(f"cannot read hostfile {path}: {exc.reason}") from None
    hosts = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry.split()) > 1:
            raise UsageError(f"{path}:{number}: one host per line, got {_shown(entry)}")
        hosts.append(parse_host(entry, f"{path}:{number}"))
    if not hosts:
        raise UsageError(f"hostfile {path} names no hosts")
    return hosts


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``K=V`` strings -> a dict; K must be a shell identifier, since it ends up in ``env K=V`` remotely."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise UsageError(f"--env {item!r}: expected NAME=VALUE with NAME a letter or _ then letters, digits, _")
        env[key] = value
    return env


def free_port() -> int:
    """A TCP port free on this machine now (the kernel's pick), for a local job's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plan(num_workers: int, hosts: Sequence[Host], master_addr: str, master_port: int,
         extra_env: dict[str, str] | None = None) -> list[Worker]:
    """Ranks round-robin over ``hosts`` (rank r on hosts[r % len(hosts)]), each with its rendezvous variables."""
    if num_workers < 1:
        raise UsageError(f"number of workers must be at least 1, got {num_workers}")
    workers = []
    for rank in range(num_workers):
        env = {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "NODE_RANK": str(rank),
               "WORLD_SIZE": str(num_workers), "LOCAL_RANK": "0", **(extra_env or {})}
        workers.append(Worker(rank, hosts[rank % len(hosts)], env))
    return workers


# ---- ssh -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ssh:
    """How to reach hosts: extra ``-o`` options and an identity file, shared by the workers and rsync."""

    options: tuple[str, ...] = ()
    identity: str | None = None

    def argv(self, host: Host) -> list[str]:
        """The ssh client's words up to (not including) the destination."""
        # BatchMode: a password prompt would hang a worker forever; -T: no tty, so output stays two clean pipes.
        words = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
        if host.port is not None:
            words += ["-p", str(host.port)]
        for option in self.options:
            words += ["-o", option]
        if self.identity:
            words += ["-i", self.identity]
        return words


def remote_script(workdir: str, env: dict[str, str], command: Sequence[str]) -> str:
    """The shell text a remote host runs: cd, then the command, stopped when the session's stdin closes.

    The command runs in its own process group (setsid), so the stop reaches whatever it started. stdin is kept
    on fd 3 for the watcher only: a background job's stdin would otherwise be /dev/null and read EOF at once.
    """
    run = shlex.join(["setsid", "env", *(f"{k}={v}" for k, v in env.items()), *command])
    return "\n".join([
        f"cd {shlex.quote(workdir)} || exit 127",
        "exec 3<&0",
        f"{run} </dev/null 3<&- &",
        "pid=$!",
        '( while read -r _; do :; done <&3; kill -TERM "-$pid" ) >/dev/null 2>&1 &',
        "watcher=$!",
        "exec 3<&-",
        'wait "$pid"; status=$?',
        'kill "$watcher" 2>/dev/null',
        'exit "$status"',
    ])


def ssh_argv(ssh: Ssh, worker: Worker, workdir: str, command: Sequence[str]) -> list[str]:
    """The local argv that runs ``command`` for ``worker`` on its host."""
    return [*ssh.argv(worker.host), "--", worker.host.name, remote_script(workdir, worker.env, command)]


SYNC_MARKER = ".lit-imgcls-sync"  # in a --sync-dst-dir that lit-imgcls made: only such a folder is mirrored into


def probe_argv(ssh: Ssh, host: Host, dst: str) -> list[str]:
    """The command that tells what ``dst`` is on ``host``: nothing (absent), or ``lit-imgcls-dst HOSTNAME DEV:INODE
    MARKED NONEMPTY`` for a folder, or ``lit-imgcls-dst-file`` for anything else."""
    script = (f"d={shlex.quote(dst)}; "
              'if [ -d "$d" ]; then '
              f'm=0; [ -e "$d/{SYNC_MARKER}" ] && m=1; n=0; [ -n "$(ls -A -- "$d")" ] && n=1; '
              'echo "lit-imgcls-dst $(uname -n) $(stat -c %d:%i -- "$d") $m $n"; '
              'elif [ -e "$d" ] || [ -L "$d" ]; then echo lit-imgcls-dst-file; fi')
    return [*ssh.argv(host), "--", host.name, script]


def sync_argvs(ssh: Ssh, host: Host, src: str, dst: str) -> list[list[str]]:
    """Commands that make ``dst`` on ``host`` a copy of the local folder ``src``: mkdir -p and the marker, then
    rsync --delete (which keeps the marker)."""
    mkdir = [*ssh.argv(host), "--", host.name,
             f"mkdir -p -- {shlex.quote(dst)} && : > {shlex.quote(dst.rstrip('/') + '/' + SYNC_MARKER)}"]
    # The trailing slashes copy src's contents into dst; --protect-args keeps the remote path away from the
    # remote shell (older rsync would word-split it).
    rsync = ["rsync", "-a", "--delete", f"--filter=P /{SYNC_MARKER}", "--protect-args", "-e", shlex.join(ssh.argv(host)),
             f"{src.rstrip('/')}/", f"{host.rsync_name}:{dst.rstrip('/') or '/'}/"]
    return [mkdir, rsync]


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as exc:
        raise UsageError(f"{what}: {argv[0]}: {exc.strerror}") from None
    if res.returncode != 0:
        last = " ".join(res.stderr.split()[-40:]) or f"exit code {res.returncode}"
        raise UsageError(f"{what} ({argv[0]} failed: {last})")
    return res


def sync(ssh: Ssh, hosts: Sequence[Host], src: str, dst: str, out: IO[str] = sys.stderr) -> None:
    """Copy ``src`` to ``dst`` on each distinct host in turn; a failure is one UsageError naming the host.

    ``dst`` is mirrored (``rsync --delete``) only when it is new, empty, or a copy lit-imgcls made before (it holds
    :data:`SYNC_MARKER`); a folder with other files is refused, since mirroring would delete them. Where ``dst`` is
    ``src`` itself (the same machine and folder: the default ``--sync-dst-dir``), nothing is copied.

    Raises:
        UsageError: a destination that is not lit-imgcls's, or a host where probing or copying failed.
    """
    here = (socket.gethostname(), "{0.st_dev}:{0.st_ino}".format(os.stat(src)))
    for host in dict.fromkeys(hosts):
        what = f"cannot sync {src} to {host.name}:{dst}"
        probe = _run(probe_argv(ssh, host, dst), what).stdout.split()
        if probe[:1] == ["lit-imgcls-dst-file"]:
            raise UsageError(f"{what}: it exists and is not a folder; give --sync-dst-dir a new or empty folder")
        if probe[:1] == ["lit-imgcls-dst"] and len(probe) == 5:
            _, name, ident, marked, nonempty = probe
            if (name, ident) == here:
                print(f"launch: {host.name}:{dst} is {src} itself: nothing to sync", file=out, flush=True)
                continue
            if marked != "1" and nonempty == "1":
                raise UsageError(f"{what}: that folder holds files, and lit-imgcls did not make it (no {SYNC_MARKER} "
                                 "in it); --sync-dir mirrors with rsync --delete, which would delete them: give "
                                 "--sync-dst-dir a new or empty folder")
        for argv in sync_argvs(ssh, host, src, dst):
            _run(argv, what)
        print(f"launch: synced {src} to {host.name}:{dst}", file=out, flush=True)


# ---- supervision -----------------------------------------------------------------------------------------


class WorkerFailed(Exception):
    """A worker exited non-zero or was killed; the others have been stopped."""

    def __init__(self, worker: Worker, returncode: int, tail: Sequence[str], remote: bool):
        self.worker, self.returncode, self.tail = worker, returncode, list(tail)
        if returncode < 0:
            how = f"was killed by {signal.Signals(-returncode).name}"
        elif remote and returncode == 255:
            how = f"exited with code 255 (ssh could not reach {worker.host.name}, or the worker returned 255)"
        elif remote and returncode > 128 and returncode - 128 in signal.valid_signals():
            how = f"exited with code {returncode} (killed by {signal.Signals(returncode - 128).name} on its host)"
        else:
            how = f"exited with code {returncode}"
        lines = "\n".join(f"  {line}" for line in self.tail) or "  (no output)"
        super().__init__(f"rank {worker.rank} on {worker.host.name} {how}; stopped the other workers. "
                         f"Its last {len(self.tail)} lines:\n{lines}")

    @property
    def exit_code(self) -> int:
        """What launch exits with: the worker's own code, or 128+signal as a shell reports a kill."""
        return self.returncode if self.returncode > 0 else 128 - self.returncode


class Terminated(Exception):
    """launch itself got SIGTERM; the workers have been stopped."""


@dataclass
class _Running:
    worker: Worker
    proc: subprocess.Popen
    tail: deque
    readers: list[threading.Thread]


@dataclass(frozen=True)
class Spec:
    """What to start for one worker: its argv and environment, and whether it is an ssh client."""

    worker: Worker
    argv: list[str]
    env: dict[str, str]
    remote: bool


def worker_line(raw: bytes) -> str | None:
    """What of one line a worker wrote launch shows after the rank prefix, or None for nothing.

    A progress bar redraws its line after carriage returns: only the text a terminal would end up showing (the
    last part) is kept, since the parts before it would draw over the prefix. A line that is blank (Lightning
    ends some notices with an empty line; Rich pads its tables with spaces) is dropped: ``[rank 0]`` alone tells
    nothing.
    """
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    parts = [p.rstrip() for p in text.split("\r")]
    shown = next((p for p in reversed(parts) if p.strip()), "")
    return shown or None


def _pump(pipe: IO[bytes], prefix: str, sink: IO[str], tail: deque, lock: threading.Lock) -> None:
    for raw in iter(pipe.readline, b""):
        line = worker_line(raw)
        if line is None:
            continue
        with lock:
            tail.append(f"{prefix}{line}")
            sink.write(f"{prefix}{line}\n")
            sink.flush()
    pipe.close()


def _start(spec: Spec, out: IO[str], err: IO[str], lock: threading.Lock) -> _Running:
    # Own session: a terminal's Ctrl-C reaches launch only, which then stops every worker once, in order.
    try:
        proc = subprocess.Popen(spec.argv, env=spec.env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.PIPE if spec.remote else subprocess.DEVNULL)
    except OSError as exc:  # not found, not executable: the user's command (or ssh) is the problem
        raise UsageError(f"cannot start rank {spec.worker.rank}: {spec.argv[0]}: {exc.strerror}") from None
    tail: deque = deque(maxlen=TAIL_LINES)
    prefix = f"[rank {spec.worker.rank}] "
    readers = [threading.Thread(target=_pump, args=(pipe, prefix, sink, tail, lock), daemon=True)
               for pipe, sink in ((proc.stdout, out), (proc.stderr, err))]
    for t in readers:
        t.start()
    return _Running(spec.worker, proc, tail, readers)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(running: Sequence[_Running], grace: float) -> None:
    """Ask every worker to stop, wait up to ``grace`` seconds, then kill what is left."""
    for r in running:
        if r.proc.stdin is not None:
            # An ssh worker: closing stdin is the remote wrapper's stop signal.
            try:
                r.proc.stdin.close()
            except OSError:
                pass
        else:
            _signal_group(r.proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(r.proc.poll() is None for r in running):
        time.sleep(0.05)
    for r in running:
        # Also the groups whose leader is gone: a worker's children must not outlive the job.
        _signal_group(r.proc, signal.SIGKILL)
        try:
            r.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class _SigtermRaises:
    """While active in the main thread, SIGTERM raises Terminated so that the workers get stopped."""

    def __enter__(self) -> None:
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise Terminated("launch got SIGTERM; stopped all workers")


def _ignore_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def supervise(specs: Sequence[Spec], grace: float = 10.0, out: IO[str] = sys.stdout,
              err: IO[str] = sys.stderr) -> None:
    """Run the workers to the end, their lines prefixed ``[rank K] ``.

    Returns when all exit 0. Raises WorkerFailed when one exits otherwise, Terminated on SIGTERM, and lets
    KeyboardInterrupt through; in each case only after every worker is stopped.
    """
    lock = threading.Lock()
    running: list[_Running] = []
    with _SigtermRaises():
        try:
            for spec in specs:
                running.append(_start(spec, out, err, lock))
            failed = _wait_first_failure(running)
        except BaseException:
            _ignore_sigterm()  # a second SIGTERM must not cut the stop short
            _stop(running, grace)
            raise
        if failed is not None:
            _ignore_sigterm()
            _stop(running, grace)
            for t in failed.readers:
                t.join(timeout=2)  # its last lines, if nothing else still holds its pipes
            with lock:
                tail = list(failed.tail)
            raise WorkerFailed(failed.worker, failed.proc.returncode, tail, failed.proc.stdin is not None)
        for r in running:
            for t in r.readers:
                t.join(timeout=5)


def _wait_first_failure(running: Sequence[_Running]) -> _Running | None:
    while True:
        codes = [r.proc.poll() for r in running]
        for r, code in zip(running, codes):
            if code not in (None, 0):
                return r
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.05)


def local_specs(workers: Sequence[Worker], command: Sequence[str]) -> Iterator[Spec]:
    """Each worker as a child process here, with this environment plus its variables.

    Workers on one machine share its cores: each gets ``OMP_NUM_THREADS`` = cores // workers unless it is set
    already. Without it, torch (and Lightning's launcher, which sets it from the devices of one worker) would give
    every worker all cores, and on a loaded CPU each all-reduce waits for a descheduled peer.
    """
    threads = str(max(1, (os.cpu_count() or 1) // max(1, len(workers))))
    for w in workers:
        env = {**os.environ, **w.env}
        env.setdefault("OMP_NUM_THREADS", threads)
        yield Spec(w, list(command), env, remote=False)


def ssh_specs(workers: Sequence[Worker], command: Sequence[str], ssh: Ssh, workdir: str) -> Iterator[Spec]:
    """Each worker as an ssh client running it in ``workdir`` on its host."""
    for w in workers:
        yield Spec(w, ssh_argv(ssh, w, workdir, command), dict(os.environ), remote=True)
