"""The GPU campaign's reduced size runs end to end on a CPU, and a second call redoes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def campaign(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_campaign.py"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=1200)


def test_a_call_past_its_deadline_starts_no_point_and_leaves_them_for_the_next(tmp_path):
    out = tmp_path / "campaign"
    result = campaign("--reduced", "--out", str(out), "--stage", "speed", "--deadline-s", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deadline reached" in result.stdout
    assert json.loads((out / "speed.json").read_text()) == []


# About four minutes of compiling on 2 cores: CI runs it with the slow tests.
@pytest.mark.slow
def test_reduced_campaign_runs_every_stage_and_continues_without_redoing(tmp_path):
    out = tmp_path / "campaign"
    first = campaign("--reduced", "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    speed = json.loads((out / "speed.json").read_text())
    assert not [r for r in speed if "error" in r], [r for r in speed if "error" in r]
    train = {(r["depth"], r["seeds"]) for r in speed if r["kind"] == "train"}
    assert train == {(4, 1), (8, 1), (8, 2), (12, 1), (12, 2), (16, 1)}
    sgd = {(r["depth"], r["block_unroll_setting"], r["command_buffers"]) for r in speed if r["kind"] == "sgd"}
    assert {(12, "1", False), (12, "all", False), (12, "1", True), (12, "all", True)} <= sgd
    stacked = [r for r in speed if r["kind"] == "train" and r["seeds"] == 2]
    assert all(r["env_steps_per_s_total"] == 2 * r["env_steps_per_s"] > 0 and r["tflops"] > 0 for r in stacked)
    assert "Whole training steps" in (out / "speed.md").read_text()
    sweep = json.loads((out / "sweep" / "sweep.json").read_text())
    assert [d["depth"] for d in sweep["by_depth"]] == [4, 8]
    result = json.loads((out / "compress.json").read_text())
    assert result["teacher_run"] == "depth_8_seed_0" and result["baseline_run"] == "depth_4_seed_0"
    assert result["scratch"]["depth"] == 4 and result["student"]["depth"] == 4
    assert (out / "student.onnx").stat().st_size > 0 and "time_at_goal" in result["onnx_closed_loop"]

    again = campaign("--reduced", "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep 1/2" not in again.stderr and "sweep 2/2" not in again.stderr
    assert json.loads((out / "speed.json").read_text()) == speed
    assert json.loads((out / "compress.json").read_text()) == result
