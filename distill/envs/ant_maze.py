"""Goal-conditioned ant mazes: Brax's ant walking through corridors of box walls.

A maze is a map of cells: ``#`` wall, ``R`` the robot's start cell, ``G`` a goal cell, ``.`` free.
Cell (row i, column j) is centred at (x, y) = scale * (i, j) with scale 4.0, JaxGCRL's convention.
Walls are 2 m high boxes written into Brax's ant MJCF; they collide with the ant's feet the way the
floor does (in Brax's ant only the feet collide with anything).

State and goal are exactly the ant's (29 dims, goal = torso xy). The ant starts at the start cell;
goals are goal-cell centres plus a little uniform noise.

- ``ant_u4_maze``: a long U-shaped corridor (10 goal cells, JaxGCRL's U4 maze).
- ``ant_big_maze``: an 8 x 8 maze with branches and dead ends (JaxGCRL's big maze).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from brax.io import mjcf
from etils import epath

from distill.envs.ant import GoalAnt

MAZE_SCALE = 4.0
WALL_HEIGHT = 2.0
# Goals jitter around their cell centre, staying well inside the 4 m wide corridor.
GOAL_NOISE = 0.5

U4_MAZE = (
    "#####",
    "#GGG#",
    "#R#G#",
    "###G#",
    "#G#G#",
    "#GGG#",
    "#####",
)

BIG_MAZE = (
    "########",
    "#RG##GG#",
    "#GG#GGG#",
    "##GGG###",
    "#GG#GGG#",
    "#G#GG#G#",
    "#GGG#GG#",
    "########",
)


def cell_centers(layout: tuple[str, ...], kind: str, scale: float = MAZE_SCALE) -> np.ndarray:
    """World xy of every cell of the given kind, shape [n, 2]."""
    return np.array(
        [(i * scale, j * scale) for i, row in enumerate(layout) for j, cell in enumerate(row) if cell == kind],
        dtype=np.float32,
    ).reshape(-1, 2)


def wall_boxes(layout: tuple[str, ...], scale: float = MAZE_SCALE) -> list[tuple[float, float, float, float]]:
    """Walls as (x, y, half_x, half_y) boxes covering every wall cell exactly once.

    Greedy rectangles (grow right, then down) give the same geometry as one box per cell with far
    fewer collision pairs, and collision pairs are most of the cost of a physics step here.
    """
    rows, cols = len(layout), len(layout[0])
    covered = [[False] * cols for _ in range(rows)]

    def free_wall(i, j):
        return layout[i][j] == "#" and not covered[i][j]

    boxes = []
    for i in range(rows):
        for j in range(cols):
            if not free_wall(i, j):
                continue
            width = 1
            while j + width < cols and free_wall(i, j + width):
                width += 1
            height = 1
            while i + height < rows and all(free_wall(i + height, j + k) for k in range(width)):
                height += 1
            for di in range(height):
                for dj in range(width):
                    covered[i + di][j + dj] = True
            # A cell spans +-scale/2 around its centre, so a block of cells spans n * scale.
            centre = ((i + (height - 1) / 2) * scale, (j + (width - 1) / 2) * scale)
            boxes.append((*centre, height * scale / 2, width * scale / 2))
    return boxes


def maze_xml(layout: tuple[str, ...], scale: float = MAZE_SCALE) -> str:
    """Brax's ant MJCF with the maze walls added to the world body."""
    xml = (epath.resource_path("brax") / "envs/assets/ant.xml").read_text()
    # contype 0 / conaffinity 1, like the floor: the feet (contype 1) then collide with the walls,
    # and walls, being static, need nothing else.
    walls = "".join(
        f'<geom name="wall_{k}" type="box" pos="{x} {y} {WALL_HEIGHT / 2}" '
        f'size="{hx} {hy} {WALL_HEIGHT / 2}" contype="0" conaffinity="1" rgba="0.7 0.5 0.3 1"/>\n'
        for k, (x, y, hx, hy) in enumerate(wall_boxes(layout, scale))
    )
    if xml.count("</worldbody>") != 1:
        raise ValueError("expected one worldbody in Brax's ant.xml")
    return xml.replace("</worldbody>", walls + "</worldbody>")


class GoalAntMaze(GoalAnt):
    """Subclasses set ``layout``; state, goal and success radius are the ant's."""

    layout: tuple[str, ...]

    def __init__(self, backend: str = "spring", **kwargs):
        super().__init__(backend=backend, **kwargs)
        # Reuse the per-backend tuning Brax gave its ant (time step, solver, gears): the maze only
        # adds static walls, so the robot should behave exactly as in the open.
        tuned = self.sys
        self.sys = mjcf.loads(maze_xml(self.layout)).replace(opt=tuned.opt, actuator=tuned.actuator)
        self.start = cell_centers(self.layout, "R")[0]
        self.goals = cell_centers(self.layout, "G")

    def _initial_q(self, rng):
        q, qd = super()._initial_q(rng)
        return q.at[:2].add(jnp.asarray(self.start)), qd

    def _sample_goal(self, rng):
        rng_cell, rng_noise = jax.random.split(rng)
        cell = jax.random.randint(rng_cell, (), 0, len(self.goals))
        noise = jax.random.uniform(rng_noise, (2,), minval=-GOAL_NOISE, maxval=GOAL_NOISE)
        return jnp.asarray(self.goals)[cell] + noise


class AntU4Maze(GoalAntMaze):
    layout = U4_MAZE


class AntBigMaze(GoalAntMaze):
    layout = BIG_MAZE
