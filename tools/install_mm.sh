#!/usr/bin/env bash
# Install the OpenMMLab extra of c2fmae (`c2fmae[mm]`) into the current Python environment.
#
#   bash tools/install_mm.sh            # idempotent; ~10 min the first time on 2 cores, < 1 min after
#
# * mmcv 2.1.0 has no wheels for recent torch, so it is built from its PyPI source release against
#   the installed torch: MMCV_WITH_OPS=1, --no-build-isolation (an isolated build has no torch and
#   silently drops the compiled ops), setup.py switched from -std=c++17 to -std=c++20 (torch >= 2.14
#   headers refuse older standards). The wheel is stripped of debug info (~32 MB -> ~1.4 MB) and kept
#   in ${C2FMAE_WHEEL_CACHE:-$HOME/.cache/c2fmae/wheels}/<torch version>/ so the next run only installs.
# * then mmengine 0.10.7, mmdet 3.3.0, mmsegmentation 1.2.2, ftfy, regex, setuptools<81 (mmcv's build
#   and mmengine's `mmdet::` config lookup import pkg_resources).
# * torch / torchvision are never touched: a constraints file pins them to the installed versions.
# * OpenCV: opencv-python-headless (no libGL needed) >= 4.13 (older 4.12 wheels cap numpy < 2.3) and < 5
#   (mmcv 2.1 targets the 4.x API); it is installed before the build so mmcv's wheel does not pull the
#   GUI opencv-python. numpy: NUMPY_SPEC (see the report in benchmarks/README.md / the mm README section).
#
# Environment: PYTHON (default python), C2FMAE_WHEEL_CACHE, MAX_JOBS (default: all cores),
# FORCE_CUDA=1 to build the CUDA ops on a machine whose GPU is not visible at build time.
set -euo pipefail

PY=${PYTHON:-python}
MMCV_VERSION=2.1.0
NUMPY_SPEC=${C2FMAE_NUMPY_SPEC:-"numpy>=1.26"}
OPENCV_SPEC="opencv-python-headless>=4.13,<5"
CACHE_ROOT=${C2FMAE_WHEEL_CACHE:-$HOME/.cache/c2fmae/wheels}

log() { echo "[install_mm] $*" >&2; }
die() { echo "[install_mm] ERROR: $*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "python interpreter '$PY' not found (set PYTHON=...)"
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)') \
  || die "torch is not importable with $PY; install torch first (the mm extra builds mmcv against it)"
TV_VERSION=$("$PY" -c 'import torchvision; print(torchvision.__version__)') \
  || die "torchvision is not importable with $PY; install the torchvision matching torch $TORCH_VERSION"
CUDA_BUILD=$("$PY" -c 'import os, torch; print(int(torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "1"))')
VARIANT="torch-${TORCH_VERSION//+/_}-$([ "$CUDA_BUILD" = 1 ] && echo cuda || echo cpu)"
CACHE_DIR="$CACHE_ROOT/$VARIANT"
mkdir -p "$CACHE_DIR"
log "python $("$PY" -c 'import sys; print(sys.version.split()[0])'), torch $TORCH_VERSION, torchvision $TV_VERSION, build $VARIANT"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Everything pip installs here is resolved against these pins (on top of any global constraints).
base_torch=${TORCH_VERSION%%+*}
base_tv=${TV_VERSION%%+*}
cat > "$WORK/constraints.txt" <<EOF
torch==$base_torch
torchvision==$base_tv
$NUMPY_SPEC
$OPENCV_SPEC
setuptools<81
EOF
PIP=("$PY" -m pip install --constraint "$WORK/constraints.txt")

# ---- 1. build prerequisites (pkg_resources for mmcv's setup.py; numpy/opencv pins) -------------------
"${PIP[@]}" "setuptools<81" wheel ninja "$NUMPY_SPEC" "$OPENCV_SPEC" \
  || die "could not install the build prerequisites (setuptools<81, wheel, ninja, numpy, opencv-python-headless)"

# ---- 2. the mmcv wheel: cached, or built from the sdist -----------------------------------------------
WHEEL=$(ls "$CACHE_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$WHEEL" ]; then
  log "no cached mmcv $MMCV_VERSION wheel in $CACHE_DIR: building from source (about 10 min on 2 cores)"
  "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$WORK/sdist" "mmcv==$MMCV_VERSION" \
    || die "could not download the mmcv==$MMCV_VERSION source release from PyPI"
  SDIST=$(ls "$WORK"/sdist/mmcv-"$MMCV_VERSION".tar.gz) || die "mmcv sdist not found in $WORK/sdist"
  tar -xzf "$SDIST" -C "$WORK"
  SRC="$WORK/mmcv-$MMCV_VERSION"
  grep -q -- "-std=c++17" "$SRC/setup.py" || die "$SRC/setup.py has no -std=c++17 flag to patch (unexpected mmcv source)"
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
  ( cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel --no-build-isolation --no-deps -w "$WORK/dist" . ) \
    || die "building mmcv $MMCV_VERSION failed (see the compiler output above)"
  BUILT=$(ls "$WORK"/dist/mmcv-"$MMCV_VERSION"-*.whl) || die "the mmcv build produced no wheel"
  # Strip debug info from the extension modules and rewrite RECORD with the new hashes.
  "$PY" - "$BUILT" "$WORK/strip" <<'EOF' || die "stripping the mmcv wheel failed"
