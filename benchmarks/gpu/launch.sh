#!/usr/bin/env bash
# One stage of the GPU campaign as one call to a GPU machine: installs the wheels that travel with
# the tree, checks the devices and imports, sets up the compile cache, runs the stage with a deadline
# 60 s below the call's limit, and keeps a log beside the results.
#
#   OUT=/where/results/go LIMIT_S=600 benchmarks/gpu/launch.sh depth [campaign options]
#   OUT=/where/results/go LIMIT_S=600 benchmarks/gpu/launch.sh speed
#
# OUT: the folder whose files come back (every result and the log go there; at most 8 files).
# LIMIT_S: the call's wall-clock limit in seconds (default 600). PYTHON: the interpreter (python3).
# WHEELS: a folder of wheels to install first (default .whl, made by benchmarks/gpu/wheels.sh), used
# only where the interpreter cannot already import brax and mujoco.
set -uo pipefail
started=$(date +%s)
stage=${1:-}
if [[ $stage != depth && $stage != speed ]]; then
  echo "error: usage: OUT=DIR LIMIT_S=SECONDS benchmarks/gpu/launch.sh depth|speed [options]" >&2
  exit 2
fi
shift
cd "$(dirname "$0")/../.."
limit=${LIMIT_S:-600}
py=${PYTHON:-python3}
wheels=${WHEELS:-.whl}
if [[ -z ${OUT:-} ]]; then
  echo "error: set OUT to the folder whose files come back" >&2
  exit 2
fi
if ! mkdir -p "$OUT" 2>/dev/null || ! touch "$OUT/log" 2>/dev/null; then
  echo "error: cannot write to OUT=$OUT" >&2
  exit 2
fi
exec > >(tee -a "$OUT/log") 2>&1
echo "launch: stage $stage, limit ${limit} s, $(date -u +%Y-%m-%dT%H:%M:%SZ)"

if ! "$py" -c 'import brax, mujoco' 2>/dev/null; then
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "error: this interpreter lacks brax/mujoco and $wheels holds no wheels (make them with benchmarks/gpu/wheels.sh)"
    exit 3
  fi
  site=${TMPDIR:-/tmp}/distill-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
    || { echo "error: installing the wheels in $wheels failed"; exit 3; }
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  echo "launch: installed $(ls "$wheels"/*.whl | wc -l) wheels from $wheels in $(( $(date +%s) - started )) s"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$PWD/runs/jax_cache}
mkdir -p "$JAX_COMPILATION_CACHE_DIR"

"$py" - <<'PY' || { echo "error: the environment check failed"; exit 3; }
import importlib.metadata as md
import jax, brax, mujoco  # noqa: F401
names = ("jax", "jaxlib", "flax", "optax", "brax", "mujoco", "mujoco-mjx", "orbax-checkpoint", "onnx", "onnxruntime")
versions = []
for name in names:
    try:
        versions.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        versions.append(f"{name} missing")
print("launch: devices", jax.devices(), "|", ", ".join(versions), flush=True)
PY

deadline=$(( limit - 60 - ($(date +%s) - started) ))
echo "launch: $(( $(date +%s) - started )) s spent before the stage; its deadline is ${deadline} s from its start"
"$py" benchmarks/gpu/campaign.py --stage "$stage" --out "$OUT" --deadline-s "$deadline" "$@"
status=$?
echo "launch: stage $stage ended with status $status after $(( $(date +%s) - started )) s"
ls -l "$OUT"
exit $status
