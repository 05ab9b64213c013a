"""Seeing what an agent does: Brax's HTML viewer of its episodes, a maze top view and a critic map.

Any deterministic policy works, given as a host function ``policy(obs) -> action`` over a batch of
observations (a jitted JAX network or an onnxruntime session alike), so teachers, students and
exported ONNX files are drawn the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import jax
import numpy as np

from distill.envs import EnvSpec, GoalEnv
from distill.errors import DistillError
from distill.nn.networks import energy

HostPolicy = Callable[[np.ndarray], np.ndarray]


def rollout_states(
    env: GoalEnv, spec: EnvSpec, policy: HostPolicy, episodes: int, seed: int, length: int | None = None
):
    """Runs ``episodes`` deterministic episodes side by side from the seed's starts and goals.

    Returns (pipeline states per step, batched over episodes; observations [steps + 1, episodes, obs]).
    """
    if episodes <= 0:
        raise DistillError(f"--episodes must be positive, got {episodes}")
    reset = jax.jit(jax.vmap(env.reset))
    step = jax.jit(jax.vmap(env.step))
    env_state = reset(jax.random.split(jax.random.PRNGKey(seed), episodes))
    states, observations = [env_state.pipeline_state], [np.asarray(env_state.obs)]
    for _ in range(length or spec.episode_length):
        env_state = step(env_state, np.asarray(policy(observations[-1]), np.float32))
        states.append(env_state.pipeline_state)
        observations.append(np.asarray(env_state.obs))
    return states, np.stack(observations)


def write_html(env: GoalEnv, states: list, out: Path) -> Path:
    """Brax's interactive viewer of the episodes, one after the other."""
    from brax.io import html

    episodes = jax.tree.leaves(states[0])[0].shape[0]
    frames = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), s) for i in range(episodes) for s in states]
    _write(out, lambda path: path.write_text(html.render(env.sys.tree_replace({"opt.timestep": env.dt}), frames)))
    return out


def write_maze_png(
    layout: tuple[str, ...], scale: float, paths: np.ndarray, goals: np.ndarray, out: Path, title: str
) -> Path:
    """Top view of a maze: walls, the start cell, each episode's xy path ([steps, episodes, 2]) and
    its goal ([episodes, 2])."""
    return write_maze_panels(layout, scale, {"": (paths, goals)}, out, title)


