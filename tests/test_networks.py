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
     ("inception_bn_small", 1, 28, 10), ("inception-bn", 3, 224, 1000), ("resnet18", 3, 32, 10), ("vgg11", 3, 32, 7)],
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
