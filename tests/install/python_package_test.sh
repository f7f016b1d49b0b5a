#!/usr/bin/env bash
# `cmake --install <build> --component python` into a staging root (DESTDIR), then the installed
# package imports and runs a one-rank DualPipeV step from a folder with nothing else in it.
#   python_package_test.sh BUILD_DIR PYTHON
set -euo pipefail
build=$1
python=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR="$stage" cmake --install "$build" --component python >/dev/null
site=$(find "$stage" -type d -name dualpipe -path '*-packages/*' | head -n 1)
[ -n "$site" ] || { echo "no dualpipe package under $stage" >&2; exit 1; }
[ -f "$site/__init__.py" ] && ls "$site"/_C*.so >/dev/null
cd "$stage"
PYTHONPATH=$(dirname "$site") "$python" - <<'PY'
import os, tempfile
import torch, torch.distributed as dist
import dualpipe
assert os.path.dirname(dualpipe.__file__).startswith(os.environ.get("PWD", "/nonexistent")), dualpipe.__file__
with tempfile.TemporaryDirectory() as tmp:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
    model = dualpipe.DualPipeV([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])
    x = torch.randn(4, 4)
    loss, _ = model.step(x, num_chunks=2, criterion=lambda y, l: ((y - l) ** 2).mean(), labels=(x,))
    assert loss.shape == (2,), loss
    dist.destroy_process_group()
print("installed package ok:", dualpipe.__file__)
PY