def write_maze_panels(layout: tuple[str, ...], scale: float, panels: dict, out: Path, title: str) -> Path:
    """Top views side by side, one per ``label -> (paths, goals)``, e.g. teacher and student on the
    same episodes (the same colour is the same episode in every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = _panel_size(layout, 5.5 if len(panels) > 1 else 6)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
    for ax, (label, (paths, goals)) in zip(axes[0], panels.items()):
        _draw_paths(ax, layout, scale, np.asarray(paths), np.asarray(goals))
        ax.set_title(label, fontsize=10)
    return _save_maze_figure(fig, list(axes[0]), layout, scale, title, out)


def _draw_paths(ax, layout, scale, paths: np.ndarray, goals: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    from distill.envs.maze import cell_centers

    _draw_walls(ax, layout, scale)
    start = cell_centers(layout, "R", scale)[0]
    ax.plot(*start, marker="s", color="tab:green", markersize=12, label="start cell", ls="none")
    for episode in range(paths.shape[1]):
        color = plt.cm.tab10(episode % 10)
        ax.plot(paths[:, episode, 0], paths[:, episode, 1], color=color, lw=1.2)
        ax.plot(*goals[episode], marker="*", color=color, markersize=14, markeredgecolor="k")
    ax.plot([], [], marker="*", color="w", markeredgecolor="k", ls="none", markersize=12, label="goals")


def maze_cell(layout: tuple[str, ...], scale: float, xy) -> str | None:
    """The layout character under a point, or None outside the maze."""
    i, j = (int(np.floor(v / scale + 0.5)) for v in xy)
    if not (0 <= i < len(layout) and 0 <= j < len(layout[0])):
        return None
    return layout[i][j]


def critic_map(env: GoalEnv, spec: EnvSpec, networks, params, goal_xy, points_per_cell: int = 8, seed: int = 0):
    """Q(s, pi(s, g), g) for one goal over a grid of free positions of a maze's floor.

    Every state is the robot's reset pose moved to the grid point; the goal is the robot's own goal
    vector (the humanoid's standing height) moved to ``goal_xy``. Returns (xs, ys, q) with q NaN on
    walls.
    """
    layout, scale = env.layout, env.scale
    cell = maze_cell(layout, scale, goal_xy)
    if cell is None:
        raise DistillError(f"the goal {tuple(goal_xy)} lies outside the maze")
    if cell == "#":
        raise DistillError(f"the goal {tuple(goal_xy)} lies inside a wall")
    reset = np.asarray(jax.jit(env.reset)(jax.random.PRNGKey(seed)).obs)
    pose, goal = reset[: spec.state_dim], reset[spec.state_dim :].copy()
    goal[:2] = goal_xy
    rows, cols = len(layout), len(layout[0])
    xs = np.linspace(-scale / 2, (rows - 0.5) * scale, rows * points_per_cell)
    ys = np.linspace(-scale / 2, (cols - 0.5) * scale, cols * points_per_cell)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)
    free = np.array([maze_cell(layout, scale, xy) not in (None, "#") for xy in grid])
    states = np.repeat(pose[None], len(grid), 0)
    states[:, :2] = grid
    goals = np.repeat(goal[None], len(grid), 0)

    @jax.jit
    def q_values(states, goals):
        mean, _ = networks.policy(params["actor"], jax.numpy.concatenate([states, goals], -1))
        phi = networks.phi(params["sa_encoder"], states, jax.numpy.tanh(mean))
        psi = networks.psi(params["goal_encoder"], goals)
        return energy(phi, psi)

    q = np.asarray(q_values(states, goals)).astype(np.float64)
    q[~free] = np.nan
    return xs, ys, q.reshape(len(xs), len(ys))


def write_critic_map(env: GoalEnv, xs, ys, q, goal_xy, out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width, height = _panel_size(env.layout, 6)
    fig, ax = plt.subplots(figsize=(width + 1.2, height))
    mesh = ax.pcolormesh(xs, ys, q.T, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="Q(s, pi(s, g), g) = -||phi - psi||")
    _draw_walls(ax, env.layout, env.scale)
    ax.plot(*goal_xy, marker="*", color="tab:red", markersize=16, markeredgecolor="k", ls="none", label="goal")
    ax.set_title(title, fontsize=9)
    return _save_maze_figure(fig, [ax], env.layout, env.scale, "", out)


def _panel_size(layout: tuple[str, ...], width: float) -> tuple[float, float]:
    """Inches for one top view: x runs along the layout's rows, y along its columns, at equal scale,
    plus room for the labels and title."""
    return width, width * len(layout[0]) / len(layout) + 1.2


def _draw_walls(ax, layout: tuple[str, ...], scale: float) -> None:
    from matplotlib.patches import Rectangle

    from distill.envs.maze import wall_boxes

    for x, y, hx, hy in wall_boxes(layout, scale):
        ax.add_patch(Rectangle((x - hx, y - hy), 2 * hx, 2 * hy, color="0.35"))


def _save_maze_figure(fig, axes: list, layout: tuple[str, ...], scale: float, title: str, out: Path) -> Path:
    """Frames top views of the maze (x down the layout's rows, y along its columns) and writes them."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(-scale / 2, (len(layout) - 0.5) * scale)
        ax.set_ylim(-scale / 2, (len(layout[0]) - 0.5) * scale)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    axes[0].legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9 if len(axes) == 1 else 11)
    fig.tight_layout()
    _write(out, lambda path: fig.savefig(path, dpi=100))
    plt.close(fig)
    return out


def _write(out: Path, write: Callable[[Path], None]) -> None:
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write(out)
    except OSError as err:
        raise DistillError(f"cannot write {out}: {err.strerror or err}") from None


__all__ = [
    "critic_map",
    "maze_cell",
    "rollout_states",
    "write_critic_map",
    "write_html",
    "write_maze_panels",
    "write_maze_png",
]
