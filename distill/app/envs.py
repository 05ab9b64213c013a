"""``distill envs``: the registered environments, or one environment's named state slices."""

from __future__ import annotations

from rich.table import Table

from distill.app.console import print_table
from distill.envs import DEFAULT_ENV, REGISTRY, EnvSpec, get_spec


def environment_rows() -> list[dict]:
    return [
        {
            "name": s.name,
            "state_dim": s.state_dim,
            "goal_indices": list(s.goal_indices),
            "action_dim": s.action_dim,
            "success_radius": s.success_radius,
            "episode_length": s.episode_length,
            "backend": s.backend,
            # A preset that sets only the paper's budget is no CPU preset.
            "cpu_preset": bool(set(s.preset) - {"total_steps"}),
            "default": s.name == DEFAULT_ENV,
            "description": s.description,
        }
        for s in REGISTRY.values()
    ]


def layout_rows(name: str) -> tuple[EnvSpec, list[dict]]:
    spec = get_spec(name)
    return spec, [
        {"name": n, "start": a, "stop": b, "size": b - a, "goal": any(a <= i < b for i in spec.goal_indices)}
        for n, a, b in spec.layout
    ]


def print_layout(spec: EnvSpec, slices: list[dict]) -> None:
    table = Table(title=f"{spec.name}: the {spec.state_dim} state entries (the goal is state{list(spec.goal_indices)})")
    for col in ("slice", "entries", "size", "holds the goal"):
        table.add_column(col)
    for s in slices:
        table.add_row(s["name"], f"{s['start']}:{s['stop']}", str(s["size"]), "yes" if s["goal"] else "")
    print_table(table)


def print_environments(rows: list[dict]) -> None:
    table = Table(title="goal-conditioned environments (observation = concat\\[state, goal])")
    for col in ("name", "state", "goal indices", "action", "radius", "episode", "backend", "description"):
        table.add_column(col)
    for r in rows:
        name = r["name"] + (" (default)" if r["default"] else "")
        table.add_row(
            name,
            str(r["state_dim"]),
            str(r["goal_indices"]),
            str(r["action_dim"]),
            str(r["success_radius"]),
            str(r["episode_length"]),
            r["backend"],
            r["description"] + ("" if r["cpu_preset"] else " \\[paper defaults: GPU-sized]"),
        )
    print_table(table)
