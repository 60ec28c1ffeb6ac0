"""kv_store ``dist_async``: workers that never wait for each other, on hivemind (decentralised averaging).

MXNet's ``dist_async`` applies each worker's update without waiting for the others. Here every worker is an
independent single-device Lightning process that

* steps its own optimizer (the module's torch.optim.SGD/AdamW, with its LambdaLR schedule, unchanged) with its own
  gradients at once, and
* every ``LIT_IMGCLS_ASYNC_AVERAGE_STEPS`` local steps (default 20), when no round is in flight, copies its
  parameters into a ``hivemind.averaging.DecentralizedAverager`` and lets it average them, in its own process,
  with whichever peers are looking for a group at that moment. When the round has finished (checked without
  blocking at later steps) the result is applied as a delta, ``param += average - snapshot``, on top of the local
  steps taken meanwhile. A slow peer only joins fewer rounds; a dead one makes rounds fail, which are skipped.

``hivemind.Optimizer(use_local_updates=True, delay_state_averaging=True)`` was tried first and is not used: with
local updates its state averager waits for the background averaging round before every local optimizer step
(``TrainingStateAverager.step``: ``should_wait = optimizer_step`` under the delta rule), so each worker stalled for
the matchmaking time of every round (measured: 594 and 408 samples/s per worker against 2446 alone).

Workers find each other through a hivemind DHT. With ``LIT_IMGCLS_DHT_PEERS`` (comma-separated multiaddrs of
running peers) every worker joins those. Otherwise the same environment as ``dist_sync`` is used (``WORLD_SIZE``,
``RANK`` or ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): rank 0 starts the first DHT node and publishes its
addresses in a small ``torch.distributed.TCPStore`` it hosts on ``MASTER_ADDR:MASTER_PORT``; the others read them
there once at start (nothing else goes through that store, and nobody waits on it after start).

Each worker trains on its own shard of the data: the strategy reports the worker's rank and the number of workers
as ``global_rank``/``world_size``, which the loaders use for sharding (validation is sharded the same way, so each
worker reports accuracy on its part of the validation set); ``is_global_zero`` stays True in every worker, because
each one is a complete training process of its own (it prints its own Speedometer lines and writes its own
checkpoints: give each worker its own ``--model-prefix`` unless they share nothing).

Environment knobs (all optional): ``LIT_IMGCLS_DHT_PEERS`` (see above), ``LIT_IMGCLS_DHT_RUN_ID`` (the key prefix
peers of one run share; default from ``MASTER_PORT``), ``LIT_IMGCLS_ASYNC_AVERAGE_STEPS``, ``LIT_IMGCLS_DHT_HOST``
(the address the DHT listens on, default ``0.0.0.0``), ``LIT_IMGCLS_ASYNC_VERBOSE=1`` (hivemind's log lines and a
count of averaging rounds at the end).

Test hook: ``LIT_IMGCLS_TEST_SLOW_STEP_S`` = seconds to sleep in every optimizer step of this worker, to make a
slow worker on purpose in tests; it is not part of any recipe.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from lit_imgcls.errors import UsageError

log = logging.getLogger(__name__)

INSTALL_HINT = "kv_store 'dist_async' needs hivemind: pip install 'lit-imgcls[async]'"
_STORE_KEY = "lit_imgcls/dht_maddrs"


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def async_rank_and_size() -> tuple[int, int]:
    """This worker's rank and the number of workers, from the launcher's environment."""
    world = _env_int("WORLD_SIZE", default=1)
    rank = _env_int("RANK", "NODE_RANK", default=0)
    if not 0 <= rank < max(world, 1):
        raise UsageError(f"dist_async: rank {rank} is outside WORLD_SIZE {world}; set RANK (or NODE_RANK) to 0..{world - 1}")
    return rank, max(world, 1)


class HivemindAsyncStrategy(SingleDeviceStrategy):
    """One independent worker of an asynchronous data-parallel run (see the module docstring).

    Args:
        device: this worker's device.
        rank: this worker's rank (data shard); default from ``RANK``/``NODE_RANK``.
        world_size: number of workers (data shards); default from ``WORLD_SIZE``.
        average_every_steps: local steps per worker between two parameter-averaging rounds.
        matchmaking_time: seconds a round waits for peers to join it (in the background).
        averaging_timeout: seconds after which a round that has not finished is abandoned (in the background).
        initial_peers: multiaddrs of running peers to join (default: ``LIT_IMGCLS_DHT_PEERS`` or the TCPStore).
        run_id: the DHT key prefix shared by the peers of one run.
        startup_timeout: seconds a non-zero rank waits for rank 0's DHT addresses.
    """

    strategy_name = "hivemind_async"
    independent_workers = True  # each worker trains and reports alone (the Speedometer counts its samples only)

    def __init__(
        self,
        device: str | torch.device = "cpu",
        rank: int | None = None,
        world_size: int | None = None,
        average_every_steps: int | None = None,
        matchmaking_time: float = 0.5,
        averaging_timeout: float = 5.0,
        initial_peers: list[str] | None = None,
        run_id: str | None = None,
        startup_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device, **kwargs)
        env_rank, env_world = async_rank_and_size()
        self.global_rank = env_rank if rank is None else int(rank)
        self.world_size = env_world if world_size is None else int(world_size)
        self.local_rank = 0
        self.average_every_steps = average_every_steps or _env_int("LIT_IMGCLS_ASYNC_AVERAGE_STEPS", default=20)
        self.matchmaking_time = matchmaking_time
        self.averaging_timeout = averaging_timeout
        peers = os.environ.get("LIT_IMGCLS_DHT_PEERS", "")
        self.initial_peers = initial_peers if initial_peers is not None else [p for p in peers.split(",") if p]
        self.run_id = run_id or os.environ.get("LIT_IMGCLS_DHT_RUN_ID") or f"lit_imgcls_{os.environ.get('MASTER_PORT', 'run')}"
        self.startup_timeout = startup_timeout
        self.slow_step_s = float(os.environ.get("LIT_IMGCLS_TEST_SLOW_STEP_S", "0") or 0)  # test hook
        self.dht = None
        self.averager = None
        self._store = None
        self._round = None  # the averaging round in flight (a hivemind StepControl)
        self._params: list[torch.nn.Parameter] = []
        self._snapshot: list[torch.Tensor] = []
        self._steps = self._last_round_step = 0
        self.rounds_started = self.rounds_averaged = self.rounds_failed = 0

    # ---- process / peers -------------------------------------------------------------------------------------

    def setup_environment(self) -> None:
        super().setup_environment()
        # Every worker is a whole training process: it logs and prints for itself (Lightning would otherwise mute
        # ranks > 0 when RANK is in the environment).
        from lightning.fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero_only
        from lightning.pytorch.utilities.rank_zero import rank_zero_only

        rank_zero_only.rank = fabric_rank_zero_only.rank = 0

    def _start_dht(self):
        import hivemind

        host = os.environ.get("LIT_IMGCLS_DHT_HOST", "0.0.0.0")
        listen = [f"/ip4/{host}/tcp/0"]
        verbose = os.environ.get("LIT_IMGCLS_ASYNC_VERBOSE") == "1"
        if not verbose:
            logging.getLogger("hivemind").setLevel(logging.WARNING)
        if self.initial_peers:
            return hivemind.DHT(start=True, initial_peers=self.initial_peers, host_maddrs=listen)
        if self.world_size == 1:
            return hivemind.DHT(start=True, host_maddrs=listen)
        from torch.distributed import TCPStore

        addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
        port = _env_int("MASTER_PORT", default=29500)
        timeout = datetime.timedelta(seconds=self.startup_timeout)
        if self.global_rank == 0:
            dht = hivemind.DHT(start=True, host_maddrs=listen)
            maddrs = [str(a) for a in dht.get_visible_maddrs()]
            # Hosted here for the whole run; rank 0 never waits for the others to connect.
            self._store = TCPStore(addr, port, None, True, timeout, wait_for_workers=False)
            self._store.set(_STORE_KEY, ",".join(maddrs))
            return dht
        try:
            store = TCPStore(addr, port, None, False, timeout)
            maddrs = store.get(_STORE_KEY).decode().split(",")
        except Exception as exc:  # any failure here means the same thing to the user
            raise UsageError(
                f"dist_async worker {self.global_rank}: could not reach rank 0 at {addr}:{port} within "
                f"{self.startup_timeout:.0f} s ({type(exc).__name__}); start rank 0 first or set LIT_IMGCLS_DHT_PEERS"
            ) from exc
        return hivemind.DHT(start=True, initial_peers=maddrs, host_maddrs=listen)

    # ---- training ----------------------------------------------------------------------------------------------

    def setup(self, trainer) -> None:
        super().setup(trainer)
        from lightning.pytorch.trainer.states import TrainerFn

        if trainer.state.fn != TrainerFn.FITTING or self.averager is not None:
            return
        from hivemind.averaging import DecentralizedAverager

        self._params = [p for p in self.lightning_module.parameters() if p.requires_grad]
        self.dht = self._start_dht()
        if self.world_size > 1 or self.initial_peers:
            self.averager = DecentralizedAverager(
                [p.detach().to("cpu", copy=True) for p in self._params],
                self.dht,
                start=True,
                prefix=f"{self.run_id}_params",
                target_group_size=max(2, self.world_size),
                min_group_size=2,
                min_matchmaking_time=self.matchmaking_time,
                request_timeout=self.matchmaking_time / 2,
                allreduce_timeout=self.averaging_timeout,
                allow_state_sharing=False,
                shutdown_timeout=5.0,
            )
        self._steps = self._last_round_step = 0

    def optimizer_step(self, optimizer, closure: Callable[[], Any], model=None, **kwargs: Any) -> Any:
        if self.slow_step_s > 0:
            time.sleep(self.slow_step_s)  # test hook: a slow worker on purpose (LIT_IMGCLS_TEST_SLOW_STEP_S)
        out = super().optimizer_step(optimizer, closure, model, **kwargs)  # this worker's own update, at once
        if self.averager is not None:
            self._steps += 1
            if self._round is not None and self._round.done():
                self._finish_round()
            if self._round is None and self._steps - self._last_round_step >= self.average_every_steps:
                self._start_round()
        return out

    @torch.no_grad()
    def _start_round(self) -> None:
        """Snapshot the parameters into the averager and let it look for peers in the background."""
        with self.averager.get_tensors() as shared:
            for buf, p in zip(shared, self._params):
                buf.copy_(p.detach())
        self._snapshot = [p.detach().to("cpu", copy=True) for p in self._params]
        self._last_round_step = self._steps
        self.rounds_started += 1
        # A round that finds no peer within ~2 matchmaking windows is given up, so the next one can start.
        self._round = self.averager.step(wait=False, timeout=2 * self.matchmaking_time + 0.5)

    @torch.no_grad()
    def _finish_round(self) -> None:
        """Apply a finished round as a delta (average - snapshot) on top of the steps taken meanwhile."""
        control, self._round = self._round, None
        try:
            group = None if control.cancelled() else control.result(0)
        except Exception:  # noqa: BLE001 - a failed round (no peers in time, a peer left) is skipped
            group = None
        if not group:
            self.rounds_failed += 1
            return
        with self.averager.get_tensors() as shared:
            for p, avg, old in zip(self._params, shared, self._snapshot):
                p.add_((avg - old).to(p.device))
        self.rounds_averaged += 1

    # ---- shutdown ---------------------------------------------------------------------------------------------

    def _shutdown_hivemind(self) -> None:
        control, averager, dht, store = self._round, self.averager, self.dht, self._store
        self._round = self.averager = self.dht = self._store = None
        if control is not None and not control.done():
            with contextlib.suppress(Exception):
                control.cancel()
        for name, obj in (("averager", averager), ("DHT", dht)):
            if obj is not None:
                try:
                    obj.shutdown()
                except Exception as exc:  # noqa: BLE001 - leaving must not fail the run
                    log.warning("dist_async: %s shutdown: %s", name, exc)
        del store

    def teardown(self) -> None:
        if self.averager is not None and os.environ.get("LIT_IMGCLS_ASYNC_VERBOSE") == "1":
            print(f"dist_async worker {self.global_rank}: averaging rounds started {self.rounds_started}, "
                  f"averaged {self.rounds_averaged}, skipped {self.rounds_failed}", flush=True)
        self._shutdown_hivemind()
        super().teardown()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._shutdown_hivemind()


def dist_async(num_devices: int, accelerator: str, num_nodes: int = 1, timeout: float | None = None,
               **_: Any) -> HivemindAsyncStrategy:
    """dist_async: asynchronous data parallel; each worker updates at once and averages with peers in the background.

    ``num_nodes`` is ignored (workers are independent processes; their number comes from ``WORLD_SIZE``);
    ``timeout`` (the recipe's ``dist_timeout``) bounds how long a worker waits for rank 0's DHT address at start.
    """
    try:
        import hivemind  # noqa: F401
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    if num_devices > 1:
        raise UsageError("kv_store 'dist_async' runs one device per worker process; start one worker per device (--gpus with one id)")
    startup = float(timeout) if timeout else 60.0
    return HivemindAsyncStrategy(device="cuda" if accelerator == "gpu" else "cpu", startup_timeout=startup)
