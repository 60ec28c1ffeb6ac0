"""Networks: the seed's own (registered into timm), timm's by name, and weights from local files only."""

from __future__ import annotations

import pytest
import timm
import torch

from conftest import quick_args, run_cli

from lit_imgcls.errors import UsageError
from lit_imgcls.networks import create_network, load_pretrained


@pytest.mark.parametrize(
    "name, chans, size, classes",
    [("lenet", 1, 28, 10), ("lenet", 3, 32, 10), ("mlp", 1, 28, 10), ("inception-bn-small", 3, 32, 10),
     ("inception_bn_small", 1, 28, 10), ("inception-bn", 3, 224, 1000), ("resnet18", 3, 32, 10), ("vgg11", 3, 32, 7),
     ("resnet9", 3, 32, 10), ("resnet9", 1, 28, 10), ("resnet9-small", 3, 64, 14), ("resnet9_small", 1, 7, 2)],
)
def test_network_builds_and_outputs_logits(name, chans, size, classes):
    net = create_network(name, num_classes=classes, in_chans=chans, img_size=size)
    with torch.no_grad():
        out = net.eval()(torch.randn(2, chans, size, size))
    assert out.shape == (2, classes)


def test_settings_a_network_refuses_are_one_line(tmp_path):
    """lenet's own check (images of at least 16 px) was a ValueError traceback: now one line naming the network,
    from the library call and from `fit` alike."""
    with pytest.raises(UsageError, match=r"network 'lenet' cannot be built for this data: .*at least 16 px, got 8"):
        create_network("lenet", num_classes=2, in_chans=3, img_size=8)
    res = run_cli("fit", *quick_args(tmp_path, image_shape="1,8,8"), cwd=tmp_path)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "at least 16 px" in lines[0], res.stderr[-2000:]


def test_seed_networks_are_in_timms_registry():
    create_network("lenet", num_classes=10, in_chans=1, img_size=28)
    assert timm.is_model("lenet")
    assert timm.create_model("lenet", num_classes=3).head.out_features == 3


def test_mxnet_num_layers_picks_the_timm_depth():
    net = create_network("resnet", num_classes=10, num_layers=34)
    assert net.default_cfg["architecture"] == "resnet34"


def test_pretrained_from_local_files(tmp_path):
    src = create_network("lenet", num_classes=10, in_chans=1, img_size=28)
    # plain state_dict, a lit-imgcls-style checkpoint (prefixed keys under state_dict) and safetensors
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, tmp_path / "lit.ckpt")
    from safetensors.torch import save_file

    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    for name in ("plain.pt", "lit.ckpt", "w.safetensors"):
        dst = create_network("lenet", num_classes=10, in_chans=1, img_size=28, pretrained=str(tmp_path / name))
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v), (name, k)


def test_pretrained_with_other_class_count_reports_skipped_and_new(tmp_path):
    src = create_network("lenet", num_classes=10, in_chans=1, img_size=28)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = create_network("lenet", num_classes=4, in_chans=1, img_size=28)
    report = load_pretrained(dst, tmp_path / "w.pt")
    assert set(report.skipped) == {"head.weight", "head.bias"}
    assert set(report.new) == {"head.weight", "head.bias"}
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    assert "skipped 2" in report.summary()


@pytest.mark.parametrize("where", ["https://example.org/w.pth", "hf-hub:timm/resnet18.a1_in1k", "/no/such/file.pt"])
def test_pretrained_never_downloads(where):
    with pytest.raises(UsageError):
        create_network("lenet", num_classes=10, in_chans=1, img_size=28, pretrained=where)


def test_pretrained_file_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "marker"),))

    import pickle

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(UsageError, match="holds Python objects besides tensors and plain data.*runs no code from a file"):
        create_network("lenet", num_classes=10, in_chans=1, img_size=28, pretrained=str(tmp_path / "evil.pt"))
    assert not (tmp_path / "marker").exists()


def test_resnet9_layout_width_and_refusals():
    """ResNet-9 (lit_imgcls.networks.resnet9): the records' 64-128-256-512 channels and 6.57 M parameters at width 1,
    a quarter of the channels for resnet9_small, logits scaled by 1/8, and a bad option refused in one line."""
    from lit_imgcls.networks.resnet9 import ResNet9

    full = create_network("resnet9", num_classes=10, in_chans=3)
    small = create_network("resnet9_small", num_classes=10, in_chans=3)
    assert isinstance(full, ResNet9) and sum(p.numel() for p in full.parameters()) == 6_573_120
    assert sum(p.numel() for p in small.parameters()) == 412_944 and small.num_features == 128
    assert [m.out_channels for m in full.modules() if isinstance(m, torch.nn.Conv2d)] == [64, 128, 128, 128, 256, 512,
                                                                                            512, 512]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full.eval()
        assert torch.allclose(full(x), full.head(full.pool(full.forward_features(x)).flatten(1)) / 8)
    assert create_network("resnet9", num_classes=10, width=0.5, pool="avg").num_features == 256
    full.reset_classifier(4)
    assert full.get_classifier().out_features == 4 and full(x).shape == (3, 4)
    for bad, says in (({"width": 0}, "width must be > 0"), ({"pool": "median"}, "pool must be one of max, avg")):
        with pytest.raises(UsageError, match=f"network 'resnet9' cannot be built for this data: resnet9 {says}"):
            create_network("resnet9", num_classes=10, **bad)


def test_resnet9_trains_one_epoch_and_is_listed(tmp_path, capsys, mnist_arrays):
    """A one-epoch fit of resnet9_small on 384 MNIST digits (with the pad-2 crop of recipes/mnist-augment.yaml) learns
    and saves a checkpoint of the network; `list networks` names both ResNet-9 entries and where they come from."""
    import numpy as np

    from lit_imgcls.cli import main
    from lit_imgcls.io import load_checkpoint

    np.savez(tmp_path / "digits.npz", x_train=mnist_arrays["train_images"][:384],
             y_train=mnist_arrays["train_labels"][:384], x_val=mnist_arrays["test_images"][:200],
             y_val=mnist_arrays["test_labels"][:200])
    prefix = tmp_path / "m"
    args = dict(network="resnet9_small", dataset="npz", data_train=str(tmp_path / "digits.npz"), batch_size=32,
                lr=0.2, lr_schedule="onecycle", threads=1, progress_bar=False, model_prefix=str(prefix),
                run_dir=str(tmp_path / "runs"), num_epochs=2, augment="[{name: random_crop, pad: 2}]")
    capsys.readouterr()
    assert main(["fit", *[f"--{k.replace('_', '-')}={v}" for k, v in args.items()]]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("Validation-accuracy=")[-1].split()[0])
    assert acc > 0.3, out[-2000:]  # chance is 0.1
    state = load_checkpoint(f"{prefix}-0002.ckpt")["state_dict"]
    assert state["net.features.0.0.weight"].shape == (16, 1, 3, 3) and "net.features.3.4.body.0.weight" in state
    assert main(["list", "networks"]) in (0, None)
    listed = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines() if "\t" in line)
    assert "lit_imgcls.networks.resnet9:resnet9)" in listed["resnet9"]
    assert "lit_imgcls.networks.resnet9:resnet9_small)" in listed["resnet9_small"]
