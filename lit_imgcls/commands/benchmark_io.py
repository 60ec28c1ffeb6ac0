from __future__ import annotations

from typing import Optional


def benchmark_io(folder: str, wds: Optional[list[str]] = None, ffcv: Optional[list[str]] = None, size: int = 224,
                 batch_size: int = 64, workers: int = 2, batches: int = 30) -> None:
    """Measure loader speed alone (MXNet's --test-io): images/s with random-resized-crop and flip, no model.

    Prints a table: the plain ImageFolder + DataLoader baseline on FOLDER, lit-imgcls's loaders on the packs of
    the same images, and a one-core libjpeg-turbo decode-only bound, each per core.

    Args:
        folder: image folder (a subfolder per class): the plain loader's input and the decode bound's files.
        wds: packs of the same images with WebDataset shards (--wds A B).
        ffcv: packs of the same images with FFCV files.
        size: crop size.
        batch_size: images per batch.
        workers: loader processes (threads for FFCV), the same for every loader.
        batches: batches timed per loader, after 5 warm-up batches; a FOLDER too small for them times what one
            epoch holds, with a warning line (none left after the warm-up: an error).
    """
    from lit_imgcls.bench_io import run_io_benchmark, table

    packs = [("wds", p) for p in wds or []] + [("ffcv", p) for p in ffcv or []]
    print(table(run_io_benchmark(folder, packs, size, batch_size, workers, batches)))
