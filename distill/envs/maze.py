"""Goal-conditioned mazes: any Brax robot walking through corridors of box walls.

A maze is a map of cells: ``#`` wall, ``R`` the robot's start cell, ``G`` a goal cell, ``.`` free.
Cell (row i, column j) is centred at (x, y) = scale * (i, j), by default with scale 4.0, JaxGCRL's
convention. Walls are 2 m high boxes written into the robot's MJCF. They collide with exactly the
robot's ``wall_geoms``, and the floor with exactly the robot's geoms of contype 1 (the ant's feet,
the whole humanoid, none of the point mass). MuJoCo's rule (two geoms collide when the contype of
one AND the conaffinity of the other is non-zero) gives that with a bit of its own for the walls:

    geom                contype  conaffinity
    floor               0        1
    wall                2        0
    robot geom          1 if it touches the floor, else 0
                                 2 if it is in ``wall_geoms``, else 0

so robot geoms never collide with one another. The ant's ``wall_geoms`` are its feet, torso and hip
capsules (as in the reference's maze model, where the torso and hips hit walls but not the floor);
the humanoid's its feet and trunk (see ``distill.envs.humanoid`` for why not every geom).

State, success radius and goal are the robot's, with the goal's leading torso xy moved: the robot
starts at the start cell, and goals are goal-cell centres, exact as in the reference for the ant and
the humanoid. A robot may jitter them (its ``maze_goal_noise``, a fraction of a cell): the point
mass's simple mazes, which have no reference counterpart, keep the eighth of a cell their published
teachers were trained with. Early termination is the robot's (``healthy_z``); a maze changes
nothing about it.

- ``U_MAZE``: a 5 x 5 U with the border (6 goal cells, JaxGCRL's U maze, the humanoid's).
- ``U4_MAZE``: a long U-shaped corridor (10 goal cells, JaxGCRL's U4 maze).
- ``U5_MAZE``: a longer U, 7 x 8 cells with the border (JaxGCRL's U5 maze).
- ``BIG_MAZE``: an 8 x 8 maze with branches and dead ends (JaxGCRL's big maze, D4RL's medium).
- ``BIG_MAZE_EVAL``: ``BIG_MAZE``'s walls with only its 9 far goal cells, which the paper's code
  evaluates the ant's big maze on (JaxGCRL's version also counts the cell left of the top-right
  corner of the second row, 10 cells).
- ``HARDEST_MAZE``: a 9 x 12 maze with many junctions (JaxGCRL's hardest maze, D4RL's large).

The start cell is never a goal cell, so no episode starts at its goal.

A robot in a layout is ``maze_env(robot_class, layout)``, e.g. ``maze_env(GoalAnt, U4_MAZE)``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
from brax.io import mjcf

from distill.envs.base import GoalEnv

MAZE_SCALE = 4.0
WALL_HEIGHT = 2.0
# The conaffinity bit walls collide with (see the module docstring).
WALL_BIT = 2

U_MAZE = (
    "#####",
    "#RGG#",
    "###G#",
    "#GGG#",
    "#####",
)

U4_MAZE = (
    "#####",
    "#GGG#",
    "#R#G#",
    "###G#",
    "#G#G#",
    "#GGG#",
    "#####",
)

U5_MAZE = (
    "########",
    "#GGGGGG#",
    "#R####G#",
    "######G#",
    "#G####G#",
    "#GGGGGG#",
    "########",
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

BIG_MAZE_EVAL = (
    "########",
    "#R.##GG#",
    "#..#..G#",
    "##...###",
    "#..#...#",
    "#.#G.#G#",
    "#.GG#GG#",
    "########",
)

HARDEST_MAZE = (
    "############",
    "#RGGG#GGGGG#",
    "#G##G#G#G#G#",
    "#GGGGGG#GGG#",
    "#G####G###G#",
    "#GG#G#GGGGG#",
    "##G#G#G#G###",
    "#GG#GGG#GGG#",
    "############",
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


def maze_xml(
    robot_xml: str, layout: tuple[str, ...], scale: float = MAZE_SCALE, wall_geoms: tuple[str, ...] = ()
) -> str:
    """A robot's MJCF with the maze walls added to the world body, and its ``wall_geoms`` made to
    collide with them (and with the floor as before: only if they did)."""
    root = ET.fromstring(robot_xml)
    worldbody = root.findall("worldbody")
    if len(worldbody) != 1:
        raise ValueError("expected one worldbody in the robot's MJCF")
    geoms = {geom.get("name"): geom for geom in worldbody[0].iter("geom")}
    if not wall_geoms:
        raise ValueError("a robot in a maze needs wall_geoms, or it walks through the walls")
    for name in wall_geoms:
        if name not in geoms:
            raise ValueError(f"the robot's MJCF has no geom named {name!r}")
        geoms[name].set("conaffinity", str(WALL_BIT))
    for k, (x, y, hx, hy) in enumerate(wall_boxes(layout, scale)):
        ET.SubElement(
            worldbody[0],
            "geom",
            name=f"wall_{k}",
            type="box",
            pos=f"{x} {y} {WALL_HEIGHT / 2}",
            size=f"{hx} {hy} {WALL_HEIGHT / 2}",
            contype=str(WALL_BIT),
            conaffinity="0",
            rgba="0.7 0.5 0.3 1",
        )
    return ET.tostring(root, encoding="unicode")


class MazeEnv(GoalEnv):
    """Mixin putting a robot environment class in ``layout``; see ``maze_env``.

    The robot's goal must begin with its torso xy (true of the ant and the humanoid): the maze
    moves that onto a goal cell and keeps the rest (the humanoid's standing height).
    """

    layout: tuple[str, ...]
    scale: float = MAZE_SCALE
    goal_noise: float = 0.0
    """How far goals jitter around their cell centre, as a fraction of a cell (the robot's
    ``maze_goal_noise``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Reuse the per-backend tuning Brax gave its robot (time step, solver, gears): the maze only
        # adds static walls, so the robot should behave exactly as in the open.
        tuned = self.sys
        maze = mjcf.loads(maze_xml(self.mjcf(), self.layout, self.scale, self.wall_geoms))
        self.sys = maze.replace(opt=tuned.opt, actuator=tuned.actuator)
        self.start = cell_centers(self.layout, "R", self.scale)[0]
        self.goals = cell_centers(self.layout, "G", self.scale)

    def _initial_q(self, rng):
        q, qd = super()._initial_q(rng)
        return q.at[:2].add(jnp.asarray(self.start)), qd

    def _sample_goal(self, rng):
        rng_cell, rng_noise, rng_robot = jax.random.split(rng, 3)
        cell = jax.random.randint(rng_cell, (), 0, len(self.goals))
        reach = self.goal_noise * self.scale
        noise = jax.random.uniform(rng_noise, (2,), minval=-reach, maxval=reach)
        return super()._sample_goal(rng_robot).at[:2].set(jnp.asarray(self.goals)[cell] + noise)


def maze_env(robot: type[GoalEnv], layout: tuple[str, ...], scale: float = MAZE_SCALE) -> type[MazeEnv]:
    """The environment class of ``robot`` in ``layout``, ready to register."""
    # Brax's environments are ABCs, and type() through ABCMeta would name the module "abc".
    namespace = {"layout": layout, "scale": scale, "goal_noise": robot.maze_goal_noise, "__module__": __name__}
    if robot.maze_spring_timestep is not None:
        namespace["spring_timestep"] = robot.maze_spring_timestep
    return type(f"{robot.__name__}Maze", (MazeEnv, robot), namespace)
