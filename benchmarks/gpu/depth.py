"""The depth stage: does depth pay on ``ant_hardest_maze``, inside one GPU call's deadline.

A GPU is lent rarely and briefly (at most ten minutes a call), so the stage is built to return
results whenever it is cut off:

1. **Probe.** Both programs (depths 4 and 8, each with its 2 seeds stacked in one program, batch 512)
   are built, prefilled and compiled, a few training steps of each are timed (collection included;
   they count toward training) and, on the first call, an evaluation of each. The plan then fits as
   many rounds (one epoch of every depth) as the deadline allows, less the final save, and prints
   itself beside the plan the H100's measured rates would give.
2. **Train.** The depths advance together: a round trains the deep program's epoch, then the shallow
   one's, so a cut leaves curves at equal env steps. After every epoch ``$OUT`` receives everything
   so far: ``depth.json`` / ``depth.md`` / ``depth.png`` (the sweep, with final parameters and best
   checkpoint side by side) and one tar per run (config, metrics, learning curve, best and final
   parameters). Epochs save parameters only; the state with its replay buffer is saved at the
   deadline, at the end, or every ``state_minutes``.
3. **Stop.** Before a round that would not fit, the stage saves every run's full state and returns.
   A second call issued at once continues from there (the compile cache under ``runs/`` saves the
   compiling); its settings must match the first call's in everything but the budget.

The runs are ordinary teacher runs in ``WORK/runs/depth_D_seed_S``. ``home.py`` is the CPU half:
it distils the best deep seed, exports it and draws the critic maps from what came back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from benchmarks.gpu.common import CampaignError, check_writable, device_name, read_json, seconds_left, stamp, write_json
from benchmarks.gpu.depth_report import run_dir, write_outputs
from teachers.config import TOY_SETTINGS

RECORD = "depth_config.json"

# The H100's measured rates the issue plans with (env steps/s per seed at batch 512, one seed), and
# what stacking two seeds is assumed to gain there: the reference for the probe's own plan.
H100_RATES = {4: 53_000, 8: 30_000}
H100_STACKING_GAIN = 1.5


@dataclasses.dataclass(frozen=True)
class DepthPlan:
    env: str
    depths: tuple[int, ...]
    """Trained deepest first within each round."""
    seeds: tuple[int, ...]
    target_steps: int
    """Env steps per run at which the runs are finished (the paper's gap is at 8-10M)."""
    epoch_steps: int
    """Training steps per epoch (one evaluation each)."""
    overrides: dict
    """Teacher settings on top of the environment's preset."""
    probe_steps: int = 2
    """Training steps timed per program after the compiling one."""
    min_deadline_s: float = 240.0
    """Below this the probe itself cannot finish: refused before anything is built. On an H200 the probe
    with an empty compile cache took 207 s."""
    state_minutes: float = 5.0
    """Saves of the state with its replay buffer are at least this far apart (besides the last)."""
    margin_s: float = 10.0
    """Kept free before the deadline besides the estimated final save."""

    def settings(self) -> dict:
        """What a continuing call must share with the first (the budget, target_steps, may grow)."""
        return {
            "env": self.env,
            "depths": list(self.depths),
            "seeds": list(self.seeds),
            "epoch_steps": self.epoch_steps,
            "overrides": dict(sorted(self.overrides.items())),
        }


PLANS = {
    "full": DepthPlan(
        env="ant_hardest_maze",
        depths=(8, 4),
        seeds=(0, 1),
        target_steps=10_000_000,
        epoch_steps=16,
        overrides=dict(batch_size=512, eval_episodes=64, keep_checkpoints=1),
    ),
    # The same stage at toy sizes on the point mass: a check of the whole path on a CPU.
    "reduced": DepthPlan(
        env="simple_u_maze",
        depths=(8, 4),
        seeds=(0, 1),
        target_steps=8_000,
        epoch_steps=2,
        overrides={
            **{k: v for k, v in TOY_SETTINGS.items() if k not in ("total_steps", "num_evals")},
            "keep_checkpoints": 1,
        },
        probe_steps=1,
        min_deadline_s=140.0,  # a 2-core CPU's probe with an empty compile cache: about 120 s
        state_minutes=5.0,
        margin_s=2.0,
    ),
}


# --- the runs ------------------------------------------------------------------------------------


def run_config(plan: DepthPlan, depth: int, seed: int, target_steps: int):
    """The teacher config of one run: the preset, the plan's overrides, and a budget of whole epochs
    (``num_evals`` of them) that reaches ``target_steps``."""
    from teachers.config import teacher_config
    from teachers.train import schedule

    config = teacher_config(plan.env, critic_depth=depth, actor_depth=depth, seed=seed, **plan.overrides)
    per_step = config.num_envs * config.unroll_length
    prefill = schedule(config).initial_env_steps
    epochs = max(1, math.ceil((target_steps - prefill) / (plan.epoch_steps * per_step)))
    return dataclasses.replace(config, total_steps=prefill + epochs * plan.epoch_steps * per_step, num_evals=epochs)


def open_record(work: Path, plan: DepthPlan, target_steps: int, device: str) -> tuple[dict, bool]:
    """The stage's record in ``work`` (new, or the first call's for a continuing one) and whether
    this call continues; refuses a continuing call with other settings or on another card."""
    path = Path(work) / RECORD
    if not path.is_file():
        if (Path(work) / "runs").exists():
            raise CampaignError(f"{work} holds runs but no {RECORD}; choose an empty --work")
        record = {**plan.settings(), "target_steps": target_steps, "device": device, "calls": []}
        write_json(path, record)
        return record, False
    record = read_json(path, "the first call's settings")
    if record.get("device") != device:
        raise CampaignError(
            f"{work} was trained on {record.get('device')}, not on this {device}; nothing was "
            "changed (choose another --work)"
        )
    old, new = {k: record.get(k) for k in plan.settings()}, json.loads(json.dumps(plan.settings()))
    differ = [f"{k}: {new[k]} here, {old[k]} there" for k in new if old[k] != new[k]]
    if differ:
        raise CampaignError(
            f"{work} holds a depth stage with other settings ({'; '.join(differ)}); only the "
            "budget may change between calls: nothing was changed"
        )
    if target_steps < record["target_steps"]:
        raise CampaignError(
            f"--target-steps {target_steps:,} is below the {record['target_steps']:,} the stage "
            "started with; a continuing call may only raise it"
        )
    record["target_steps"] = target_steps
    return record, True


@dataclasses.dataclass
class Program:
    """One depth's seeds stacked in one training program, and what the probe measured of it."""

    depth: int
    outs: list[Path]
    training: object
    trainable: object
    env_steps_per_step: int
    timings: dict = dataclasses.field(default_factory=dict)

    def step_seconds(self) -> float:
        return self.timings["step_s"]

    def epoch_estimate(self, plan: DepthPlan) -> float:
        """Seconds the next epoch takes: its remaining steps, the evaluation and the saves."""
        training = self.training
        remaining = training.schedule.epoch_end(training.epochs_done + 1) - training.steps_done
        if "epoch_overhead_s" in self.timings:  # measured: an epoch's time less its training steps
            return remaining * self.step_seconds() + self.timings["epoch_overhead_s"]
        return remaining * self.step_seconds() + self.timings.get("eval_s", 0.0) + 1.0


def build_program(plan: DepthPlan, depth: int, work: Path, target_steps: int, continuing: bool) -> Program:
    """Starts (or reopens) the runs of one depth and brings their stacked state onto the device:
    restored on a continuing call, else initialised and prefilled (both timed)."""
    from distill.store import runs
    from distill.store.checkpoints import RunCheckpoints
    from distill.train import engine
    from teachers.agent import RUNS_AXIS, make_teacher
    from teachers.config import TeacherConfig
    from teachers.train import schedule, stacked_teacher_trainable

    configs = [run_config(plan, depth, seed, target_steps) for seed in plan.seeds]
    outs = [run_dir(work, depth, seed) for seed in plan.seeds]
    teacher = make_teacher(configs[0], runs_axis=RUNS_AXIS if len(plan.seeds) > 1 else None)
    resolved = [dataclasses.replace(teacher.config, seed=seed) for seed in plan.seeds]
    started = [(out / "config.json").is_file() for out in outs]
    for out, config, was in zip(outs, resolved, started):
        if was:  # the budget may have grown since the first call: the run records the one it now has
            record = runs.read_config(out, kind="teacher")
            old = runs.config_from_record(record, TeacherConfig, out, "teacher")
            if dataclasses.replace(old, total_steps=config.total_steps, num_evals=config.num_evals) != config:
                raise CampaignError(f"{out} was started with other settings; nothing was changed")
            record["config"] = dataclasses.asdict(config)
            runs.atomic_write_text(out / "config.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
        else:
            runs.start_run(
                out,
                False,
                "teacher",
                config,
                {"num_devices": teacher.mesh.size, "num_processes": 1, "parallel_seeds": list(plan.seeds)},
            )
    trainable = stacked_teacher_trainable(teacher, plan.seeds)
    sched = schedule(resolved[0])
    checkpoints = [RunCheckpoints(out, keep=resolved[0].keep_checkpoints) for out in outs]
    t0 = time.perf_counter()
    training = engine.Training(
        trainable,
        sched,
        outs,
        checkpoints,
        resume=continuing and all(started),
        checkpoint_minutes=plan.state_minutes,
        state_minutes=plan.state_minutes,
        notice=lambda text: stamp(f"d{depth}", text),
    )
    import jax

    jax.block_until_ready(training.state)
    seconds = time.perf_counter() - t0
    how = (
        f"restored at {training.env_steps:,} env steps per run"
        if training.steps_done
        else f"initialised and prefilled ({training.env_steps:,} env steps per run, compiling included)"
    )
    stamp(f"prefill d{depth}", f"{how} in {seconds:.1f} s")
    program = Program(depth, outs, training, trainable, sched.env_steps_per_step)
    program.timings["start_s"] = seconds
    return program


def probe(program: Program, plan: DepthPlan, evaluations: bool) -> None:
    """Times the compiling training step, ``plan.probe_steps`` more, and (``evaluations``) one
    evaluation after its compiling one; the steps are training steps of the first epoch."""
    training = program.training
    t0 = time.perf_counter()
    training.advance(1)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps = training.advance(plan.probe_steps)
    step_s = (time.perf_counter() - t0) / max(steps, 1) if steps else compile_s
    program.timings.update(compile_s=compile_s, step_s=step_s)
    per_seed = program.env_steps_per_step / step_s
    stamp(f"compile d{program.depth}", f"first training step {compile_s:.1f} s (compiling included)")
    stamp(
        f"probe d{program.depth}",
        f"{step_s:.3f} s per training step = {per_seed:,.0f} env steps/s per seed, "
        f"{per_seed * len(plan.seeds):,.0f} in total ({len(plan.seeds)} seeds in one program)",
    )
    if evaluations:
        t0 = time.perf_counter()
        program.trainable.evaluate(training.state, 0)
        eval_compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        program.trainable.evaluate(training.state, 0)
        program.timings.update(eval_compile_s=eval_compile_s, eval_s=time.perf_counter() - t0)
        stamp(
            f"probe d{program.depth}",
            f"evaluation {program.timings['eval_s']:.1f} s ({eval_compile_s:.1f} s with compiling)",
        )


def rounds_that_fit(
    step_seconds: dict[int, float], overhead_s: dict[int, float], epoch_steps: int, seconds: float
) -> int:
    """Whole rounds (one epoch of every depth) that fit ``seconds``."""
    per_round = sum(epoch_steps * step_seconds[d] + overhead_s[d] for d in step_seconds)
    return max(0, int(seconds // per_round)) if per_round > 0 else 0


def state_save_estimate(programs: list[Program]) -> float:
    """Seconds to save every run's state with its replay buffer: 10 s plus 4 s per GB."""
    import jax

    size = sum(x.nbytes for p in programs for x in jax.tree.leaves(p.training.state))
    return 10.0 + 4.0 * size / 1e9


def make_call_plan(plan: DepthPlan, programs: list[Program], seconds: float, record: dict) -> dict:
    """How far this call gets: rounds that fit, and the env steps per run at the deadline; beside it
    what the H100's rates (one seed, stacking gaining H100_STACKING_GAIN) would plan for the same time."""
    per_step = programs[0].env_steps_per_step
    training = programs[0].training
    epochs_left = training.schedule.epochs - training.epochs_done
    step_s = {p.depth: p.step_seconds() for p in programs}
    overhead = {
        p.depth: p.timings.get("eval_s", record.get("eval_s", {}).get(str(p.depth), 0.0)) + 1.0 for p in programs
    }
    rounds = min(epochs_left, rounds_that_fit(step_s, overhead, plan.epoch_steps, seconds))
    reach = training.schedule.initial_env_steps + (training.epochs_done + rounds) * plan.epoch_steps * per_step
    seeds = len(plan.seeds)
    h100 = {}
    if set(H100_RATES) >= set(step_s):
        h100_step = {d: per_step / (H100_RATES[d] * H100_STACKING_GAIN / seeds) for d in step_s}
        h100_rounds = rounds_that_fit(h100_step, overhead, plan.epoch_steps, seconds)
        h100 = {
            "rounds": h100_rounds,
            "env_steps_per_run": training.schedule.initial_env_steps
            + (training.epochs_done + min(epochs_left, h100_rounds)) * plan.epoch_steps * per_step,
            "rates_per_seed_one_program": {str(d): H100_RATES[d] * H100_STACKING_GAIN / seeds for d in step_s},
        }
    return {
        "seconds": seconds,
        "rounds": rounds,
        "epoch_env_steps": plan.epoch_steps * per_step,
        "env_steps_per_run_at_deadline": reach if rounds else training.env_steps,
        "step_seconds": {str(d): s for d, s in step_s.items()},
        "epoch_overhead_s": {str(d): s for d, s in overhead.items()},
        "h100_plan": h100,
    }


# --- the stage -------------------------------------------------------------------------------------


def stage_depth(plan: DepthPlan, out: Path, work: Path, deadline_s: float, target_steps: int | None = None) -> dict:
    """One call of the depth stage; returns depth.json's content."""
    if deadline_s < plan.min_deadline_s:
        raise CampaignError(
            f"--deadline-s {deadline_s:.0f} is shorter than the probe (it needs about "
            f"{plan.min_deadline_s:.0f} s to compile, prefill and time both depths); nothing was written"
        )
    out = check_writable(out, "the results folder")
    work = check_writable(work, "the work folder")
    device = device_name()
    target = target_steps or plan.target_steps
    record, continuing = open_record(work, plan, target, device)
    call = {"call": len(record["calls"]) + 1, "deadline_s": deadline_s, "continuing": continuing}
    record["calls"].append(call)
    stamp(
        "setup",
        f"{'continuing' if continuing else 'starting'} the depth stage on {device}: {plan.env}, depths "
        f"{list(plan.depths)}, seeds {list(plan.seeds)}; {seconds_left(deadline_s):.0f} s to the deadline",
    )
    programs = []
    try:
        for depth in plan.depths:
            programs.append(build_program(plan, depth, work, target, continuing))
        for program in programs:
            probe(program, plan, evaluations=not record.get("eval_s"))
        if not record.get("eval_s"):
            record["eval_s"] = {str(p.depth): p.timings["eval_s"] for p in programs}
        call["probe"] = {
            str(p.depth): dict(
                p.timings,
                env_steps_per_s_per_seed=p.env_steps_per_step / p.step_seconds(),
                env_steps_per_s_total=len(plan.seeds) * p.env_steps_per_step / p.step_seconds(),
            )
            for p in programs
        }
        save_s = state_save_estimate(programs)
        available = seconds_left(deadline_s) - save_s - plan.margin_s
        call["plan"] = make_call_plan(plan, programs, available, record)
        call["plan"]["state_save_estimate_s"] = save_s
        say_plan(call["plan"], plan)
        write_json(work / RECORD, record)
        write_outputs(plan, record, work, out, programs)

        call["epochs_run"], call["stopped"] = 0, "the target"
        while not all(p.training.finished for p in programs):
            todo = [p for p in programs if not p.training.finished]
            needed = sum(p.epoch_estimate(plan) for p in todo) + save_s + plan.margin_s
            if seconds_left(deadline_s) < needed:
                call["stopped"] = "the deadline"
                stamp(
                    "deadline",
                    f"{seconds_left(deadline_s):.0f} s left, a round needs about {needed:.0f} s "
                    "with the final save: stopping here",
                )
                break
            for program in todo:
                run_one_epoch(program, plan)
                write_outputs(plan, record, work, out, [program])
            call["epochs_run"] += 1
        t0 = time.perf_counter()
        for program in programs:
            program.training.save_state()
        call["state_save_s"] = time.perf_counter() - t0
        stamp(
            "save",
            f"every run's state (replay included) saved in {call['state_save_s']:.1f} s: a next call "
            "continues from here",
        )
    finally:
        for program in programs:
            program.training.close()
            for c in (m.checkpoints for m in program.training.members):
                c.close()
        write_json(work / RECORD, record)
    result = write_outputs(plan, record, work, out, programs)
    say_result(result)
    return result


def run_one_epoch(program: Program, plan: DepthPlan) -> None:
    training = program.training
    remaining = training.schedule.epoch_end(training.epochs_done + 1) - training.steps_done
    # The first epoch of a call holds the probe's compiled first step; later epochs are pure training.
    first = "epoch_overhead_s" not in program.timings
    t0 = time.perf_counter()
    records = training.run_epoch()
    seconds = time.perf_counter() - t0
    program.timings["epoch_overhead_s"] = max(0.0, seconds - remaining * program.step_seconds()) + 0.5
    took = training.epoch_seconds
    scores = ", ".join(f"{r['time_at_goal']:.1f}" for r in records)
    stamp(
        f"train d{program.depth}",
        f"epoch {records[0]['epoch']}/{training.schedule.epochs}: "
        f"{records[0]['env_steps']:,} env steps per run in {took['train']:.1f} s of training "
        f"({records[0]['steps_per_s']:,.0f} env steps/s per seed{', compiling included' if first else ''})",
    )
    stamp(
        f"evaluate d{program.depth}",
        f"time_at_goal {np.mean([r['time_at_goal'] for r in records]):.1f} "
        f"(seeds {scores}) in {took['evaluate']:.1f} s",
    )
    stamp(
        f"save d{program.depth}",
        f"parameters{' and state' if training.state_saved_at == training.steps_done else ''} "
        f"in {took['save']:.1f} s; epoch {seconds:.1f} s in all",
    )


def say_plan(call_plan: dict, plan: DepthPlan) -> None:
    steps = ", ".join(f"d{d} {s:.3f} s" for d, s in call_plan["step_seconds"].items())
    stamp(
        "plan",
        f"{call_plan['seconds']:.0f} s for training after the probe and the final save "
        f"({call_plan['state_save_estimate_s']:.0f} s): {call_plan['rounds']} rounds of "
        f"{call_plan['epoch_env_steps']:,} env steps per run -> {call_plan['env_steps_per_run_at_deadline']:,} "
        f"env steps per run at the deadline (per training step: {steps})",
    )
    h100 = call_plan.get("h100_plan")
    if h100:
        stamp(
            "plan",
            f"at the H100's rates ({', '.join(f'd{d} {v:,.0f}' for d, v in h100['rates_per_seed_one_program'].items())} "
            f"env steps/s per seed in one program) the same time would give {h100['rounds']} rounds -> "
            f"{h100['env_steps_per_run']:,} env steps per run",
        )


def say_result(result: dict) -> None:
    c = result["comparison"]
    if not c.get("common_epoch"):
        stamp("result", "no epoch finished yet")
        return
    parts = [
        f"d{d}: final {v['final_time_at_goal_mean']:.1f}, best {v['best_time_at_goal_mean']:.1f}"
        for d, v in c["by_depth"].items()
    ]
    stamp("result", f"at {c['common_env_steps']:,} env steps per run: {'; '.join(parts)}")
