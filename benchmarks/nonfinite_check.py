"""What the per-step loss check costs: `fit` stops on a NaN loss by reading ``torch.isfinite(loss)`` before every
update (lit_imgcls.module.ImageClassifier._check_finite); this times the same training step with and without that
read, side by side.

A plain PyTorch loop (LeNet, SGD, the MNIST batch of 64; or ResNet-18 at 224 px with --network resnet18) runs
``--steps`` steps per trial in both variants, alternating, and reports the median steps/s of each and their ratio.
On the CPU the read is free (the loss is computed before it is read); on a GPU it makes the host wait for the
step's forward pass, which is what this measures there.

    python benchmarks/nonfinite_check.py [--network lenet|resnet18] [--steps 200] [--trials 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lit_imgcls.networks import create_network

from _common import save


def steps_per_second(net, x, y, opt, steps: int, check: bool, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    tic = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(net(x), y)
        if check and not bool(torch.isfinite(loss.detach())):
            raise RuntimeError("loss is not finite")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return steps / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="lenet", choices=["lenet", "resnet18"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.network == "lenet":
        net = create_network("lenet", num_classes=10, in_chans=1, img_size=28)
        x = torch.rand(64, 1, 28, 28)
    else:
        net = create_network("resnet18", num_classes=1000, in_chans=3, img_size=224)
        x = torch.rand(64, 3, 224, 224)
    net, x = net.to(device), x.to(device)
    y = torch.randint(0, 10, (64,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    steps_per_second(net, x, y, opt, max(10, args.steps // 10), True, device)  # warm-up
    runs: dict[str, list[float]] = {"unchecked": [], "checked": []}
    for _ in range(args.trials):
        for name in runs:
            runs[name].append(steps_per_second(net, x, y, opt, args.steps, name == "checked", device))
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["checked"] / med["unchecked"]
    print(f"{args.network} on {device}: unchecked {med['unchecked']:.1f} steps/s, checked {med['checked']:.1f} "
          f"steps/s, ratio {ratio:.3f}")
    save(f"nonfinite_check_{args.network}_{device.type}", {"steps_per_sec": med, "ratio_checked": ratio,
                                                           "trials": runs})


if __name__ == "__main__":
    main()
