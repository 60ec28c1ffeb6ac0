from __future__ import annotations

from typing import Literal, Optional


def benchmark_infer(networks: Optional[list[str]] = None, batch_sizes: Optional[list[str]] = None,
                    image_shape: Optional[str] = None, gpus: Optional[list[str]] = None,
                    num_processes: Optional[list[str]] = None, precision: Optional[list[str]] = None, steps: int = 20,
                    warmup: int = 5, num_classes: int = 1000, threads: Optional[int] = None,
                    dataset_size: int = 1281167, csv: Optional[str] = None, data: Optional[str] = None,
                    format: Optional[Literal["wds", "ffcv"]] = None, data_nthreads: int = 2) -> None:
    """Measure inference speed (MXNet's benchmark_score.py): images/s over networks x batch sizes x devices x precisions.

    Each step is a forward pass under torch.inference_mode, in a direct loop (nothing of a Trainer is needed to
    predict); mixed precisions run under torch.autocast, *-true ones cast the network. Synthetic data: one fixed
    random batch, already on the device. Several devices run one process each, released together after warm-up;
    their images/s add up. Prints one table per precision (rows: network, batch size; per device set: images/s and the time of one
    epoch of --dataset-size images). With --data PACK --format wds|ffcv it reads real shards instead and
    splits every step into waiting for the loader and computing, naming the bottleneck.

    Args:
        networks: networks to measure (default lenet); any registered or timm name.
        batch_sizes: batch sizes per device (default 32).
        image_shape: input "C,H,W" for every network (default 1,28,28 for lenet and mlp, else 3,224,224; with
            --data, the pack's).
        gpus: GPU sets, one column each, like 0 0,1 0,1,2,3 (sets CUDA does not have are skipped); none: CPU.
        num_processes: CPU data-parallel process counts, one column each (default 1).
        precision: Lightning precisions, one table each (default 32-true): 32-true, bf16-mixed, 16-mixed, ...
        steps: timed steps per measurement.
        warmup: untimed steps first (allocation, cuDNN autotuning, loader start).
        num_classes: classes of the classifier head (with --data, the pack's).
        threads: CPU threads for compute, in all (default: all cores); several CPU processes share them.
        dataset_size: images in one epoch for the epoch-time columns (default: ImageNet's 1,281,167).
        csv: also write the results to this CSV file.
        data: a pack made by `lit-imgcls dataset pack`: read its training shards.
        format: the pack's format to read with --data: wds or ffcv.
        data_nthreads: loader worker processes with --data.
    """
    from lit_imgcls.bench import run_benchmark

    run_benchmark("infer", networks, batch_sizes, image_shape, gpus, num_processes, precision, steps, warmup,
                  num_classes, threads, dataset_size, csv, data, format, data_nthreads)