import base64, csv, hashlib, io, os, subprocess, sys, zipfile
src, tmp = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(src) as zf:
    zf.extractall(tmp)
    names = zf.namelist()
record = next(n for n in names if n.endswith(".dist-info/RECORD"))
sos = [n for n in names if n.endswith(".so")]
assert sos, f"{src}: no compiled extension inside (was MMCV_WITH_OPS=1 honoured?)"
subprocess.run(["strip", "--strip-debug", *[os.path.join(tmp, n) for n in sos]], check=True)
rows = []
for n in names:
    if n == record:
        rows.append((n, "", ""))
        continue
    data = open(os.path.join(tmp, n), "rb").read()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    rows.append((n, f"sha256={digest}", str(len(data))))
buf = io.StringIO()
csv.writer(buf, lineterminator="\n").writerows(rows)
open(os.path.join(tmp, record), "w").write(buf.getvalue())
out = src + ".tmp"
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for n in names:
        zf.write(os.path.join(tmp, n), n)
os.replace(out, src)
EOF
  cp "$BUILT" "$CACHE_DIR/.$(basename "$BUILT").tmp"
  mv "$CACHE_DIR/.$(basename "$BUILT").tmp" "$CACHE_DIR/$(basename "$BUILT")"
  WHEEL="$CACHE_DIR/$(basename "$BUILT")"
  log "cached $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1)) in $CACHE_DIR"
else
  log "using cached $WHEEL"
fi

# ---- 3. install ------------------------------------------------------------------------------------
# mmengine 0.10.7 requires the GUI `opencv-python` (libGL) next to the headless one, and two OpenCV wheels
# overwrite each other's cv2/: install it without dependencies and its dependencies (minus OpenCV) here.
# Then the mmcv wheel (so pip never tries to build mmcv), then mmdet / mmseg.
"${PIP[@]}" addict matplotlib "$NUMPY_SPEC" pyyaml rich termcolor yapf "$OPENCV_SPEC" \
  || die "installing mmengine's dependencies failed"
"${PIP[@]}" --no-deps "mmengine==0.10.7" || die "installing mmengine==0.10.7 failed"
# --force-reinstall: an mmcv 2.1.0 already there may be an ops-less build (`pip install c2fmae[mm]` builds mmcv
# in an isolated environment without torch); --no-deps: its dependencies are all installed just above, and
# resolving them would walk into mmengine's and pull the GUI opencv-python. mmdet / mmseg name neither.
"${PIP[@]}" --force-reinstall --no-deps "$WHEEL" || die "installing $WHEEL failed"
"${PIP[@]}" "mmdet==3.3.0" "mmsegmentation==1.2.2" ftfy regex "setuptools<81" "$NUMPY_SPEC" "$OPENCV_SPEC" \
  || die "installing mmdet/mmsegmentation failed"
# Repair an environment where something did pull opencv-python (it overwrote the headless cv2/ files).
if "$PY" -m pip show -q opencv-python >/dev/null 2>&1; then
  log "removing the GUI opencv-python (mmengine's declared dependency) in favour of opencv-python-headless"
  "$PY" -m pip uninstall -y opencv-python || die "uninstalling opencv-python failed"
  "${PIP[@]}" --force-reinstall --no-deps "$OPENCV_SPEC" || die "reinstalling $OPENCV_SPEC failed"
fi

# ---- 4. verify ----------------------------------------------------------------------------------------
"$PY" - "$TORCH_VERSION" "$TV_VERSION" <<'EOF' || die "verification failed (see above)"
import sys
import torch, torchvision
assert torch.__version__ == sys.argv[1], f"torch changed: {sys.argv[1]} -> {torch.__version__}"
assert torchvision.__version__ == sys.argv[2], f"torchvision changed: {sys.argv[2]} -> {torchvision.__version__}"
import cv2, mmcv, mmdet, mmengine, mmseg, numpy
assert cv2.__version__.startswith("4."), f"OpenCV {cv2.__version__}: mmcv 2.1 needs the 4.x API"
from mmcv.ops import RoIAlign, nms  # compiled ops present
import pkg_resources  # noqa: F401  (mmengine's mmdet:: config lookup)
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)[1]
assert keep.tolist() == [0], keep
print(f"[install_mm] ok: mmcv {mmcv.__version__} (ops), mmengine {mmengine.__version__}, "
      f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, numpy {numpy.__version__}, opencv {cv2.__version__}, "
      f"torch {torch.__version__}")
EOF
