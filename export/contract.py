"""The contract of an exported student: what a robot must feed it and what it gives back.

Deployers' most common failures are contract mistakes, not model mistakes: the order of the
observation's terms, how a history is stacked, whether tanh or action scaling is inside, the control
period the policy was trained at. Every export writes ``policy.json`` beside its files, and its hash
into the ONNX metadata and the C header, so robot code can pin the contract it was written against
(``OnnxPolicy(path, contract=...)`` refuses a file whose contract differs, naming the first
difference).

The hash covers everything but ``provenance`` (which teacher, which versions, what retention): two exports
of the same student on other package versions keep one contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill import __version__
from distill.store import runs

# The robot's side compares contracts with nothing but the runtime module.
from export.runtime import contract_hash, first_difference  # noqa: F401

SCHEMA_VERSION = 1
CONTRACT_FILE = "policy.json"
ENERGY = "q = -sqrt(sum((phi(state, action) - psi(goal))^2) + 1e-12)"


def _goal_meaning(spec) -> str:
    names = [n for n, a, b in spec.layout if any(a <= i < b for i in spec.goal_indices)]
    return (
        f"state[{list(spec.goal_indices)}] of the state to reach ({', '.join(names) or 'state entries'}); "
        f"reached within {spec.success_radius} of it"
    )


def build_contract(
    spec,
    control_period_s: float,
    sensors: dict | None,
    action_scale,
    action_offset,
    provenance: dict,
    kind: str = "policy",
    backend: str = "",
) -> dict:
    """The contract of a policy (or, with ``kind="critic"``, a critic) exported for ``spec``.

    ``sensors`` is the sensor model's JSON form (None: the policy reads the state itself)."""
    contract: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "env": spec.name,
        "state": {"size": spec.state_dim, "slices": [{"name": n, "start": a, "stop": b} for n, a, b in spec.layout]},
        "goal": {"size": spec.goal_dim, "indices": list(spec.goal_indices), "meaning": _goal_meaning(spec)},
        "control": {
            "period_s": float(control_period_s),
            "episode_length": spec.episode_length,
            "simulator_backend": backend or spec.backend,
        },
    }
    if kind == "critic":
        contract["critic"] = {"inputs": ["obs", "action", "goal"], "outputs": ["phi", "psi", "q"], "energy": ENERGY}
        contract["action"] = {"size": spec.action_dim, "low": -1.0, "high": 1.0}
    else:
        contract["observation"] = _observation(spec, sensors)
        contract["action"] = {
            "size": spec.action_dim,
            "low": -1.0,
            "high": 1.0,
            "tanh_inside": True,
            "scale": [float(v) for v in action_scale],
            "offset": [float(v) for v in action_offset],
            "formula": "action = offset + scale * tanh(mean(concat[input, goal]))",
        }
    contract["provenance"] = provenance
    return contract


def _observation(spec, sensors: dict | None) -> dict:
    if sensors is None:
        return {"input": "obs", "size": spec.state_dim, "reads": "the whole state, in the order of state.slices"}
    return {
        "input": "sensors",
        "reading": [
            {"name": s["name"], "state_start": s["start"], "state_stop": s["stop"], "noise_sigma": s["noise"]}
            for s in sensors["slices"]
        ],
        "reading_size": sensors["reading_dim"],
        "history": sensors["history"],
        "history_order": "oldest first; the first reading after reset fills the whole history",
        "latency_steps": sensors["latency"],
        "size": sensors["reading_dim"] * sensors["history"],
        "spec": sensors["spec"],
    }


def write_contract(contract: dict, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**contract, "sha256": contract_hash(contract)}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def package_versions() -> dict:
    """The versions a deployer's report needs: Python and the numerical stack."""
    return {
        k: v
        for k, v in runs.package_versions().items()
        if k in ("python", "jax", "flax", "onnx", "onnxruntime", "numpy")
    }


def student_contract(run: Path, record: dict, config, spec, sensors, kind: str = "policy") -> dict:
    """The contract of a student's exported files (``export.contract``): the environment's layout and
    control period, the sensor model, the action, and where the student came from."""
    teacher = record.get("teacher", {})
    teacher_config = teacher.get("config", {})
    report = Path(run) / "report.json"
    retention = None
    if report.is_file():
        try:
            retention = json.loads(report.read_text()).get("retention")
        except (OSError, ValueError):
            retention = None
    backend = config.backend or spec.backend
    env = spec.make(backend=backend)
    # No folder names of the student: packing or moving a run must not change what it exports.
    provenance = {
        "student_depth": config.student_depth,
        "student_width": config.student_width,
        "teacher_run": Path(teacher.get("run", "")).name,
        "teacher_depth": teacher_config.get("critic_depth"),
        "teacher_actor_depth": teacher_config.get("actor_depth"),
        "teacher_width": teacher_config.get("width"),
        "retention": retention,
        "toolkit_version": __version__,
        "package_versions": package_versions(),
    }
    return build_contract(
        spec,
        float(env.dt),
        sensors.to_json() if sensors else None,
        [1.0] * spec.action_dim,
        [0.0] * spec.action_dim,
        provenance,
        kind=kind,
    )
