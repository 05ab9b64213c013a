"""The GPU campaign: its bad input (a results folder from another card, a missing or mismatched speed
measurement), and its reduced depth stage end to end on a CPU, a second call redoing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import ROOT, assert_one_line_error

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_campaign  # noqa: E402


def campaign(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_campaign.py"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=1800)


def test_a_call_past_its_deadline_starts_no_point_and_leaves_them_for_the_next(tmp_path):
    out = tmp_path / "campaign"
    result = campaign("--reduced", "--out", str(out), "--stage", "speed", "--deadline-s", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deadline reached" in result.stdout
    assert json.loads((out / "speed.json").read_text()) == []


def test_a_results_folder_from_another_card_is_refused_without_writing(tmp_path):
    out = tmp_path / "campaign"
    out.mkdir()
    speed = [{"kind": "train", "name": "train d4", "device": "Some_Other_Card", "env_steps_per_s": 1.0}]
    (out / "speed.json").write_text(json.dumps(speed))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for stage in ("depth", "speed"):
        result = campaign("--reduced", "--out", str(out), "--stage", stage, "--work", str(tmp_path / "work"))
        assert result.returncode == 2
        assert_one_line_error(result, "Some_Other_Card", "nothing was written")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert json.loads((out / "speed.json").read_text()) == speed and not (tmp_path / "work").exists()


FULL = gpu_campaign.FULL["depth"]
CARD = "NVIDIA_H100_80GB_HBM3"


def train(depth, seeds, rate, env="ant", device=CARD, batch=512, compile_s=30.0):
    return {"kind": "train", "env": env, "depth": depth, "seeds": seeds, "env_steps_per_s": rate,
            "env_steps_per_s_total": rate * seeds, "batch_size": batch, "device": device, "compile_s": compile_s}


def test_a_missing_or_mismatched_speed_measurement_falls_back_to_the_stated_budget():
    for records, reason in ((None, "missing"), ([], "no whole-training-step"),
                            ([train(16, 1, 20_000, device="NVIDIA_H200")], "measured on NVIDIA_H200"),
                            ([train(16, 1, 20_000, env="humanoid")], "no measurement of ant_hardest_maze"),
                            ([train(16, 1, 20_000, batch=256)], "at batch 512"),
                            ([train(4, 1, 60_000)], "no measurement at depth 8")):
        budget = gpu_campaign.depth_budget(FULL, records, CARD)
        assert budget["budget_source"] == "fallback" and budget["total_steps"] == FULL["fallback_steps"] == 1_000_000
        assert reason in budget["budget_reason"] and "1,000,000" in budget["budget_reason"]


def test_the_budget_is_what_fits_the_sweep_at_the_measured_rates():
    # Only the one-seed depth-16 rate: both depths read it (never faster than deeper), divided by 2 seeds.
    budget = gpu_campaign.depth_budget(FULL, [train(16, 1, 20_000)], CARD)
    assert budget["budget_source"] == "measured" and budget["rates"] == {"4": 10_000, "8": 10_000}
    per_step = 512 * 62
    fits = (360 - 2 * 60) * 0.8 / (2 / 10_000)
    assert budget["total_steps"] == int(fits // per_step) * per_step
    # A stacked measurement of as many seeds is used as it stands, and the target caps the budget.
    fast = [train(4, 2, 500_000), train(8, 2, 400_000), train(8, 1, 450_000)]
    assert gpu_campaign.depth_budget(FULL, fast, CARD)["total_steps"] == FULL["target_steps"]
    stacked = gpu_campaign.depth_budget(FULL, [train(4, 2, 40_000), train(8, 4, 20_000)], CARD)
    assert stacked["rates"] == {"4": 40_000, "8": 20_000} and "stacked seeds" in stacked["budget_reason"]


# Several minutes of compiling on 2 cores: CI runs it with the slow tests.
@pytest.mark.slow
def test_reduced_depth_stage_brings_back_its_runs_and_pictures_and_a_second_call_redoes_nothing(tmp_path):
    out, work = tmp_path / "campaign", tmp_path / "work"
    first = campaign("--reduced", "--out", str(out), "--work", str(work), "--stage", "depth")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "(fallback)" in first.stdout and "speed.json is missing" in first.stdout
    dest = out / "depth"
    result = json.loads((dest / "depth.json").read_text())
    assert result["complete"] and result["budget_source"] == "fallback" and result["total_steps"] == 160
    assert result["depths"] == [4, 8] and result["seeds"] == [0, 1]
    assert result["teacher"]["depth"] == 8 and set(result["teacher"]["seeds"]) == {"0", "1"}
    assert result["scratch"]["run"] == f"depth_4_seed_{result['teacher']['best_seed']}"
    assert result["report"]["student"]["depth"] == 4 and result["report"]["scratch"]["depth"] == 4
    assert "time_at_goal" in result["onnx_closed_loop"] and result["onnx_closed_loop"]["episodes"] == 2
    # What comes back fits the device's limits: a few files, one folder deep.
    files = sorted(p.name for p in dest.iterdir())
    assert files == sorted(["depth.json", "depth.md", "student.onnx", "teacher.tar", "student.tar", "scratch.tar",
                            "pictures.tar"]) == result["files"]
    assert all(p.is_file() and p.stat().st_size < 16 * 2**20 for p in dest.iterdir())
    with tarfile.open(dest / "pictures.tar") as tar:
        names = set(tar.getnames())
    assert {"sweep.png", "report_maze.png", "critic_teacher.png", "critic_scratch.png", "sweep.json"} <= names
    for name in ("teacher", "student", "scratch"):
        with tarfile.open(dest / f"{name}.tar") as tar:
            assert f"{name}/config.json" in tar.getnames()
    for path in dest.iterdir():  # the machine's folders stay behind
        assert str(tmp_path).encode() not in path.read_bytes(), path.name
    table = (dest / "depth.md").read_text()
    assert "| policy | depth | parameters | time_at_goal (mean over seeds, and each seed) | success_any |" in table
    assert "filled on the CPU" in table

    again = campaign("--reduced", "--out", str(out), "--work", str(work), "--stage", "depth")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to redo" in again.stdout and "sweep depth" not in again.stderr
    assert json.loads((dest / "depth.json").read_text()) == result

    # The CPU user's half: the packed runs pass their recorded evaluations, and the latency fills the table.
    unpacked = campaign("--unpack", str(dest))
    assert unpacked.returncode == 0, unpacked.stderr[-3000:]
    assert (dest / "runs" / "teacher" / "checkpoints" / "best").is_dir()
    assert "us |" in (dest / "depth.md").read_text()
    assert json.loads((dest / "depth.json").read_text())["cpu"]["onnx_p50_us"] > 0
