"""`distill render`: Brax's HTML viewer of deterministic episodes, and the maze top view."""

from __future__ import annotations

import base64
import json
import re
import zlib

import jax
import numpy as np
import pytest

from distill.app.render import render_target
from distill.envs.maze import U4_MAZE, wall_boxes
from distill.errors import DistillError
from distill.nn.networks import energy
from tests.conftest import assert_one_line_error, run_cli, run_cli_in_process


def test_render_a_maze_run_writes_the_viewer_and_the_top_view(tiny_maze_teacher_run, tmp_path):
    out = tmp_path / "maze.html"
    written = render_target(tiny_maze_teacher_run, out, episodes=2, png=True, length=40)
    html = out.read_text()
    assert written == {"html": str(out), "png": str(tmp_path / "maze.png")}
    viewer = viewer_system(html)
    assert len(viewer["states"]["x"]) == 2 * 41  # two episodes of 40 steps after their resets
    # The maze's walls are in the scene: boxes on the world body.
    assert sum(geom["name"] == "Box" for geom in viewer["geoms"]["world"]) == len(wall_boxes(U4_MAZE))
    assert (tmp_path / "maze.png").stat().st_size > 10_000


def viewer_system(html: str) -> dict:
    """The scene and frames Brax's viewer page carries (compressed JSON in base64)."""
    payload = re.search(r'system = "([^"]+)"', html)
    assert payload and "<html" in html.lower()
    return json.loads(zlib.decompress(base64.b64decode(payload.group(1))))


def test_render_a_reacher_run_through_the_command_line(tiny_teacher_run, tmp_path):
    out = tmp_path / "reacher.html"
    result = run_cli("render", str(tiny_teacher_run), "--out", str(out), "--episodes", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    assert len(viewer_system(out.read_text())["states"]["x"]) == 1 + 100  # one reset and its episode


def test_render_bad_input(tiny_teacher_run, tmp_path):
    # Through the command line once (the one-line form), then the library's own errors.
    assert_one_line_error(
        run_cli_in_process("render", str(tiny_teacher_run), "--out", str(tmp_path / "r.html"), "--png"),
        "--png draws a maze's top view; 'reacher' is not a maze",
    )
    cases = [
        (dict(out=tmp_path / "r.png"), "must name an .html file"),
        (dict(out=tmp_path / "r.html", env="ant"), "trained on 'reacher', not on 'ant'"),
        (dict(out=tmp_path / "r.html", episodes=0), "--episodes must be positive"),
        (dict(out=tmp_path / "r.html", which="middle"), "--checkpoint must be one of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(DistillError, match=message):
            render_target(tiny_teacher_run, **kwargs)
    with pytest.raises(DistillError, match="does not exist"):
        render_target(tmp_path / "missing.onnx", tmp_path / "r.html")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(DistillError, match="cannot write"):
        render_target(tiny_teacher_run, blocked / "r.html", episodes=1, length=2)
    assert not list(tmp_path.glob("r.*"))


def test_critic_map_of_a_maze_run(tiny_maze_teacher_run, tmp_path):
    from distill.app.evaluate import load_run_policy
    from distill.eval.render import critic_map

    out = tmp_path / "map.png"
    result = run_cli("critic-map", str(tiny_maze_teacher_run), "--goal", "4,12", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 10_000
    # The values are the critic's: Q at a free grid point equals -||phi - psi|| computed by hand.
    run = load_run_policy(tiny_maze_teacher_run)
    env = run.spec.make()
    xs, ys, q = critic_map(env, run.spec, run.networks, run.params, (4.0, 12.0), points_per_cell=2)
    assert np.isnan(q[0, 0]) and np.isfinite(q).sum() > 0  # the corner is wall, corridors are free
    i, j = np.argwhere(np.isfinite(q))[0]
    reset = np.asarray(env.reset(jax.random.PRNGKey(0)).obs)
    state = reset[: run.spec.state_dim].copy()
    state[:2] = xs[i], ys[j]
    goal = np.array([4.0, 12.0], np.float32)
    action = run.apply(run.actor_params, np.concatenate([state, goal])[None])
    phi = run.networks.phi(run.params["sa_encoder"], state[None], action)
    psi = run.networks.psi(run.params["goal_encoder"], goal[None])
    np.testing.assert_allclose(q[i, j], float(energy(phi, psi)[0]), rtol=1e-5)


def test_critic_map_bad_input(tiny_maze_teacher_run, tiny_teacher_run, tmp_path):
    from distill.app.render import critic_map_target

    out = tmp_path / "map.png"
    assert_one_line_error(
        run_cli_in_process("critic-map", str(tiny_maze_teacher_run), "--goal", "0,0", "--out", str(out)),
        "the goal (0.0, 0.0) lies inside a wall",
    )
    cases = [
        (tiny_teacher_run, "0,0", out, "'reacher' is not a maze"),
        (tiny_maze_teacher_run, "100,4", out, "lies outside the maze"),
        (tiny_maze_teacher_run, "4", out, "--goal must be X,Y"),
        (tiny_maze_teacher_run, "a,b", out, "--goal must be X,Y"),
        (tiny_maze_teacher_run, "4,12", tmp_path / "map.html", "must name a .png file"),
        (tmp_path / "policy.onnx", "4,12", out, "holds no critic"),
    ]
    for run, goal, path, message in cases:
        with pytest.raises(DistillError, match=message):
            critic_map_target(run, goal, path)
    assert not out.exists()
