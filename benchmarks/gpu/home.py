"""The depth stage's CPU half: what a GPU call brought back becomes the experiment's report.

``python benchmarks/gpu/campaign.py --home DIR [--out RESULTS]``, where DIR holds what the depth
stage left in its ``$OUT`` (``depth.json``, ``depth.md``, ``depth.png`` and one tar per run), and
RESULTS (default ``results/gpu/<device>/depth``) receives what the repository keeps:

1. every run is extracted and packed (``distill pack``: best and final parameters, the record), and
   each packed run must pass its recorded evaluation on this CPU (``verify_packed_run``);
2. the deep seed with the best checkpoint is distilled into a depth-4 student, with the same seed's
   depth-4 run as the from-scratch baseline of the report;
3. the student is exported through the parity gate, and the ONNX file runs in closed loop;
4. critic maps of the teacher and the scratch run for the goal cell farthest from the start;
5. ``report.json`` / ``report.md`` and the GPU side's ``depth.*`` in RESULTS, and the packed teacher,
   student and scratch runs in ``RESULTS/packed`` (parameters and records; the other runs stay in
   the tars).

Work that takes long (the student) lives in ``runs/gpu/home/<device>`` and is reused by a second call.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np

from benchmarks.gpu.common import ROOT, CampaignError, read_json, stamp, write_json
from benchmarks.gpu.depth_report import comparison_lines

# DAgger's default rounds (6 of 50 steps a slot) see only the first 300 steps of the maze's 1000-step
# episodes; 10 rounds of 200 steps see two whole episodes a slot, the later stretches included.
STUDENT = {
    "full": dict(student_depth=4, eval_episodes=64, iterations=10, unroll_length=200, updates_per_iteration=300),
    "reduced": dict(
        student_depth=4, student_width=16, iterations=2, num_envs=4, unroll_length=10, batch_size=16, eval_episodes=2
    ),
}
STUDENT_STEPS = {"full": None, "reduced": 4}
REPORT_EPISODES = {"full": 128, "reduced": 2}
CRITIC_POINTS = {"full": 8, "reduced": 2}


def check_folder(folder: Path, out: Path | None) -> tuple[dict, Path]:
    """depth.json and a tar for each of its runs in ``folder``, and a results folder that is this
    card's: (the record, the results folder), or a one-line CampaignError before anything is written."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CampaignError(f"{folder} is not a folder of depth-stage results")
    record = read_json(folder / "depth.json", "what the depth stage wrote")
    if not isinstance(record, dict) or "runs" not in record or "device" not in record:
        raise CampaignError(f"{folder / 'depth.json'} is not a depth stage's record")
    out = Path(out) if out else ROOT / "results" / "gpu" / record["device"] / "depth"
    card = out.absolute().parent.name
    if out.absolute().parent.parent.name == "gpu" and card != record["device"]:
        raise CampaignError(
            f"{out} holds results for {card}, but {folder} was recorded on {record['device']}; nothing was written"
        )
    for name in ("report.json", "depth.json"):
        if (out / name).is_file() and (out / name).resolve() != (folder / name).resolve():
            other = read_json(out / name, "earlier results").get("device")
            if other and other != record["device"]:
                raise CampaignError(
                    f"{out} holds results recorded on {other}, not on {record['device']}; nothing was written"
                )
    missing = [
        f"d{r['depth']}_s{r['seed']}.tar"
        for r in record["runs"]
        if not (folder / f"d{r['depth']}_s{r['seed']}.tar").is_file()
    ]
    if missing:
        raise CampaignError(
            f"{folder} lacks {', '.join(missing)}; copy every file the depth stage wrote; nothing was written"
        )
    if not record.get("comparison", {}).get("common_epoch"):
        raise CampaignError(f"{folder}: no run finished an epoch on the GPU; there is nothing to take home")
    return record, out


def extract(folder: Path, record: dict, work: Path) -> dict[tuple[int, int], Path]:
    """Each run's tar, extracted into ``work/raw``: {(depth, seed): run directory}."""
    raw = work / "raw"
    found = {}
    for r in record["runs"]:
        run = raw / r["run"]
        if not (run / "config.json").is_file():
            shutil.rmtree(run, ignore_errors=True)
            try:
                with tarfile.open(folder / f"d{r['depth']}_s{r['seed']}.tar") as tar:
                    tar.extractall(raw, filter="data")
            except (tarfile.TarError, OSError) as err:
                raise CampaignError(f"d{r['depth']}_s{r['seed']}.tar cannot be read: {err}") from None
        found[(r["depth"], r["seed"])] = run
    return found


