"""image_shape is what every data path delivers, exactly, or it is refused; the checkpoint records it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import quick_args, run_cli
from lit_imgcls.data.encode import EncodeOptions
from lit_imgcls.data.pack import PackOptions, pack_dataset
from lit_imgcls.errors import UsageError

RNG = np.random.default_rng(3)


def _tree(root: Path, size: tuple[int, int], grey: bool, per_class: int = 8) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = size if grey else (*size, 3)
            Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("shapes")
    small = _tree(tmp / "small", (28, 28), grey=True)   # MNIST-like: a "small" pack, used whole
    photos = _tree(tmp / "photos", (80, 96), grey=False)  # photo-like: cropped
    out = {"small_tree": small, "photo_tree": photos}
    for name, tree in (("small_pack", small), ("photo_pack", photos)):
        out[name] = tmp / name
        pack_dataset(str(tree), str(out[name]), PackOptions(format="both", train_ratio=0.5),
                     EncodeOptions(encoding=".png"))
    x = RNG.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    np.savez(tmp / "grey.npz", x_train=x, y_train=np.arange(40) % 2, x_val=x[:8], y_val=np.arange(8) % 2)
    out["npz"] = tmp / "grey.npz"
    return out


def _recipe(**kw):
    from lit_imgcls.recipe import Recipe, validate

    return validate(Recipe(batch_size=4, data_nthreads=0, **kw))


# (dataset, where its data is, image_shape asked for; the stored images differ in size, channels or both)
CASES = [
    ("mnist", None, "3,32,32"),
    ("npz", "npz", "3,20,24"),
    ("folder", "photo_tree", "1,24,32"),
    ("folder", "small_tree", "3,40,40"),
    ("wds", "small_pack", "3,32,32"),
    ("wds", "photo_pack", "1,48,40"),
    ("ffcv", "photo_pack", "3,48,48"),
]


@pytest.mark.parametrize("dataset,where,shape", CASES, ids=[f"{d}-{w}-{s}" for d, w, s in CASES])
def test_every_data_path_delivers_the_shape_asked_for(data, dataset, where, shape):
    from lit_imgcls.engine import build_datamodule

    keys = {"num_examples": 64} if dataset == "mnist" else {"data_train": str(data[where])}
    if dataset == "folder":
        keys["data_val"] = str(data[where])
    dm = build_datamodule(_recipe(dataset=dataset, image_shape=shape, **keys))
    c, h, w = (int(v) for v in shape.split(","))
    assert tuple(dm.image_shape) == (c, h, w) and dm.data_config.input_size == (c, h, w)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        x, y = next(iter(loader))
        assert tuple(x.shape[1:]) == (c, h, w), (loader, x.shape)
        assert x.dtype in (torch.uint8, torch.float32) and len(y) == len(x)


@pytest.mark.parametrize("shape,says", [("1,48,48", "FFCV decodes RGB only"), ("3,48,40", "square"),
                                        ("3,32,32", None)])
def test_ffcv_refuses_what_its_decoders_cannot_deliver(data, shape, says):
    from lit_imgcls.engine import build_datamodule

    where = "small_pack" if says is None else "photo_pack"
    with pytest.raises(UsageError, match=says or "does not resize"):
        build_datamodule(_recipe(dataset="ffcv", data_train=str(data[where]), image_shape=shape))


def test_a_plugin_that_ignores_image_shape_is_refused(data):
    """A DataModule that does not honour image_shape would train a network at another size than recorded."""
    from lit_imgcls.data.arrays import ArrayDataModule
    from lit_imgcls.engine import build_datamodule
    from lit_imgcls.registry import datasets

    class Stubborn(ArrayDataModule):
        def __init__(self, batch_size: int = 4, image_shape: str | None = None) -> None:
            super().__init__(np.zeros((8, 28, 28), np.uint8), np.arange(8) % 2, batch_size=batch_size)

    datasets.register("stubborn", Stubborn, override=True)
    try:  # registries are process-wide: a name left behind would show in every later `list datasets`
        with pytest.raises(UsageError, match="delivers images of shape 1,28,28, not image_shape 3,32,32"):
            build_datamodule(_recipe(dataset="stubborn", image_shape="3,32,32"))
    finally:
        datasets.unregister("stubborn")


def test_the_checkpoint_records_the_shape_and_predict_uses_it(tmp_path, mnist_arrays):
    """LeNet trained on MNIST at 3x32x32 (RGB, resized): the checkpoint says so, and predict turns a 28x28 grey
    digit file into exactly the input the validation data gave the network."""
    res = run_cli("fit", *quick_args(tmp_path, image_shape="3,32,32", num_examples=1280, fused_steps=1))
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = tmp_path / "model" / "mnist-0001.ckpt"
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["lit_imgcls"]
    assert meta["image_shape"] == [3, 32, 32] and meta["data_config"]["input_size"] == [3, 32, 32]
    assert meta["data_config"]["crop_mode"] == "squash"
    for i in range(20):
        Image.fromarray(mnist_arrays["test_images"][i]).save(tmp_path / f"d{i:02d}.png")
    out = run_cli("predict", "--checkpoint", str(ckpt), "--format", "json", "--top-k", "10",
                  *(str(tmp_path / f"d{i:02d}.png") for i in range(20)))
    assert out.returncode == 0, out.stderr
    predicted = [{p["class"]: p["probability"] for p in r["predictions"]} for r in json.loads(out.stdout)]

    from lit_imgcls.checkpoint_meta import load_module
    from lit_imgcls.data.mnist import MNISTDataModule

    module, _ = load_module(ckpt)
    dm = MNISTDataModule(image_shape="3,32,32", batch_size=20)
    dm.setup("validate")
    x, _ = next(iter(dm.val_dataloader()))
    with torch.inference_mode():
        probs = module(x[:20]).softmax(1)
    for i in range(20):
        want = {str(k): float(v) for k, v in enumerate(probs[i])}
        assert max(abs(predicted[i][k] - want[k]) for k in want) < 1e-5, i
