from __future__ import annotations

from typing import Annotated


def launch(
    command: list[str],
    num_workers: Annotated[int, "-n"] = 1,
    hostfile: Annotated[str | None, "-H"] = None,
    launcher: str | None = None,
    sync_dir: str | None = None,
    sync_dst_dir: str | None = None,
    env: list[str] | None = None,
    port: int | None = None,
    ssh_option: list[str] | None = None,
    ssh_identity: str | None = None,
    grace: float = 10.0,
) -> None:
    """Run a command as N workers of one distributed job, here or on other machines over ssh.

    Example: lit-imgcls launch -n 2 -H hosts --sync-dir . -- lit-imgcls fit --recipe recipes/mnist.yaml --kv-store dist_sync
    Each worker is one Lightning node with one device: it gets MASTER_ADDR, MASTER_PORT, NODE_RANK (its rank),
    WORLD_SIZE (N) and LOCAL_RANK=0, also when several share a host. Output lines come back as "[rank K] ..." (blank
    ones dropped; of a line a progress bar redrew with carriage returns, what a terminal would show).
    When a worker fails, the others are stopped (SIGTERM, then SIGKILL after --grace seconds) and launch exits
    non-zero naming it and showing its last lines; Ctrl-C or SIGTERM to launch stops them all too.

    Args:
        command: the command each worker runs, after "--".
        num_workers: how many workers (ranks) to start.
        hostfile: file of "host[:ssh-port]" lines (# comments); rank r runs on host r % hosts. Without it every
            worker runs on this machine.
        launcher: local (child processes here) or ssh; default ssh with a hostfile, else local.
        sync_dir: ssh: rsync this folder (-a --delete) to every host first; the workers then run in the copy.
        sync_dst_dir: ssh: folder on the hosts to sync to and run in; default the same absolute path as
            --sync-dir, or as the current folder without it. It must be new, empty, or a copy an earlier launch
            made (it holds .lit-imgcls-sync): mirroring deletes whatever else is in it, so any other is refused.
        env: NAME=VALUE variables for every worker, after the ones launch sets.
        port: MASTER_PORT, the rank-0 rendezvous port; default a free one (local) or 29500 (ssh).
        ssh_option: ssh -o options for every host, e.g. UserKnownHostsFile=/path (repeatable).
        ssh_identity: private key file for ssh -i.
        grace: seconds a stopped worker gets between SIGTERM and SIGKILL.
    """
    import os
    import sys

    from lit_imgcls.errors import UsageError
    from lit_imgcls.strategies import launch as engine

    if not command:
        raise UsageError("launch: no command given; put it after --, e.g. launch -n 2 -- python train.py")
    if num_workers < 1:
        raise UsageError(f"launch: -n must be at least 1, got {num_workers}")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"launch: --port must be 1-65535, got {port}")
    launcher = launcher or ("ssh" if hostfile else "local")
    if launcher not in ("local", "ssh"):
        raise UsageError(f"launch: --launcher must be local or ssh, got {launcher!r}")
    if launcher == "local" and (hostfile or sync_dir or sync_dst_dir):
        raise UsageError("launch: --hostfile, --sync-dir and --sync-dst-dir need --launcher ssh "
                         "(the local launcher runs every worker here)")
    if sync_dir is not None and not os.path.isdir(sync_dir):
        raise UsageError(f"launch: --sync-dir {sync_dir} is not a folder")
    extra_env = engine.parse_env(env or [])

    if launcher == "local":
        workers = engine.plan(num_workers, [engine.Host("localhost")], "127.0.0.1", port or engine.free_port(),
                              extra_env)
        specs = list(engine.local_specs(workers, command))
    else:
        hosts = engine.read_hostfile(hostfile) if hostfile else [engine.Host("localhost")]
        ssh = engine.Ssh(tuple(ssh_option or ()), ssh_identity)
        workdir = os.path.abspath(sync_dst_dir or sync_dir or os.getcwd())
        workers = engine.plan(num_workers, hosts, hosts[0].name, port or engine.DEFAULT_PORT, extra_env)
        if sync_dir is not None:
            engine.sync(ssh, [w.host for w in workers], os.path.abspath(sync_dir), workdir)
        specs = list(engine.ssh_specs(workers, command, ssh, workdir))

    try:
        engine.supervise(specs, grace=grace)
    except engine.WorkerFailed as exc:
        print(f"lit-imgcls launch: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except engine.Terminated as exc:
        print(f"lit-imgcls launch: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(143) from None
