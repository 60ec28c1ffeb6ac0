"""``lit-imgcls launch``: real worker processes, locally and over real ssh between two network namespaces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from lit_imgcls.errors import UsageError
from lit_imgcls.strategies import launch as engine

INJECTION = "'; touch {tmp}/pwned #"
K_VALUE = "v'; touch x"  # an --env value is quoted like any argument
ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "WORLD_SIZE", "LOCAL_RANK", "EXTRA")


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie nobody reaps counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _wait_files(paths: list[Path], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() and p.read_text().strip() for p in paths):
        assert time.monotonic() < deadline, f"workers did not start: {[str(p) for p in paths if not p.exists()]}"
        time.sleep(0.05)


# A worker that records its pid, then fails (rank FAIL_RANK, after printing lines) or sleeps.
SLEEPER = """
import os, sys, time
from pathlib import Path
rank = int(os.environ["NODE_RANK"])
Path(sys.argv[1], f"pid.{rank}").write_text(str(os.getpid()))
if rank == int(sys.argv[2]):
    while not all(Path(sys.argv[1], f"pid.{r}").exists() for r in range(int(os.environ["WORLD_SIZE"]))):
        time.sleep(0.05)
    for i in range(15):
        print(f"worker line {i}", flush=True)
    sys.exit(3)
