"""``distill evaluate``: evaluate a teacher run, a student run or an exported ONNX file."""

from __future__ import annotations

from pathlib import Path

import jax

from distill import runs
from distill.checkpoints import CHECKPOINT_KINDS
from distill.errors import DistillError
from distill.evaluation import make_evaluator, summarize


def evaluate_target(target: Path, episodes: int, env: str | None, seed: int, which: str = "best") -> dict:
    target = Path(target)
    if which not in CHECKPOINT_KINDS:
        raise DistillError(f"--checkpoint must be one of {', '.join(CHECKPOINT_KINDS)}, got '{which}'")
    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    if target.suffix == ".onnx":
        from export.closed_loop import evaluate_onnx

        return evaluate_onnx(target, env=env, episodes=episodes, seed=seed)
    record = runs.read_config(target)
    kind = record.get("kind")
    if kind == "teacher":
        from teachers.train import load_teacher

        config, spec, networks, params, step = load_teacher(target, which)
        actor_params = params["actor"]
    elif kind == "student":
        from students.train import load_student

        config, spec, networks, params, step = load_student(target, which)
        actor_params = params["actor"]
    else:
        raise DistillError(f"{target} is neither a teacher nor a student run")
    if env is not None and env != spec.name:
        raise DistillError(f"{target} was trained on '{spec.name}', not on '{env}'")

    def policy(actor_params, obs):
        mean, _ = networks.policy(actor_params, obs)
        return jax.numpy.tanh(mean)

    environment = spec.make(backend=getattr(config, "backend", "spring"))
    evaluate = make_evaluator(environment, spec, policy, episodes)
    result = summarize(evaluate(actor_params, jax.random.PRNGKey(seed)))
    result.update({"policy": f"{kind} ({which} checkpoint, step {step})", "env": spec.name, "seed": seed})
    return result
