"""``benchmark train`` / ``benchmark infer``: images/s over networks x batch sizes x devices x precisions
(MXNet's ``--benchmark 1`` and ``benchmark_score.py``), and with real shards, where each step's time goes.

Training runs through the same ImageClassifier, Trainer, strategy and precision plugin that ``fit`` builds, so the
figure predicts ``fit``'s speed (``fit`` keeps 92-99% of a bare loop's speed even for LeNet, the smallest network:
docs/BENCHMARKS.md). Several devices train in a child process (``python -m lit_imgcls.bench CONFIG``), which
Lightning's DDP launcher starts once per device. Inference is a direct loop under ``torch.inference_mode``; several
devices run one process each, started together and timed between a common start signal and their last step.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import lightning as L
import torch

from lit_imgcls.data.base import ImageDataModule
from lit_imgcls.errors import RunFailed, UsageError

SMALL_INPUT = {"lenet": "1,28,28", "mlp": "1,28,28"}  # the seed's MNIST networks; every other one gets ImageNet's
DEFAULT_SHAPE = "3,224,224"
RESULT_TAG = "BENCH_RESULT "
WAIT_BOUND, COMPUTE_BOUND = 0.6, 0.6


@dataclass
class BenchConfig:
    """One measurement: a network at a batch size on a device set at a precision."""

    mode: str  # train or infer
    network: str
    batch_size: int
    image_shape: Optional[str]  # None with real data: the pack's
    gpus: str = ""
    num_processes: int = 1
    precision: str = "32-true"
    steps: int = 20
    warmup: int = 5
    num_classes: int = 1000
    threads: Optional[int] = None
    data: Optional[str] = None
    format: Optional[str] = None
    data_nthreads: int = 2

    @property
    def device_count(self) -> int:
        return len(self.gpu_ids()) or self.num_processes

    def gpu_ids(self) -> list[int]:
        return [int(v) for v in self.gpus.split(",") if v.strip()]

    @property
    def devices(self) -> str:
        n = self.device_count
        if self.gpus:
            return f"{n} gpu" + ("s" if n > 1 else "")
        return "cpu" if n == 1 else f"cpu x{n}"


@dataclass
class BenchResult:
    config: BenchConfig
    images_per_sec: float
    seconds: float
    wait_seconds: float  # time spent getting the next batch from the loader, over the timed steps
    compute_seconds: float  # forward (+ backward + optimizer step), over the timed steps

    def epoch_seconds(self, dataset_size: int) -> float:
        return dataset_size / self.images_per_sec if self.images_per_sec > 0 else float("inf")

    @property
    def wait_share(self) -> float:
        total = self.wait_seconds + self.compute_seconds
        return self.wait_seconds / total if total > 0 else 0.0


# -- building blocks --------------------------------------------------------------------------------------------


def _shape(text: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in text.split(","))
    return c, h, w


def _recipe(cfg: BenchConfig):
    from lit_imgcls.recipe import Recipe

    return Recipe(
        network=cfg.network, batch_size=cfg.batch_size, gpus=cfg.gpus, num_processes=cfg.num_processes,
        precision=cfg.precision, threads=cfg.threads, progress_bar=False, num_epochs=1, lr=0.01,
        lr_schedule="constant", image_shape=cfg.image_shape, dataset=cfg.format or "mnist", data_train=cfg.data,
        data_nthreads=cfg.data_nthreads, disp_batches=10**9,
    )


class FixedBatches:
    """A loader that hands out one fixed random batch again and again: the data costs nothing.

    The batch is made on ``device`` (set to the training device before the first step; the Trainer moves nothing
    that is already there), as normalised floats, so neither a copy nor a normalisation is timed.
    """

    def __init__(self, cfg: BenchConfig, shape: tuple[int, int, int]) -> None:
        self.cfg, self.shape, self.device = cfg, shape, None

    def __len__(self) -> int:
        return self.cfg.warmup + self.cfg.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.cfg.batch_size, *self.shape, generator=g)
        y = torch.randint(0, self.cfg.num_classes, (self.cfg.batch_size,), generator=g)
        x, y = x.to(self.device or "cpu"), y.to(self.device or "cpu")
        for _ in range(len(self)):
            yield x, y


class SyntheticData(ImageDataModule):
    """The DataModule contract (classes, image shape, mean/std) around :class:`FixedBatches`."""

    def __init__(self, cfg: BenchConfig) -> None:
        super().__init__()
        self.num_classes, self.class_names = cfg.num_classes, [str(i) for i in range(cfg.num_classes)]
        self.image_shape = _shape(cfg.image_shape or DEFAULT_SHAPE)
        self.mean, self.std = (0.0,) * self.image_shape[0], (1.0,) * self.image_shape[0]
        self.batches = FixedBatches(cfg, self.image_shape)

    def train_dataloader(self) -> FixedBatches:
        return self.batches


def _sync(device) -> None:
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _step_timer(warmup: int) -> L.Callback:
    class StepTimer(L.Callback):
        """Wait = from the end of one step to the start of the next (the Trainer's next() on the loader);
        compute = the step itself, synchronised with the device. Timed after ``warmup`` steps."""

        def __init__(self) -> None:
            self.wait = self.compute = 0.0
            self.start = self.end = None
            self.seen = 0
            self._prev_end = self._batch_start = None

        def setup(self, trainer, pl_module, stage) -> None:
            if isinstance(trainer.datamodule, SyntheticData):
                trainer.datamodule.batches.device = trainer.strategy.root_device

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._batch_start = time.perf_counter()
            if self.seen >= warmup and self._prev_end is not None:
                self.wait += self._batch_start - self._prev_end

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            _sync(pl_module.device)
            now = time.perf_counter()
            self.seen += 1
            if self.seen > warmup:
                self.compute += now - self._batch_start
            if self.seen == warmup:
                self.start = now
            self.end = self._prev_end = now

    return StepTimer()


def _datamodule(cfg: BenchConfig):
    if cfg.data:
        from lit_imgcls.engine import build_datamodule

        return build_datamodule(_recipe(cfg))
    return SyntheticData(cfg)


def measure_train(cfg: BenchConfig) -> Optional[BenchResult]:
    """Trains ``warmup + steps`` steps through a Trainer; the result on rank 0, None on the other ranks."""
    import warnings

    from lit_imgcls.engine import DataSpec, build_module, build_trainer, prepare_process

    recipe = _recipe(cfg)
    prepare_process(recipe)
    # Lightning's start-up notices and its "no val_dataloader" remark say nothing about the speed being measured.
    warnings.filterwarnings("ignore", message=".*(does not have many workers|smaller than the logging interval|have no `val_dataloader`).*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    dm = _datamodule(cfg)
    module = build_module(recipe, DataSpec.of(dm))
    timer = _step_timer(cfg.warmup)
    trainer = build_trainer(recipe, [timer], logger=None, max_steps=cfg.warmup + cfg.steps, max_epochs=-1,
                            limit_val_batches=0, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    if not trainer.is_global_zero:
        return None
    if timer.start is None or timer.seen < cfg.warmup + cfg.steps:
        raise RunFailed(f"{cfg.network}: only {timer.seen} training steps ran, {cfg.warmup + cfg.steps} were asked for")
    seconds = timer.end - timer.start
    images = cfg.steps * cfg.batch_size * trainer.world_size  # every data-parallel worker trains a full batch
    return BenchResult(_with_shape(cfg, dm), images / seconds, seconds, timer.wait, timer.compute)


def _with_shape(cfg: BenchConfig, dm) -> BenchConfig:
    """The input shape actually used (a pack decides its own when none was given)."""
    return dataclasses.replace(cfg, image_shape=",".join(str(v) for v in dm.image_shape))


def _autocast(precision: str, device):
    import contextlib

    kind = getattr(device, "type", "cpu")
    if precision == "bf16-mixed":
        return torch.autocast(kind, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(kind, dtype=torch.float16)
    return contextlib.nullcontext()


_TRUE_DTYPES = {"bf16-true": "bfloat16", "16-true": "float16", "64-true": "float64"}


def measure_infer(cfg: BenchConfig, gate=None) -> BenchResult:
    """Forward passes under ``torch.inference_mode`` on one device; ``gate()`` is called between warm-up and the
    timed steps (several processes wait there for a common start)."""
    from lit_imgcls.engine import DataSpec, build_module, prepare_process

    recipe = _recipe(cfg)
    prepare_process(recipe)
    ids = cfg.gpu_ids()
    device = torch.device(f"cuda:{ids[0]}" if ids else "cpu")
    dm = _datamodule(cfg)
    module = build_module(recipe, DataSpec.of(dm)).to(device).eval()
    dtype = getattr(torch, _TRUE_DTYPES[cfg.precision]) if cfg.precision in _TRUE_DTYPES else None
    if dtype is not None:
        module = module.to(dtype)
    if cfg.data:
        dm.setup("fit")
        batches = _forever(dm.train_dataloader())
    else:
        dm.batches.device = device
        batches = iter(dm.batches)
    wait = compute = 0.0
    with torch.inference_mode(), _autocast(cfg.precision, device):
        for i in range(cfg.warmup + cfg.steps):
            if i == cfg.warmup:
                _sync(device)
                if gate:
                    gate()
                start = time.perf_counter()
                wait = compute = 0.0
            t0 = time.perf_counter()
            x, _ = next(batches)
            t1 = time.perf_counter()
            x = module.on_after_batch_transfer((x.to(device, non_blocking=True), None), 0)[0]
            module(x.to(dtype) if dtype is not None else x)
            _sync(device)
            t2 = time.perf_counter()
            wait, compute = wait + t1 - t0, compute + t2 - t1
    seconds = time.perf_counter() - start
    return BenchResult(_with_shape(cfg, dm), cfg.steps * cfg.batch_size / seconds, seconds, wait, compute)


def _forever(loader) -> Iterator:
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


# -- several devices: child processes ----------------------------------------------------------------------------


def _child_env(cfg: BenchConfig) -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        env.pop(key, None)  # the child's Lightning launcher sets its own
    return env


def _parse_result(text: str) -> Optional[BenchResult]:
    for line in text.splitlines():
        if line.startswith(RESULT_TAG):
            raw = json.loads(line[len(RESULT_TAG):])
            raw["config"] = BenchConfig(**raw["config"])
            return BenchResult(**raw)
    return None


def _child_failed(cfg: BenchConfig, stderr: str) -> RunFailed:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    return RunFailed(f"{cfg.mode} {cfg.network} batch {cfg.batch_size} on {cfg.devices} failed: {lines[-1] if lines else 'no output'}")


def _train_in_child(cfg: BenchConfig) -> BenchResult:
    cmd = [sys.executable, "-m", "lit_imgcls.bench", json.dumps(dataclasses.asdict(cfg))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(cfg), stdin=subprocess.DEVNULL)
    result = _parse_result(proc.stdout)
    if proc.returncode != 0 or result is None:
        raise _child_failed(cfg, proc.stderr)
    return result


def _infer_in_children(cfg: BenchConfig) -> BenchResult:
    """One process per device, each warmed up, then all released together; images/s add up."""
    ids = cfg.gpu_ids()
    n = cfg.device_count
    procs = []
    for i in range(n):
        one = dataclasses.replace(cfg, gpus=str(ids[i]) if ids else "", num_processes=1)
        procs.append(subprocess.Popen([sys.executable, "-m", "lit_imgcls.bench", "--gated", json.dumps(dataclasses.asdict(one))],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=_child_env(cfg)))
    try:
        for p in procs:
            if p.stdout.readline().strip() != "READY":
                p.wait()
                raise _child_failed(cfg, p.stderr.read())
        for p in procs:
            p.stdin.write("GO\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate()
            r = _parse_result(out)
            if p.returncode != 0 or r is None:
                raise _child_failed(cfg, err)
            results.append(r)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    seconds = max(r.seconds for r in results)
    images = cfg.steps * cfg.batch_size * n
    return BenchResult(dataclasses.replace(cfg, image_shape=results[0].config.image_shape), images / seconds, seconds,
                       sum(r.wait_seconds for r in results) / n, sum(r.compute_seconds for r in results) / n)


def measure(cfg: BenchConfig) -> BenchResult:
    if cfg.mode == "train":
        if cfg.device_count > 1:
            return _train_in_child(cfg)
        result = measure_train(cfg)
        assert result is not None  # one process is rank 0
        return result
    return _infer_in_children(cfg) if cfg.device_count > 1 else measure_infer(cfg)


def _child_main(argv: list[str]) -> None:
    gated = argv[:1] == ["--gated"]
    cfg = BenchConfig(**json.loads(argv[-1]))

    def gate() -> None:
        print("READY", flush=True)
        sys.stdin.readline()

    if cfg.mode == "train":
        result = measure_train(cfg)
    else:
        result = measure_infer(cfg, gate if gated else None)
    if result is not None:
        print(RESULT_TAG + json.dumps(dataclasses.asdict(result)), flush=True)


# -- the command: checks, grid, tables, CSV ----------------------------------------------------------------------


def _ints(name: str, values: list[str], minimum: int = 1) -> list[int]:
    out = []
    for v in values:
        for part in str(v).replace(",", " ").split():
            try:
                out.append(int(part))
            except ValueError:
                raise UsageError(f"{name} must be whole numbers, got {part!r}") from None
            if out[-1] < minimum:
                raise UsageError(f"{name} must be >= {minimum}, got {out[-1]}")
    if not out:
        raise UsageError(f"{name} needs at least one value")
    return out


def _check_shape(text: str) -> str:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"image_shape must be 'C,H,W' with positive integers, like 3,224,224; got {text!r}")
    return ",".join(p.strip() for p in parts)


def device_sets(gpus: Optional[list[str]], num_processes: Optional[list[str]]) -> list[tuple[str, int]]:
    """(gpus, processes) per device column: GPU sets CUDA has, else CPU process counts."""
    from lit_imgcls.recipe import Recipe

    wanted = [g.strip() for g in (gpus or []) if g.strip()]
    if not wanted:
        return [("", n) for n in dict.fromkeys(_ints("num_processes", num_processes or ["1"]))]
    if num_processes:
        raise UsageError("num_processes is for CPU runs; with gpus each listed GPU gets one process")

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    sets = []
    for g in dict.fromkeys(wanted):
        ids = Recipe(gpus=g).gpu_ids()
        if max(ids) < available:
            sets.append((",".join(map(str, ids)), 1))
        else:
            print(f"note: skipping --gpus {g}: this machine has {available} CUDA device(s)", file=sys.stderr)
    if not sets:
        raise UsageError(f"none of the GPU sets {', '.join(wanted)} exists here ({available} CUDA devices); leave out --gpus to measure the CPU")
    return sets


def build_configs(mode: str, networks: list[str], batch_sizes: list[int], image_shape: Optional[str],
                  devices: list[tuple[str, int]], precisions: list[str], steps: int, warmup: int, num_classes: int,
                  threads: Optional[int], data: Optional[str], fmt: Optional[str], data_nthreads: int) -> list[BenchConfig]:
    from lit_imgcls.networks.factory import resolve_name
    from lit_imgcls.recipe import PRECISIONS
    from lit_imgcls.registry import networks as registry

    for name in networks:
        registry.get(resolve_name(name))  # an unknown name fails here, with the choices
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {p!r}")
    if steps < 1 or warmup < 0:
        raise UsageError(f"steps must be >= 1 and warmup >= 0, got steps {steps}, warmup {warmup}")
    if num_classes < 2:
        raise UsageError(f"num_classes must be >= 2, got {num_classes}")
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be positive, got {threads}")
    if data_nthreads < 0:
        raise UsageError(f"data_nthreads must be >= 0, got {data_nthreads}")
    if bool(data) != bool(fmt):
        raise UsageError("--data PACK and --format wds|ffcv go together")
    if data:
        if fmt not in ("wds", "ffcv"):
            raise UsageError(f"format must be wds or ffcv, got {fmt!r}")
        if "://" not in data and not os.path.isdir(data):
            raise UsageError(f"data pack not found: {data}")
    shape = _check_shape(image_shape) if image_shape else None
    configs = []
    for precision in precisions:
        for name in networks:
            for batch in batch_sizes:
                for gpus, procs in devices:
                    default = None if data else SMALL_INPUT.get(resolve_name(name).replace("-", "_"), DEFAULT_SHAPE)
                    # CPU processes share the cores: each gets its part, or they would fight over them.
                    per_proc = max(1, (threads or os.cpu_count() or 1) // procs) if not gpus and procs > 1 else threads
                    configs.append(BenchConfig(mode, name, batch, shape or default, gpus, procs, precision, steps,
                                               warmup, num_classes, per_proc, data, fmt, data_nthreads))
    return configs


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def tables(results: list[BenchResult], dataset_size: int) -> str:
    """One Markdown table per precision: rows network x batch, per device set img/s and the epoch time."""
    out = []
    mode = results[0].config.mode
    for precision in dict.fromkeys(r.config.precision for r in results):
        rows = [r for r in results if r.config.precision == precision]
        devices = list(dict.fromkeys(r.config.devices for r in rows))
        head = ["network", "batch", "input"] + [c for d in devices for c in (f"{d} img/s", f"{d} epoch")]
        out.append(f"{mode}, precision {precision} (epoch = {dataset_size:,} images, h:mm:ss):")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + " --- |" * len(head))
        for key in dict.fromkeys((r.config.network, r.config.batch_size) for r in rows):
            cells = [key[0], str(key[1]), next(r.config.image_shape or "" for r in rows if (r.config.network, r.config.batch_size) == key)]
            for d in devices:
                r = next((r for r in rows if (r.config.network, r.config.batch_size, r.config.devices) == (*key, d)), None)
                cells += [f"{r.images_per_sec:,.1f}", _duration(r.epoch_seconds(dataset_size))] if r else ["", ""]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip("\n")


def bottleneck(r: BenchResult) -> str:
    share = r.wait_share
    if share > WAIT_BOUND:
        return (f"{share:.0%} of each step waits for data: the loader is the bottleneck; try more --data-nthreads "
                f"(now {r.config.data_nthreads}), the ffcv format, or a bigger batch")
    if 1 - share > COMPUTE_BOUND:
        return f"{1 - share:.0%} of each step is compute: the loader keeps up; speed depends on the network and device"
    return f"data {share:.0%} / compute {1 - share:.0%}: neither dominates; more loader workers and a faster device both help"


def split_report(results: list[BenchResult]) -> str:
    cfg = results[0].config
    lines = [f"data/compute split per step ({cfg.format} pack {cfg.data}, {cfg.data_nthreads} loader workers):",
             "| network | batch | devices | precision | data wait ms/step | compute ms/step | waiting |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        c = r.config
        lines.append(f"| {c.network} | {c.batch_size} | {c.devices} | {c.precision} | {r.wait_seconds / c.steps * 1e3:.1f} "
                     f"| {r.compute_seconds / c.steps * 1e3:.1f} | {r.wait_share:.0%} |")
    lines.append("")
    for r in results:
        c = r.config
        lines.append(f"bottleneck: {c.network} batch {c.batch_size} {c.devices} {c.precision}: {bottleneck(r)}")
    return "\n".join(lines)


CSV_FIELDS = ["mode", "network", "batch_size", "image_shape", "devices", "device_count", "gpus", "precision", "steps",
              "images_per_sec", "epoch_seconds", "dataset_size", "data_wait_ms_per_step", "compute_ms_per_step",
              "data", "format"]


def to_csv(results: list[BenchResult], dataset_size: int) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in results:
        c = r.config
        w.writerow({"mode": c.mode, "network": c.network, "batch_size": c.batch_size, "image_shape": c.image_shape or "",
                    "devices": c.devices, "device_count": c.device_count, "gpus": c.gpus, "precision": c.precision,
                    "steps": c.steps, "images_per_sec": f"{r.images_per_sec:.3f}",
                    "epoch_seconds": f"{r.epoch_seconds(dataset_size):.1f}", "dataset_size": dataset_size,
                    "data_wait_ms_per_step": f"{r.wait_seconds / c.steps * 1e3:.3f}",
                    "compute_ms_per_step": f"{r.compute_seconds / c.steps * 1e3:.3f}", "data": c.data or "",
                    "format": c.format or ""})
    return buf.getvalue()


def run_benchmark(mode: str, networks: Optional[list[str]], batch_sizes: Optional[list[str]], image_shape: Optional[str],
                  gpus: Optional[list[str]], num_processes: Optional[list[str]], precision: Optional[list[str]],
                  steps: int, warmup: int, num_classes: int, threads: Optional[int], dataset_size: int,
                  csv_path: Optional[str], data: Optional[str], fmt: Optional[str], data_nthreads: int) -> list[BenchResult]:
    """What both commands do: check everything, measure each configuration, print tables (and the data split),
    write the CSV."""
    if dataset_size < 1:
        raise UsageError(f"dataset_size must be positive, got {dataset_size}")
    configs = build_configs(mode, networks or ["lenet"], _ints("batch_sizes", batch_sizes or ["32"]), image_shape,
                            device_sets(gpus, num_processes), precision or ["32-true"], steps, warmup, num_classes,
                            threads, data, fmt, data_nthreads)
    results = []
    for cfg in configs:
        print(f"measuring {mode}: {cfg.network} batch {cfg.batch_size} on {cfg.devices}, {cfg.precision} ...",
              file=sys.stderr, flush=True)
        results.append(measure(cfg))
    print(tables(results, dataset_size))
    if data:
        print()
        print(split_report(results))
    if csv_path:
        from lit_imgcls.io import atomic_write_text

        atomic_write_text(csv_path, to_csv(results, dataset_size))
        print(f"\nwrote {csv_path}")
    return results


if __name__ == "__main__":
    _child_main(sys.argv[1:])
