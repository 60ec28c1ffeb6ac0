"""A photo corpus for tests and benchmarks, made from the natural photos bundled with scikit-image.

No ImageNet-like data can be downloaded on the project's machines, so this makes one: JPEGs of ImageNet-like
size (shorter side 300-500 px) cut from a dozen real photos with random crops, scales, flips and colour jitter,
labelled by the photo they come from. Decoding cost and learnability are real; the same seed gives the same files.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from pathlib import Path

import numpy as np

from lit_imgcls.errors import UsageError

# Files in scikit-image's skimage/data folder (bundled in its wheel, no download): 8 colour scenes and 6 grey
# ones, turned into RGB.
PHOTOS = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
          "hubble_deep_field": "hubble_deep_field.jpg", "ihc": "ihc.png", "motorcycle": "motorcycle_left.png",
          "retina": "retina.jpg", "rocket": "rocket.jpg", "camera": "camera.png", "moon": "moon.png",
          "grass": "grass.png", "gravel": "gravel.png", "brick": "brick.png", "coins": "coins.png"}


def _source(name: str) -> np.ndarray:
    import importlib.util

    from PIL import Image

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scikit-image")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / PHOTOS[name]
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _variant(src: np.ndarray, rng: random.Random, quality: int) -> bytes:
    import io

    from PIL import Image, ImageEnhance

    h, w = src.shape[:2]
    area = h * w * rng.uniform(0.25, 1.0)
    ratio = rng.uniform(3 / 4, 4 / 3)
    cw = int(min(w, max(32, round((area * ratio) ** 0.5))))
    ch = int(min(h, max(32, round((area / ratio) ** 0.5))))
    x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = Image.fromarray(src[y0 : y0 + ch, x0 : x0 + cw])
    short = rng.randint(300, 500)
    scale = short / min(cw, ch)
    img = img.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(rng.uniform(0.75, 1.25))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _make(job: tuple[str, str, int, int, int, str]) -> None:
    out, name, index, seed, quality, split = job
    rng = random.Random(f"{seed}-{split}-{name}-{index}")
    data = _variant(_SOURCES[name], rng, quality)
    path = Path(out) / split / name / f"{index:05d}.jpg"
    path.write_bytes(data)


_SOURCES: dict[str, np.ndarray] = {}


def make_photo_corpus(out: str | Path, train_per_class: int = 200, val_per_class: int = 50, seed: int = 0,
                      classes: int = len(PHOTOS), quality: int = 90, num_workers: int = 1) -> dict[str, int]:
    """Writes ``out/{train,val}/<photo>/<n>.jpg``; returns the image count per split."""
    if not 1 <= classes <= len(PHOTOS):
        raise UsageError(f"classes must lie in 1..{len(PHOTOS)}")
    if train_per_class < 1 or val_per_class < 0:
        # "wrote 0 training JPEGs" and empty class folders would be a corpus that every route then refuses
        raise UsageError(f"train_per_class must be >= 1 and val_per_class >= 0, got {train_per_class} and "
                         f"{val_per_class}")
    try:
        for name in list(PHOTOS)[:classes]:
            _SOURCES[name] = _source(name)
    except ImportError:
        raise UsageError("the photo corpus needs scikit-image (pip install scikit-image)") from None
    out = Path(out)
    jobs = []
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        if not count:
            continue  # no val split asked for: no empty class folders, which fit would refuse as empty classes
        for name in list(PHOTOS)[:classes]:
            (out / split / name).mkdir(parents=True, exist_ok=True)
            jobs += [(str(out), name, i, seed, quality, split) for i in range(count)]
    from lit_imgcls.terminal import progress

    with progress(len(jobs), "photos", noun="photos") as bar:
        if num_workers > 1:
            with mp.get_context("fork").Pool(num_workers) as pool:
                for _ in pool.imap_unordered(_make, jobs, chunksize=16):
                    bar.update(1)
        else:
            for job in jobs:
                _make(job)
                bar.update(1)
    return {"train": train_per_class * classes, "val": val_per_class * classes}
