"""``distill doctor``: the versions it reports are the installed ones, and a lock they differ from is
named, with a non-zero exit."""

from __future__ import annotations

import importlib.metadata
import json

from tests.conftest import ROOT, assert_one_line_error, run_cli_in_process


def test_doctor_reports_the_installed_versions_and_matches_the_projects_lock():
    result = run_cli_in_process("doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    versions = {p["name"]: p["installed"] for p in report["packages"]}
    for name in ("jax", "jaxlib", "flax", "optax", "brax", "mujoco", "orbax-checkpoint", "onnx", "onnxruntime"):
        assert versions[name] == importlib.metadata.version(name)
    assert report["devices"] and report["backend"] == "cpu"
    assert report["lock"] == str(ROOT / "constraints.txt") and report["differences"] == []


def test_doctor_names_a_version_that_differs_from_the_lock(tmp_path):
    lock = tmp_path / "constraints.txt"
    numpy = importlib.metadata.version("numpy")
    lock.write_text(f"# a lock\njax==0.0.1\nnumpy=={numpy}\n")
    result = run_cli_in_process("doctor", "--lock", str(lock))
    assert result.returncode == 1
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: jax {importlib.metadata.version('jax')} is installed, the lock has 0.0.1 "
        "(make install brings the locked versions)"
    ]


def test_doctor_refuses_an_unreadable_lock_in_one_line(tmp_path):
    assert_one_line_error(run_cli_in_process("doctor", "--lock", str(tmp_path / "missing.txt")), "cannot read the lock")
    bad = tmp_path / "bad.txt"
    bad.write_text("jax>=0.4\n")
    assert_one_line_error(run_cli_in_process("doctor", "--lock", str(bad)), "bad.txt:1", "not a 'name==version' line")
