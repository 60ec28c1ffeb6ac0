"""Regenerates docs/report.png, the README's example of `lit-imgcls score --report`.

Trains LeNet for 3 epochs on 3,000 MNIST digits (the packaged copy: no download), scores it on the 10,000 test
digits with ``--report``, opens the page in headless Chromium and keeps its first screen as a 256-colour PNG (under
300 KB). One to two minutes on two CPU cores. Needs chromium (``apt-get install chromium``).

    python docs/make_report_image.py            # writes docs/report.png
    python docs/make_report_image.py --keep DIR # also keeps the run, the report and its JSON in DIR
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
WIDTH, HEIGHT = 1200, 1540  # the page down to the reliability diagram and top-k accuracy


def cli(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "lit_imgcls", *args], cwd=cwd, check=True, stdin=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the run and the report in this folder")
    parser.add_argument("--out", type=Path, default=DOCS / "report.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("make_report_image: chromium is not installed (apt-get install chromium)")
    work = Path(tempfile.mkdtemp(prefix="report-image-")) if args.keep is None else args.keep.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cli("fit", "--network", "lenet", "--dataset", "mnist", "--num-examples", "3000", "--num-epochs", "3",
        "--batch-size", "64", "--lr", "0.05", "--lr-schedule", "constant", "--progress-bar", "false",
        "--model-prefix", "model/mnist", "--run-dir", "runs", cwd=work)
    cli("score", "--checkpoint", "model/mnist-0003.ckpt", "--report", "report/mnist-lenet.html", cwd=work)
    shot = work / "screen.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={work / 'chromium-profile'}", f"--window-size={WIDTH},{HEIGHT}",
                    f"--screenshot={shot}", (work / "report" / "mnist-lenet.html").as_uri()],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    from PIL import Image

    from lit_imgcls.io import atomic_write

    # 256 colours: the page is flat colour and grey digits, so this loses nothing visible and a third of the bytes.
    image = Image.open(shot).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    atomic_write(args.out, lambda f: image.save(f, format="PNG", optimize=True))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
