"""Crafted checkpoints for tests: plain dicts of tensors, lists, strings and numbers written with ``torch.save``,
as a hostile or damaged file would be (each loads with ``weights_only=True``; nothing in them runs).

``checkpoint(...)`` gives what ``lit-imgcls fit`` writes (the parts commands read); a test changes one field and
writes it with :func:`write`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]


def weights(network: str = "mlp", classes: int = 10, shape: tuple[int, int, int] = (1, 28, 28)) -> dict:
    """A freshly initialised ``network``'s tensors under the names an ImageClassifier gives them (``net.``)."""
    from lit_imgcls.networks import create_network

    c, h, w = shape
    net = create_network(network, num_classes=classes, in_chans=c, img_size=h if h == w else (h, w))
    return {f"net.{k}": v for k, v in net.state_dict().items()}


def checkpoint(network: str = "mlp", classes: int = 10, shape: tuple[int, int, int] = (1, 28, 28),
               state_dict: Any = None) -> dict:
    """A checkpoint as ``fit`` writes it: ``state_dict`` (default: real weights of ``network``) and the
    ``lit_imgcls`` meta (recipe, class names, flat image_shape/mean/std, data_config)."""
    from lit_imgcls.recipe import Recipe

    recipe = dataclasses.asdict(Recipe(network=network, dataset="mnist", lr_schedule="constant"))
    c = shape[0]
    mean, std = (MNIST_MEAN, MNIST_STD) if c == 1 else ([0.5] * c, [0.25] * c)
    return {
        "epoch": 0,
        "global_step": 10,
        "state_dict": weights(network, classes, shape) if state_dict is None else state_dict,
        "lit_imgcls": {
            "version": "0.2.0",
            "recipe": recipe,
            "class_names": [str(i) for i in range(classes)],
            "image_shape": list(shape),
            "mean": list(mean),
            "std": list(std),
            "data_config": {"input_size": list(shape), "crop_mode": "squash", "crop_pct": 0.875,
                            "interpolation": "area", "mean": list(mean), "std": list(std), "resizer": "opencv"},
        },
    }


def write(path: Path, ckpt: Any) -> Path:
    """``torch.save`` of ``ckpt`` to ``path`` (no checksum file: a crafted checkpoint comes without one)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


# One malformed field each: (name, where it sits, the value). "meta" is checkpoint["lit_imgcls"], "data_config"
# its data_config, "recipe" its recipe, "top" the checkpoint itself.
MALFORMED = [
    ("image_shape_text", "meta", "image_shape", "abc"),
    ("class_names_int", "meta", "class_names", 5),
    ("class_names_empty", "meta", "class_names", []),
    ("class_names_not_strings", "meta", "class_names", [1.5] * 10),
    ("state_dict_list", "top", "state_dict", [1, 2, 3]),
    ("state_dict_of_strings", "top", "state_dict", {"net.head.bias": "x"}),
    ("recipe_text", "meta", "recipe", "network: lenet"),
    ("mean_text", "data_config", "mean", ["a"]),
    ("mean_wrong_length", "data_config", "mean", [0.1, 0.2]),
    ("std_zero", "data_config", "std", [0.0]),
    ("input_size_huge", "data_config", "input_size", [1, 100_000, 100_000]),
    ("input_size_too_many_pixels", "data_config", "input_size", [1, 16384, 16384]),
    ("input_size_text", "data_config", "input_size", "abc"),
    ("channels_zero", "data_config", "input_size", [0, 28, 28]),
    ("data_config_list", "meta", "data_config", [1, 28, 28]),
    ("recipe_network_int", "recipe", "network", 5),
    ("recipe_lr_text", "recipe", "lr", "fast"),
    ("recipe_image_shape_huge", "recipe", "image_shape", "1,100000,100000"),
    ("version_int", "meta", "version", 2),
    ("position_text", "top", "lit_imgcls_position", {"epoch": "one"}),
    ("pretrained_text", "meta", "pretrained", "weights.pt"),
]


def malformed(name: str, **kwargs) -> dict:
    """``checkpoint(**kwargs)`` with the field of :data:`MALFORMED` called ``name`` replaced."""
    _, where, key, value = next(m for m in MALFORMED if m[0] == name)
    ckpt = checkpoint(**kwargs)
    target = {"top": ckpt, "meta": ckpt["lit_imgcls"], "data_config": ckpt["lit_imgcls"]["data_config"],
              "recipe": ckpt["lit_imgcls"]["recipe"]}[where]
    target[key] = value
    return ckpt