def take_home(folder: Path, reduced: bool = False, out: Path | None = None) -> dict:
    size = "reduced" if reduced else "full"
    folder = Path(folder)
    record, out = check_folder(folder, out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("depth.json", "depth.md", "depth.png"):
        if (folder / name).is_file() and (out / name).resolve() != (folder / name).resolve():
            shutil.copy2(folder / name, out / name)
    work = ROOT / "runs" / "gpu" / "home" / record["device"]
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    raw = extract(folder, record, work)
    checks = pack_and_verify(raw, work / "packed")
    deep, shallow = max(record["depths"]), min(record["depths"])
    rows = {(r["depth"], r["seed"]): r for r in record["runs"]}
    best_seed = max(record["seeds"], key=lambda s: (rows[(deep, s)]["best"]["time_at_goal"], -s))
    teacher = work / "packed" / raw[(deep, best_seed)].name
    scratch = work / "packed" / raw[(shallow, best_seed)].name
    stamp("home", f"distilling depth-{deep} seed {best_seed} into a depth-4 student against {scratch.name}")
    report, onnx, closed_loop = distil(teacher, scratch, work, size)
    pictures = critic_maps(record["env"], teacher, scratch, out, size)
    keep(teacher, scratch, work / "student", out, folder)
    result = {
        "device": record["device"],
        "env": record["env"],
        "depths": record["depths"],
        "seeds": record["seeds"],
        "comparison": record["comparison"],
        "teacher": {"run": teacher.name, "seed": best_seed},
        "scratch": {"run": scratch.name},
        "verification": {
            name: {k: c[k] for k in ("epoch", "episodes", "recorded_time_at_goal", "time_at_goal", "tolerance")}
            for name, c in checks.items()
        },
        "report": {
            "episodes": report["episodes"],
            "retention": report["retention"],
            **{
                k: {m: report[k][m] for m in ("time_at_goal", "success_any", "depth")}
                | {"parameters": sum(report[k]["params"].values())}
                for k in ("teacher", "student", "scratch")
                if k in report and "skipped" not in report[k]
            },
        },
        "onnx_closed_loop": closed_loop,
        "onnx_bytes": onnx.stat().st_size,
        "critic_goal": list(far_goal(record["env"])),
        "pictures": pictures,
        "seconds": time.perf_counter() - t0,
        "command": f"python benchmarks/gpu/campaign.py --home DIR --out {_shown(out)}"
        + (" --reduced" if reduced else ""),
    }
    write_json(out / "report.json", result)
    (out / "report.md").write_text(report_markdown(result))
    stamp("home", f"report.json, report.md, pictures and packed runs in {out} ({result['seconds']:.0f} s)")
    return result


def pack_and_verify(raw: dict, packed_dir: Path) -> dict:
    """Every run packed (once) and checked against its recorded evaluation on this CPU."""
    from distill.app.pack import pack_run, verify_packed_run

    checks = {}
    for run in raw.values():
        packed = packed_dir / run.name
        if not (packed / "config.json").is_file():
            pack_run(run, packed)
        check = checks[run.name] = verify_packed_run(packed)
        stamp(
            "home",
            f"{run.name}: packed; recorded evaluation {check['recorded_time_at_goal']:.1f}, "
            f"{check['time_at_goal']:.1f} on this CPU (tolerance {check['tolerance']:.1f})",
        )
    return checks


def distil(teacher: Path, scratch: Path, work: Path, size: str) -> tuple[dict, Path, dict]:
    """The student (reused if done), its report against ``scratch``, its ONNX file and closed loop."""
    from distill.app.report import compress_and_report
    from export.closed_loop import evaluate_onnx
    from export.student import export_student
    from students.config import student_config

    student = work / "student"
    if not (student / "report.json").is_file():
        config = student_config(teacher, steps=STUDENT_STEPS[size], **STUDENT[size])
        compress_and_report(
            config,
            teacher,
            student,
            resume=(student / "config.json").is_file(),
            report_episodes=REPORT_EPISODES[size],
            show_progress=False,
            baseline_run=scratch,
        )
    report = json.loads((student / "report.json").read_text())
    onnx = work / "student.onnx"
    if not onnx.is_file():
        export_student(student, onnx, gate_episodes=REPORT_EPISODES[size])
    closed_loop = evaluate_onnx(onnx, None, REPORT_EPISODES[size], seed=0)
    stamp("home", f"student retention {report['retention']:.3f}; ONNX closed loop {closed_loop['time_at_goal']:.1f}")
    return report, onnx, closed_loop


def critic_maps(env: str, teacher: Path, scratch: Path, out: Path, size: str) -> dict:
    """The teacher's and the scratch run's critic for the goal cell farthest from the start."""
    from distill.app.render import critic_map_target

    goal = far_goal(env)
    pictures = {}
    for name, run in (("critic_teacher", teacher), ("critic_scratch", scratch)):
        critic_map_target(run, f"{goal[0]:g},{goal[1]:g}", out / f"{name}.png", points_per_cell=CRITIC_POINTS[size])
        pictures[name] = f"{name}.png"
    return pictures


def keep(teacher: Path, scratch: Path, student: Path, out: Path, folder: Path) -> None:
    """What the repository keeps: the packed teacher, scratch run and student, and the student's
    report pictures, with this machine's folders left out of their text."""
    from benchmarks.gpu.common import strip_machine_paths
    from distill.app.pack import pack_run

    final_dir = out / "packed"
    for name, run in (("teacher", teacher), ("scratch", scratch), ("student", None)):
        dest = final_dir / name
        shutil.rmtree(dest, ignore_errors=True)
        if run is None:
            pack_run(student, dest)
        else:
            shutil.copytree(run, dest)
    for name in ("report.png", "report_maze.png"):
        if (student / name).is_file():
            shutil.copy2(student / name, out / f"student_{name}")
    strip_machine_paths(final_dir, ROOT / "runs", ROOT, folder.absolute())
    strip_machine_paths(out, ROOT / "runs", ROOT, folder.absolute())


def _shown(path: Path) -> str:
    try:
        return str(Path(path).absolute().relative_to(ROOT))
    except ValueError:
        return str(path)


def far_goal(env_name: str) -> tuple[float, float]:
    """The goal cell centre farthest (straight line) from the maze's start cell."""
    from distill.envs import get_spec

    env = get_spec(env_name).make()
    goals = np.asarray(env.goals)
    far = goals[np.argmax(np.linalg.norm(goals - np.asarray(env.start)[None, :2], axis=1))]
    return float(far[0]), float(far[1])


def report_markdown(r: dict) -> str:
    c, rep, onnx = r["comparison"], r["report"], r["onnx_closed_loop"]
    lines = [
        f"# Does depth pay? {r['env']}, trained on {r['device']}",
        "",
        f"Made by `{r['command']}` from what the depth stage brought back (`depth.md` beside this file has the "
        "GPU side: plan, timings, every run's curve).",
        "",
        f"## Teachers at {c['common_env_steps']:,} env steps per run (mean over seeds {r['seeds']})",
        "",
    ]
    lines += comparison_lines(c)
    lines += [
        f"## The student ({rep['episodes']} episodes each, on this CPU)",
        "",
        "| policy | depth | parameters | time_at_goal | success_any |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "teacher": f"teacher ({r['teacher']['run']}, best checkpoint)",
        "student": "student (JAX)",
        "scratch": f"CRL from scratch ({r['scratch']['run']}, best checkpoint)",
    }
    for key in ("teacher", "student", "scratch"):
        if key in rep:
            row = rep[key]
            lines.append(
                f"| {labels[key]} | {row['depth']} | {row['parameters']:,} | {row['time_at_goal']:.1f} | "
                f"{row['success_any']:.2f} |"
            )
    lines.append(
        f"| student (ONNX file, closed loop, {onnx['episodes']} episodes) | {rep['student']['depth']} | "
        f"{rep['student']['parameters']:,} | {onnx['time_at_goal']:.1f} | {onnx['success_any']:.2f} |"
    )
    lines += [
        "",
        f"Retention (student over teacher): {rep['retention']:.3f} (the goal: at least 0.9).",
        "",
        "Every packed run passed its recorded evaluation on this CPU:",
        "",
    ]
    for name, v in r["verification"].items():
        lines.append(
            f"- {name}: epoch {v['epoch']}, {v['recorded_time_at_goal']:.1f} recorded on the GPU, "
            f"{v['time_at_goal']:.1f} here (tolerance {v['tolerance']:.1f}, {v['episodes']} episodes)"
        )
    lines += [
        "",
        f"Critic maps for the goal at {r['critic_goal']} (the goal cell farthest from the start):",
        "",
        "![teacher](critic_teacher.png) ![scratch](critic_scratch.png)",
        "",
    ]
    return "\n".join(lines)