time.sleep(600)
"""


# ---- local launcher --------------------------------------------------------------------------------------


def test_local_workers_get_ranks_env_and_prefixed_output():
    code = f"import os, json; print(json.dumps({{k: os.environ.get(k) for k in {ENV_KEYS!r}}}))"
    res = run_cli("launch", "-n", "3", "--env", "EXTRA=x=1", "--", sys.executable, "-c", code, timeout=60)
    assert res.returncode == 0, res.stderr
    seen = {}
    for line in res.stdout.splitlines():
        prefix, _, payload = line.partition("] ")
        assert prefix.startswith("[rank "), line
        seen[int(prefix[len("[rank "):])] = json.loads(payload)
    assert sorted(seen) == [0, 1, 2]
    ports = {env["MASTER_PORT"] for env in seen.values()}
    assert len(ports) == 1 and 0 < int(ports.pop()) < 65536
    for rank, env in seen.items():
        assert env["MASTER_ADDR"] == "127.0.0.1" and env["NODE_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == "3" and env["LOCAL_RANK"] == "0" and env["EXTRA"] == "x=1"


def test_stderr_is_prefixed_and_fixed_port_is_used():
    code = "import os, sys; print('err', os.environ['MASTER_PORT'], file=sys.stderr)"
    res = run_cli("launch", "-n", "2", "--port", "29999", "--", sys.executable, "-c", code, timeout=60)
    assert res.returncode == 0, res.stderr
    assert sorted(line for line in res.stderr.splitlines() if "err" in line) == ["[rank 0] err 29999",
                                                                                 "[rank 1] err 29999"]


def test_failing_worker_stops_the_others_and_is_named(tmp_path):
    start = time.monotonic()
    res = run_cli("launch", "-n", "3", "--", sys.executable, "-c", SLEEPER, str(tmp_path), "1", timeout=120)
    elapsed = time.monotonic() - start
    assert res.returncode == 3, res.stderr
    assert elapsed < 15, f"launch took {elapsed:.1f} s to give up"
    message = res.stderr[res.stderr.index("lit-imgcls launch: error:"):]
    assert "rank 1 on localhost exited with code 3" in message
    assert "[rank 1] worker line 14" in message and "[rank 1] worker line 5" in message
    assert "worker line 4\n" not in message  # only the last 10 lines
    pids = [int((tmp_path / f"pid.{r}").read_text()) for r in range(3)]
    assert _wait_gone(pids, timeout=5) == []


def test_sigterm_to_launch_stops_all_workers(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "lit_imgcls", "launch", "-n", "2", "--", sys.executable, "-c",
                             SLEEPER, str(tmp_path), "-1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        pid_files = [tmp_path / f"pid.{r}" for r in range(2)]
        _wait_files(pid_files)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "stopped all workers" in err
    assert _wait_gone([int(p.read_text()) for p in pid_files], timeout=5) == []


def test_injection_argument_arrives_literally_local(tmp_path):
    arg = INJECTION.format(tmp=tmp_path)
    res = run_cli("launch", "-n", "1", "--", sys.executable, "-c", "import sys; print(repr(sys.argv[1]))", arg,
                  timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"[rank 0] {arg!r}"
    assert not (tmp_path / "pwned").exists()


# ---- usage errors: one line, exit 2 ---------------------------------------------------------------------


@pytest.mark.parametrize("line", ["bad_host", "-oProxyCommand=touch", "a;b", "host:99999", "host:22x", "$(id)",
                                  "user@host", "[::1", "[host]:22", "a..b", "host name", "host:"])
def test_bad_hostfile_lines_exit_2_with_one_line(tmp_path, line):
    (tmp_path / "hosts").write_text(f"# cluster\n\ngood-host.example:2222\n{line}\n")
    res = run_cli("launch", "-n", "2", "-H", str(tmp_path / "hosts"), "--", "true", timeout=60)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("lit-imgcls: error:") and "hosts:4" in res.stderr, res.stderr


@pytest.mark.parametrize("args, words", [
    (["-n", "2", "--"], "no command"),
    (["-n", "2", "python", "x.py"], "goes after --"),
    (["-n", "0", "--", "true"], "at least 1"),
    (["-H", "/nonexistent/hosts", "--", "true"], "hostfile not found"),
    (["--env", "1BAD=x", "--", "true"], "NAME=VALUE"),
    (["--env", "NOVALUE", "--", "true"], "NAME=VALUE"),
    (["--launcher", "mpi", "--", "true"], "local or ssh"),
    (["--sync-dir", ".", "--", "true"], "need --launcher ssh"),
])
def test_bad_usage_exits_2_with_one_line(args, words):
    res = run_cli("launch", *args, timeout=60)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr


def test_hostfile_parsing_and_round_robin(tmp_path):
    (tmp_path / "hosts").write_text("node-a.cluster:2222   # first\n\n10.0.0.2\n::1\n[fe80::1]:22\n")
    hosts = engine.read_hostfile(tmp_path / "hosts")
    assert hosts == [engine.Host("node-a.cluster", 2222), engine.Host("10.0.0.2"), engine.Host("::1"),
                     engine.Host("fe80::1", 22)]
    workers = engine.plan(6, hosts[:2], hosts[0].name, 29500)
    assert [w.host.name for w in workers] == ["node-a.cluster", "10.0.0.2"] * 3
    assert [w.env["NODE_RANK"] for w in workers] == [str(r) for r in range(6)]
    assert {w.env["LOCAL_RANK"] for w in workers} == {"0"} and {w.env["MASTER_ADDR"] for w in workers} == {"node-a.cluster"}
    with pytest.raises(UsageError, match="names no hosts"):
        (tmp_path / "empty").write_text("# nothing\n")
        engine.read_hostfile(tmp_path / "empty")


GOOD_HOSTS = ["node-a.cluster", "10.0.0.2", "::1", "fe80::1%eth0", "fe80::1%2", "fe80::1%enp0s31f6.100",
              "::ffff:10.0.0.2", "a" * 63 + ".example."]
# Each would reach ssh or a remote shell as something else than a host: ipaddress takes any text after % as an
# IPv6 zone id, so the zone is where metacharacters hide.
BAD_HOSTS = ["fe80::1%$(touch pwned)", "fe80::1%`id`", "fe80::1%-oProxyCommand=sh", "fe80::1%eth0;id", "fe80::1%",
             "fe80::1%%eth0", "fe80::1%eth0%1", "fe80::1%e\nx", "fe80::1%" + "e" * 16, "fe80::1%-eth0",
             "10.0.0.2%eth0", "host%eth0", "-oProxyCommand=sh", "h\u00f4st", "host\u200b", "1.2.3.4\x00",
             "a" * 64, ("a." * 127) + "ab", "h|x", "h&x", "h>x", "h'x", "h\\x", "h,x", "h=x", "h/x", "~h", "h*"]


def test_host_names_admit_no_shell_or_ssh_metacharacters():
    for name in GOOD_HOSTS:
        assert engine.check_hostname(name) == name
    assert engine.parse_host("[fe80::1%eth0]:2222") == engine.Host("fe80::1%eth0", 2222)
    for name in BAD_HOSTS:
        for text in (name, f"[{name}]:22"):
            with pytest.raises(UsageError) as info:
                engine.parse_host(text, "hosts:3")
            message = str(info.value)
            assert message.startswith("hosts:3: ") and "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize("line", ["fe80::1%$(touch${IFS}pwned)", "[fe80::1%-oProxyCommand=sh]:22"])
def test_a_zone_id_with_metacharacters_in_a_hostfile_exits_2(tmp_path, line):
    (tmp_path / "hosts").write_text(f"{line}\n")
    res = run_cli("launch", "-n", "1", "-H", str(tmp_path / "hosts"), "--", "true", cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "bad hostname" in res.stderr and "hosts:1" in res.stderr and not (tmp_path / "pwned").exists()


# ---- the remote wrapper, run by a local shell as sshd would run it ---------------------------------------


def _run_wrapper(shell: str, script: str) -> subprocess.CompletedProcess:
    """Run the wrapper with its stdin held open, as launch holds an ssh session's (closing it stops the worker)."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen([shell, "-c", script], stdin=read_end, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd="/")
        os.close(read_end)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(write_end)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_remote_script_keeps_arguments_literal(tmp_path, shell):
    arg = INJECTION.format(tmp=tmp_path)
    others = [f"$(touch {tmp_path}/pwned2)", f"`touch {tmp_path}/pwned3`", "a b\nc", "*"]
    ssh_words = engine.ssh_argv(engine.Ssh(), engine.Worker(0, engine.Host("h"), {"K": K_VALUE}),
                                str(tmp_path), [sys.executable, "-c", ("import os, sys; print(repr(sys.argv[1:]), "
                                                "repr(os.environ['K']), os.getcwd())"), arg, *others])
    res = _run_wrapper(shell, ssh_words[-1])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{[arg, *others]!r} {K_VALUE!r} {tmp_path}"
    assert not any((tmp_path / name).exists() for name in ("pwned", "pwned2", "pwned3", "x"))


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_remote_script_stops_worker_when_stdin_closes(tmp_path, shell):
    code = "import os, time, sys; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
    script = engine.remote_script(str(tmp_path), {}, [sys.executable, "-c", code, str(tmp_path / "pid")])
    proc = subprocess.Popen([shell, "-c", script], stdin=subprocess.PIPE, start_new_session=True)
    try:
        _wait_files([tmp_path / "pid"])
        worker = int((tmp_path / "pid").read_text())
        time.sleep(0.3)
        assert proc.poll() is None and _alive(worker)
        proc.stdin.close()
        assert proc.wait(timeout=10) == 143
        assert _wait_gone([worker], timeout=5) == []
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None


