"""``distill render``: Brax's HTML viewer of a run's or an ONNX file's deterministic episodes."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from distill.app.evaluate import load_run_policy
from distill.data.sensors import empty_buffer
from distill.envs.maze import MazeEnv
from distill.errors import DistillError
from distill.eval.evaluation import evaluation_observer
from distill.eval.render import rollout_states, write_html, write_maze_png


def render_target(
    target: Path,
    out: Path,
    env: str | None = None,
    episodes: int = 4,
    seed: int = 0,
    png: bool = False,
    which: str = "best",
    length: int | None = None,
) -> dict:
    """Writes ``out`` (HTML) and, with ``png``, the maze top view beside it; returns what was written."""
    target, out = Path(target), Path(out)
    if out.suffix != ".html":
        raise DistillError(f"--out must name an .html file, got {out}")
    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    if target.suffix == ".onnx":
        from export.closed_loop import DelayedReadings, file_sensor_model, load_onnx_policy

        onnx, spec, backend = load_onnx_policy(target, env)
        sensors = file_sensor_model(onnx, spec, target)
        readings = DelayedReadings(sensors, jax.random.PRNGKey(seed), spec.state_dim) if sensors else None
        onnx.reset()
        clock = {"t": 0}

        def policy(obs):
            state = obs[:, : spec.state_dim]
            if readings is not None:
                state = readings(clock["t"], state)
                clock["t"] += 1
            return onnx(state, obs[:, spec.state_dim :])

        description = f"onnx ({target.name})"
    else:
        run = load_run_policy(target, which, env)
        spec, backend, description = run.spec, run.backend, run.description
        act = jax.jit(run.apply)
        # A policy behind sensors reads them as its evaluation does: the same noise, history and latency.
        sensed = (
            jax.jit(evaluation_observer(run.sensors, jax.random.PRNGKey(seed), spec.state_dim, episodes))
            if run.sensors
            else None
        )
        carry = {"buffer": empty_buffer(run.sensors, episodes), "t": 0}

        def policy(obs):
            if sensed is not None:
                carry["buffer"], obs = sensed(carry["buffer"], obs, carry["t"])
                carry["t"] += 1
            return np.asarray(act(run.actor_params, obs))

    environment = spec.make(backend=backend)
    if png and not isinstance(environment, MazeEnv):
        raise DistillError(f"--png draws a maze's top view; '{spec.name}' is not a maze")
    states, observations = rollout_states(environment, spec, policy, episodes, seed, length)
    written = {"html": str(write_html(environment, states, out))}
    if png:
        title = f"{description} on {spec.name}: {episodes} episodes, seed {seed}"
        paths, goals = observations[:, :, :2], observations[0, :, spec.state_dim : spec.state_dim + 2]
        written["png"] = str(
            write_maze_png(environment.layout, environment.scale, paths, goals, out.with_suffix(".png"), title)
        )
    return written


def critic_map_target(target: Path, goal: str, out: Path, which: str = "best", points_per_cell: int = 8) -> Path:
    """Draws a run's critic over its maze's floor for one goal ``"X,Y"``."""
    from distill.eval.render import critic_map, write_critic_map

    out = Path(out)
    if out.suffix != ".png":
        raise DistillError(f"--out must name a .png file, got {out}")
    try:
        goal_xy = tuple(float(v) for v in goal.split(","))
    except ValueError:
        goal_xy = ()
    if len(goal_xy) != 2 or not all(np.isfinite(goal_xy)):
        raise DistillError(f"--goal must be X,Y (two numbers), got '{goal}'")
    if Path(target).suffix == ".onnx":
        raise DistillError("critic-map needs a run directory: the exported policy file holds no critic")
    run = load_run_policy(Path(target), which)
    environment = run.spec.make(backend=run.backend)
    if not isinstance(environment, MazeEnv):
        raise DistillError(f"critic-map draws a maze's floor; '{run.spec.name}' is not a maze")
    if run.sensors is not None:
        # The map puts the robot at every point of the floor at once: no history of readings leads there.
        raise DistillError(f"critic-map needs a policy that reads the state; {target} reads sensors")
    xs, ys, q = critic_map(environment, run.spec, run.networks, run.params, goal_xy, points_per_cell)
    return write_critic_map(environment, xs, ys, q, goal_xy, out, f"{run.description} on {run.spec.name}")
