#!/usr/bin/env bash
# Puts into ./.whl the wheels a GPU machine without brax and mujoco needs (Python 3.12, x86-64 Linux),
# at the versions constraints.txt locks, so the GPU runs what the tests here ran. launch.sh installs
# them there. Run from anywhere with the project's pip: benchmarks/gpu/wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
names="brax mujoco mujoco-core mujoco-studio mujoco-studio-wasm mujoco-mjx jaxopt ml-collections trimesh tensorboardx
  glfw pyopengl websockets flask flask-cors blinker itsdangerous"
specs=()
for name in $names; do
  pin=$(grep -iE "^${name//-/[-_]}==" constraints.txt | head -n 1 || true)
  if [[ -z $pin ]]; then echo "error: constraints.txt locks no version of $name" >&2; exit 2; fi
  specs+=("$pin")
done
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${specs[@]}"
du -sh .whl
