"""The GPU campaign: bad input refused before anything is written (the depth stage, its home half,
the speed stage), and, in the slow set, the reduced depth stage cut by its deadline, continued by a
second call from the compile cache, and taken home; the speed stage's cut points say what they were
doing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import ROOT, assert_one_line_error

CAMPAIGN = ROOT / "benchmarks" / "gpu" / "campaign.py"


def campaign(*args: str, cache=None, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [sys.executable, str(CAMPAIGN), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


def files_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


def test_a_deadline_shorter_than_the_probe_is_refused_before_anything_is_written(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = campaign("--stage", "depth", "--reduced", "--out", str(out), "--work", str(work), "--deadline-s", "5")
    assert result.returncode == 2
    assert_one_line_error(result, "--deadline-s 5", "shorter than the probe", "nothing was written")
    assert not out.exists() and not work.exists()


def test_a_results_folder_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = campaign(
        "--stage",
        "depth",
        "--reduced",
        "--out",
        str(blocker / "out"),
        "--work",
        str(tmp_path / "work"),
        "--deadline-s",
        "200",
    )
    assert result.returncode == 2
    assert_one_line_error(result, "cannot write to the results folder")
    assert not (tmp_path / "work").exists()
    speed = campaign("--stage", "speed", "--reduced", "--out", str(blocker / "out"), "--deadline-s", "100")
    assert speed.returncode == 2
    assert_one_line_error(speed, "cannot write to the results folder")


def _record(work, **changes):
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu.depth import PLANS, RECORD

    plan = PLANS["reduced"]
    record = {**plan.settings(), "target_steps": plan.target_steps, "device": "cpu", "calls": [], **changes}
    work.mkdir(parents=True)
    (work / RECORD).write_text(json.dumps(record))
    return work / RECORD


def test_a_continuing_call_with_other_settings_or_a_smaller_budget_is_refused(tmp_path):
    out = tmp_path / "out"
    cases = [
        (dict(epoch_steps=99), ("epoch_steps: 2 here, 99 there", "only the budget may change")),
        (dict(target_steps=10**9), ("may only raise it",)),
        (dict(device="NVIDIA_H200"), ("trained on NVIDIA_H200, not on this cpu",)),
    ]
    for index, (changes, fragments) in enumerate(cases):
        work = tmp_path / f"work{index}"
        path = _record(work, **changes)
        before = path.read_bytes()
        result = campaign(
            "--stage", "depth", "--reduced", "--out", str(out), "--work", str(work), "--deadline-s", "200"
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert_one_line_error(result, *fragments)
        assert path.read_bytes() == before and files_under(work) == ["depth_config.json"]


def test_home_refuses_a_folder_missing_files_or_recorded_on_another_card(tmp_path):
    came_back = tmp_path / "came_back"
    came_back.mkdir()
    missing = campaign("--home", str(came_back), "--out", str(tmp_path / "results"))
    assert missing.returncode == 2
    assert_one_line_error(missing, "depth.json is missing")
    record = {
        "device": "NVIDIA_H200",
        "env": "simple_u_maze",
        "depths": [8, 4],
        "seeds": [0],
        "runs": [{"depth": 8, "seed": 0, "run": "depth_8_seed_0"}, {"depth": 4, "seed": 0, "run": "depth_4_seed_0"}],
        "comparison": {"common_epoch": 1},
    }
    (came_back / "depth.json").write_text(json.dumps(record))
    (came_back / "d8_s0.tar").write_bytes(b"")
    no_tar = campaign("--home", str(came_back), "--out", str(tmp_path / "results"))
    assert no_tar.returncode == 2
    assert_one_line_error(no_tar, "lacks d4_s0.tar", "nothing was written")
    (came_back / "d4_s0.tar").write_bytes(b"")
    other = tmp_path / "results" / "gpu" / "Some_Other_Card" / "depth"
    wrong_card = campaign("--home", str(came_back), "--out", str(other))
    assert wrong_card.returncode == 2
    assert_one_line_error(wrong_card, "Some_Other_Card", "recorded on NVIDIA_H200", "nothing was written")
    assert not (tmp_path / "results").exists()


def test_a_speed_call_past_its_deadline_starts_no_point_and_leaves_them_for_the_next(tmp_path):
    out = tmp_path / "speed"
    result = campaign("--reduced", "--out", str(out), "--stage", "speed", "--deadline-s", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deadline reached; 'train simple_u_maze d4'" in result.stdout
    assert json.loads((out / "speed.json").read_text()) == []
    assert "## Whole training steps" in (out / "speed.md").read_text()


def test_the_speed_stage_measures_the_depth_plans_inputs_first():
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu.speed import PLANS, speed_points

    names = [p["name"] for p in speed_points(PLANS["full"])]
    assert names[:4] == [
        "train ant_hardest_maze d4",
        "train ant_hardest_maze d4 x2 seeds",
        "train ant_hardest_maze d8",
        "train ant_hardest_maze d8 x2 seeds",
    ]
    assert names.index("train ant_hardest_maze d64") < names.index("sgd unroll grid")
    assert names.index("train ant_hardest_maze d16 x4 seeds") < names.index("sgd batch grid")
    assert names[-2:] == ["train humanoid_u_maze d256/256", "train humanoid_u_maze d1024/512"]


@pytest.mark.slow
def test_a_speed_point_cut_by_its_cap_says_it_was_compiling(tmp_path):
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu.speed import PLANS, run_speed_point, speed_points

    point = next(p for p in speed_points(PLANS["reduced"]) if p["name"] == "train simple_u_maze d12 x2 seeds")
    records = run_speed_point(point, PLANS["reduced"], True, 18.0, False)
    assert records[-1]["error"] == "not done within 18 s (still compiling)"


# Three CPU calls of about two minutes each: CI runs it with the slow tests.
@pytest.mark.slow
def test_the_depth_stage_cut_by_its_deadline_continues_from_the_cache_and_goes_home(tmp_path):
    work, cache = tmp_path / "work", tmp_path / "cache"
    first_out, second_out = tmp_path / "out1", tmp_path / "out2"
    first = campaign(
        "--stage",
        "depth",
        "--reduced",
        "--out",
        str(first_out),
        "--work",
        str(work),
        "--deadline-s",
        "210",
        cache=cache,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    for phase in (
        "setup:",
        "prefill d8:",
        "compile d8:",
        "probe d4:",
        "plan:",
        "train d8:",
        "evaluate d4:",
        "save d8:",
        "deadline:",
        "save: every run's state",
    ):
        assert phase in first.stdout, phase
    # What a call cut at its deadline leaves: the sweep so far and every run, few files, no machine paths.
    assert sorted(p.name for p in first_out.iterdir()) == sorted(
        ["depth.json", "depth.md", "depth.png", "d8_s0.tar", "d8_s1.tar", "d4_s0.tar", "d4_s1.tar"]
    )
    assert all(p.stat().st_size < 16 * 2**20 for p in first_out.iterdir())
    for tar_path in first_out.glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
            assert any("/checkpoints/best/" in n for n in names) and any("/checkpoints/final/" in n for n in names)
            assert not any("/state" in n for n in names)
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(".json"):
                    assert str(tmp_path) not in tar.extractfile(member).read().decode(), member.name
    one = json.loads((first_out / "depth.json").read_text())
    call = one["calls"][0]
    assert call["stopped"] == "the deadline" and call["epochs_run"] >= 1
    epochs = {r["run"]: r["epochs"] for r in one["runs"]}
    assert len(set(epochs.values())) == 1, epochs  # the depths advanced together
    assert one["comparison"]["common_epoch"] == call["epochs_run"]
    for row in one["runs"]:
        assert row["final"]["epoch"] == row["epochs"] and row["best"]["time_at_goal"] >= row["final"]["time_at_goal"]

    second = campaign(
        "--stage",
        "depth",
        "--reduced",
        "--out",
        str(second_out),
        "--work",
        str(work),
        "--deadline-s",
        "150",
        "--target-steps",
        "12000",
        cache=cache,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing the depth stage" in second.stdout and "restored at" in second.stdout
    two = json.loads((second_out / "depth.json").read_text())
    assert [c["call"] for c in two["calls"]] == [1, 2] and two["target_steps"] == 12000
    for depth in ("4", "8"):  # compiled programs came from the cache
        assert two["calls"][1]["probe"][depth]["compile_s"] < two["calls"][0]["probe"][depth]["compile_s"]
    assert two["comparison"]["common_epoch"] > one["comparison"]["common_epoch"]

    results = tmp_path / "results"
    home = campaign("--home", str(second_out), "--reduced", "--out", str(results))
    assert home.returncode == 0, home.stderr[-3000:]
    report = json.loads((results / "report.json").read_text())
    assert report["report"]["student"]["depth"] == 4 and report["report"]["scratch"]["depth"] == 4
    assert report["teacher"]["run"].startswith("depth_8_seed_") and set(report["verification"]) == set(epochs)
    assert report["onnx_closed_loop"]["episodes"] == 2
    for name in ("report.md", "depth.md", "depth.png", "critic_teacher.png", "critic_scratch.png"):
        assert (results / name).is_file(), name
    for name in ("teacher", "scratch", "student"):
        assert (results / "packed" / name / "config.json").is_file()
        assert (results / "packed" / name / "checkpoints" / "final").is_dir()
