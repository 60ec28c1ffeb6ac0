#!/usr/bin/env bash
# Set up this machine for lit-imgcls: Debian packages FFCV builds against, PyTorch, then lit-imgcls and its
# pinned dependencies (constraints.txt), into the Python that PYTHON names (default python3).
# Idempotent: a second run checks and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_PAIR=(torch==2.14.1 torchvision==0.29.1)   # the pair that works on this CPU machine (CUDA build, runs on CPU)
APT_PACKAGES=(pkg-config libturbojpeg0-dev libopencv-dev
              openssh-server openssh-client rsync iproute2   # lit-imgcls launch and its two-host test
              chromium)   # tests/test_plot.py opens plot's HTML page in a headless browser
stamp=".setup-stamp"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)

# Done already if the stamp matches and lit_imgcls imports from this checkout (not another clone's install;
# -I keeps the current folder off sys.path, so the check sees the installed package).
here=$(pwd -P)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -I - "$here" <<'PYCHECK' 2>/dev/null; then
import importlib.util, os, sys
import lit_imgcls
assert all(importlib.util.find_spec(m) for m in ("ffcv", "timm", "torchvision", "kornia", "lightning", "pytest"))
sys.exit(0 if os.path.realpath(lit_imgcls.__file__).startswith(sys.argv[1] + os.sep) else 1)
PYCHECK
  exit 0
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Keep a torch that already works with its torchvision (a GPU machine's); otherwise install the known pair.
if "$PY" -c "import torch, torchvision; torchvision.ops.nms" 2>/dev/null; then
  torch_pins=("torch==$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
              "torchvision==$("$PY" -c 'import torchvision; print(torchvision.__version__.split("+")[0])')")
else
  echo "setup: installing ${TORCH_PAIR[*]} (a few minutes)"
  torch_pins=("${TORCH_PAIR[@]}")
fi

echo "setup: installing lit-imgcls and its pinned dependencies"
# torch is named in the same command so that nothing that depends on it can pull another build.
"$PY" -m pip install --quiet --disable-pip-version-check -c constraints.txt "${torch_pins[@]}" pillow -e '.[all,dev]'
"$PY" -c "import lit_imgcls, ffcv, timm, torchvision, kornia"
echo "$want" > "$stamp"
echo "setup: done ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