def test_remote_script_passes_exit_code_and_finishes(tmp_path):
    script = engine.remote_script(str(tmp_path), {}, [sys.executable, "-c", "import sys; sys.exit(7)"])
    assert _run_wrapper("sh", script).returncode == 7


# ---- two hosts: sshd in two network namespaces joined by a veth pair ------------------------------------

ADDR_A, ADDR_B, SSH_PORT = "10.77.0.1", "10.77.0.2", 2222


def _need_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    for tool in ("ip", "ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup.sh installs openssh-client rsync iproute2)"
    if not Path("/usr/sbin/sshd").exists():
        return "needs /usr/sbin/sshd (scripts/setup.sh installs openssh-server)"
    return None


class TwoHosts:
    """Namespaces A and B; launch runs inside A, which reaches itself and B over ssh."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        tag = f"{os.getpid()}x{time.monotonic_ns() % 100000}"
        self.ns = [f"ltA{tag}", f"ltB{tag}"]
        self.sshd: list[subprocess.Popen] = []
        self.hostfile = tmp / "hosts"
        self.hostfile.write_text(f"# two namespaces\n{ADDR_A}:{SSH_PORT}\n{ADDR_B}:{SSH_PORT}\n")
        self.key = tmp / "id_ed25519"

    def up(self) -> None:
        sh = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=30)
        for ns in self.ns:
            sh("ip", "netns", "add", ns)
        # The same interface name on both sides, so one GLOO_SOCKET_IFNAME serves every rank.
        sh("ip", "link", "add", "lt0", "netns", self.ns[0], "type", "veth", "peer", "name", "lt0", "netns", self.ns[1])
        for ns, addr in zip(self.ns, (ADDR_A, ADDR_B)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "lt0")
            sh("ip", "-n", ns, "link", "set", "lt0", "up")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.tmp / "host_key"))
        shutil.copy(f"{self.key}.pub", self.tmp / "authorized_keys")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        for ns, addr in zip(self.ns, (ADDR_A, ADDR_B)):
            config = self.tmp / f"sshd_{ns}.conf"
            config.write_text("\n".join([
                f"ListenAddress {addr}:{SSH_PORT}", f"HostKey {self.tmp / 'host_key'}",
                f"PidFile {self.tmp / f'sshd_{ns}.pid'}", f"AuthorizedKeysFile {self.tmp / 'authorized_keys'}",
                "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", ""]))
            with open(self.tmp / f"sshd_{ns}.log", "w") as log:  # the child keeps its own copy of the handle
                self.sshd.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        for ns in self.ns:
            log = self.tmp / f"sshd_{ns}.log"
            while "Server listening" not in log.read_text():
                assert time.monotonic() < deadline, f"sshd in {ns} did not start: {log.read_text()}"
                time.sleep(0.05)

    def down(self) -> None:
        for proc in self.sshd:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in self.ns:
            # Deleting a namespace also deletes its end of the veth pair (and so the pair).
            pids = subprocess.run(["ip", "netns", "pids", ns], check=False, capture_output=True, text=True).stdout
            for pid in pids.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

    def launch_argv(self, *args: str) -> list[str]:
        """``lit-imgcls launch`` run inside namespace A, with ssh pointed at this test's keys."""
        return ["ip", "netns", "exec", self.ns[0], sys.executable, "-m", "lit_imgcls", "launch",
                "-H", str(self.hostfile), "--launcher", "ssh", "--ssh-identity", str(self.key),
                "--ssh-option", f"UserKnownHostsFile={self.tmp / 'known_hosts'}", "IdentitiesOnly=yes",
                "--ssh-option", "LogLevel=ERROR", "ConnectTimeout=10", *args]


@pytest.fixture
def two_hosts(tmp_path):
    reason = _need_netns()
    if reason:
        pytest.skip(reason)
    hosts = TwoHosts(tmp_path)
    try:
        hosts.up()
        yield hosts
    finally:
        hosts.down()


WHERE = f"""
import os, sys, json
print(json.dumps({{"addr": os.environ["SSH_CONNECTION"].split()[2], "cwd": os.getcwd(), "argv": sys.argv[1:],
                  "env": {{k: os.environ.get(k) for k in {ENV_KEYS!r}}}, "files": sorted(os.listdir("."))}}))
"""


@pytest.mark.slow
def test_ssh_two_hosts_sync_env_and_literal_arguments(two_hosts, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "remote" / "job"
    (src / "sub").mkdir(parents=True)
    (src / "where.py").write_text(WHERE)
    (src / "sub" / "data.txt").write_text("payload")
    # A folder lit-imgcls did not make is never mirrored into: rsync --delete would empty it of the user's files.
    mine = tmp_path / "home-of-the-user"
    mine.mkdir()
    (mine / "thesis.tex").write_text("not lit-imgcls's")
    res = subprocess.run(two_hosts.launch_argv("-n", "2", "--sync-dir", str(src), "--sync-dst-dir", str(mine), "--",
                                               sys.executable, "where.py"),
                         check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 2 and "lit-imgcls did not make it" in res.stderr, res.stdout + res.stderr
    assert sorted(os.listdir(mine)) == ["thesis.tex"]
    # The default destination is the source's own path: on the same machine and folder nothing is copied.
    res = subprocess.run(two_hosts.launch_argv("-n", "1", "--sync-dir", str(src), "--", sys.executable, "where.py"),
                         check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=src)
    assert res.returncode == 0 and f"is {src} itself: nothing to sync" in res.stderr, res.stdout + res.stderr
    assert sorted(os.listdir(src)) == ["sub", "where.py"]
    # A copy an earlier launch made (its marker) is mirrored: a file that is not in src any more goes.
    dst.mkdir(parents=True)
    (dst / ".lit-imgcls-sync").write_text("")
    (dst / "stale.txt").write_text("rsync --delete removes me")
    arg = INJECTION.format(tmp=tmp_path)
    res = subprocess.run(two_hosts.launch_argv("-n", "3", "--sync-dir", str(src), "--sync-dst-dir", str(dst),
                                               "--env", "EXTRA=v w", "--", sys.executable, "where.py", arg, "$HOME"),
                         check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"synced {src} to {ADDR_B}:{dst}" in res.stderr
    seen = {}
    for line in res.stdout.splitlines():
        prefix, _, payload = line.partition("] ")
        seen[int(prefix[len("[rank "):])] = json.loads(payload)
    assert [seen[r]["addr"] for r in range(3)] == [ADDR_A, ADDR_B, ADDR_A]  # round-robin over the two hosts
    for rank, info in seen.items():
        assert info["cwd"] == str(dst) and info["files"] == [".lit-imgcls-sync", "sub", "where.py"]  # stale file deleted
        assert info["argv"] == [arg, "$HOME"]
        assert info["env"] == {"MASTER_ADDR": ADDR_A, "MASTER_PORT": "29500", "NODE_RANK": str(rank),
                               "WORLD_SIZE": "3", "LOCAL_RANK": "0", "EXTRA": "v w"}
    assert (dst / "sub" / "data.txt").read_text() == "payload"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_ssh_worker_killed_stops_the_other_host(two_hosts, tmp_path):
    proc = subprocess.Popen(two_hosts.launch_argv("-n", "2", "--grace", "5", "--", sys.executable, "-c", SLEEPER,
                                                  str(tmp_path), "-1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        pid_files = [tmp_path / f"pid.{r}" for r in range(2)]
        _wait_files(pid_files)
        pids = [int(p.read_text()) for p in pid_files]
        os.kill(pids[1], signal.SIGKILL)  # rank 1, in namespace B (the pid namespace is shared)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 137, err
    assert f"rank 1 on {ADDR_B} exited with code 137 (killed by SIGKILL on its host)" in err
    assert _wait_gone(pids, timeout=10) == []


@pytest.mark.slow
def test_ssh_two_hosts_train_one_ddp_job(two_hosts, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(REPO / "recipes", job / "recipes")
    cli = shutil.which("lit-imgcls") or "lit-imgcls"
    res = subprocess.run(two_hosts.launch_argv(
        "-n", "2", "--sync-dir", str(job), "--sync-dst-dir", str(tmp_path / "remote"), "--grace", "5",
        "--env", "GLOO_SOCKET_IFNAME=lt0", "PYTHONWARNINGS=ignore", "--",
        cli, "fit", "--recipe", "recipes/mnist.yaml", "--kv-store", "dist_sync", "--num-epochs", "1",
        "--num-examples", "4000", "--fused-steps", "1", "--progress-bar", "false", "--threads", "1",
        "--model-prefix", "model/mnist"), check=False, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert any(line.startswith("[rank 0] final:") for line in res.stdout.splitlines()), out[-6000:]


def test_every_worker_line_is_prefixed_and_blank_ones_dropped():
    """Lightning ends its distributed banner with an empty line and a bar redraws with carriage returns: launch
    shows neither a bare ``[rank K]`` nor a line whose redraws would overwrite its prefix."""
    import io

    code = ("import sys; print('one'); print(); print('   '); sys.stdout.write('bar 10%\\rbar 50%\\rbar 100%\\n'); "
            "print('\\n\\nlast', file=sys.stderr); sys.stdout.write('no newline at the end')")
    workers = engine.plan(2, [engine.Host("localhost")], "127.0.0.1", engine.free_port(), {})
    out, err = io.StringIO(), io.StringIO()
    engine.supervise(list(engine.local_specs(workers, [sys.executable, "-c", code])), out=out, err=err)
    for rank in (0, 1):
        mine = [line for line in out.getvalue().splitlines() if line.startswith(f"[rank {rank}] ")]
        assert mine == [f"[rank {rank}] one", f"[rank {rank}] bar 100%", f"[rank {rank}] no newline at the end"]
    assert sorted(out.getvalue().splitlines()) == sorted(f"[rank {r}] {t}" for r in (0, 1)
                                                         for t in ("one", "bar 100%", "no newline at the end"))
    assert sorted(err.getvalue().splitlines()) == ["[rank 0] last", "[rank 1] last"]
    assert engine.worker_line(b"  \r\n") is None and engine.worker_line(b"a  \r\n") == "a"
