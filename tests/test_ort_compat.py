"""The exported file runs in old onnxruntime builds (robots upgrade slowly). Needs PyPI: marked slow."""

import json
import subprocess
import sys
import venv

import pytest

from tests.conftest import ROOT, run_cli

SCRIPT = """
import sys, json, numpy as np
sys.path.insert(0, sys.argv[1])
from export.runtime import OnnxPolicy
import onnxruntime as ort
p = OnnxPolicy(sys.argv[2])
a = p(np.full((3, p.state_dim), 0.1, np.float32), np.full((3, p.goal_dim), -0.1, np.float32))
one = p(np.full(p.state_dim, 0.1, np.float32), np.full(p.goal_dim, -0.1, np.float32))  # the bound fast path
try:
    p(np.full(p.state_dim, np.nan, np.float32), np.zeros(p.goal_dim, np.float32))
    refused = False
except ValueError:
    refused = True
print(json.dumps({"version": ort.__version__, "action": a.tolist() + [one.tolist()], "refused_nan": refused}))
"""


@pytest.mark.slow
def test_exported_policy_loads_in_onnxruntime_1_16(tiny_student_run, tmp_path):
    out = tmp_path / "policy.onnx"
    assert run_cli("export", str(tiny_student_run), "--out", str(out)).returncode == 0
    env_dir = tmp_path / "ort116"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "onnxruntime==1.16.3", "numpy<2"], capture_output=True, text=True
    )
    if install.returncode != 0:
        pytest.skip(f"onnxruntime 1.16.3 could not be installed: {install.stderr.strip()[-200:]}")
    old = subprocess.run([str(python), "-c", SCRIPT, str(ROOT), str(out)], capture_output=True, text=True)
    assert old.returncode == 0, old.stderr
    new = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), str(out)], capture_output=True, text=True)
    a, b = json.loads(old.stdout), json.loads(new.stdout)
    assert a["version"] == "1.16.3" and a["refused_nan"] and b["refused_nan"]
    assert max(abs(x - y) for ra, rb in zip(a["action"], b["action"]) for x, y in zip(ra, rb)) < 1e-5
