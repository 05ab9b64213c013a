"""``distill export``: a student run -> a verified ONNX policy (and optionally its critic)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from distill import __version__
from distill.errors import DistillError
from distill.nn.networks import energy
from distill.store import runs
from export.contract import contract_hash, package_versions, student_contract, write_contract
from export.onnx_graph import critic_graph, policy_graph
from export.parity import write_verified
from export.variants import PRECISIONS, export_variant
from students.config import sensor_model
from students.train import load_student


def file_metadata(record: dict, config, spec, step: int, sensors) -> dict:
    """What every exported file of a student says about itself: the contract a deployer reads."""
    teacher = record.get("teacher", {})
    teacher_config = teacher.get("config", {})
    metadata = {
        "env": spec.name,
        "state_dim": spec.state_dim,
        "goal_dim": spec.goal_dim,
        "goal_indices": list(spec.goal_indices),
        "observation_layout": "obs = state[0:state_dim]; goal = state[goal_indices] of the goal state; the policy reads concat[obs, goal]",
        "success_radius": spec.success_radius,
        "episode_length": spec.episode_length,
        # Closed-loop evaluation must step the physics the policy was trained in.
        "backend": config.backend or teacher_config.get("backend") or spec.backend,
        "action_low": -1.0,
        "action_high": 1.0,
        "student_depth": config.student_depth,
        "student_width": config.student_width,
        "teacher_depth": teacher_config.get("critic_depth"),
        "teacher_actor_depth": teacher_config.get("actor_depth"),
        "teacher_width": teacher_config.get("width"),
        "teacher_checkpoint_sha256": teacher.get("checkpoint_sha256", ""),
        "student_checkpoint_step": int(step),
        "toolkit_version": __version__,
        "package_versions": package_versions(),
        "precision": "fp32",  # a variant's gate overwrites this with its own (export.variants)
    }
    if sensors is not None:
        metadata["sensor_model"] = sensors.to_json()
        metadata["observation_layout"] = (
            "sensors = the last `history` readings of sensor_model, oldest first (OnnxPolicy stacks them itself: "
            "call it with one reading per control tick); goal = state[goal_indices] of the goal state; the policy "
            "reads concat[sensors, goal]"
        )
    return metadata


def export_student(
    run: Path,
    out: Path,
    critic: bool = False,
    opset: int = 17,
    which: str = "best",
    precision: str = "fp32",
    gate_episodes: int = 128,
    say=lambda _: None,
) -> dict:
    """Writes the student's deterministic policy to ``out`` (and ``<out>.critic.onnx``); returns a summary.

    ``precision`` "int8" or "fp16" writes that variant instead of the fp32 file, only if it passes the
    variant gate (``export.variants``: within 2% of the fp32 file's closed-loop time_at_goal on
    ``gate_episodes`` episodes of seed 0, and faster at batch 1); otherwise nothing is written.
    """
    run, out = Path(run), Path(out)
    if precision not in PRECISIONS:
        raise DistillError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if gate_episodes <= 0:
        raise DistillError(f"the variant gate needs a positive number of episodes, got {gate_episodes}")
    record = runs.read_config(run, kind="student")
    config, spec, networks, params, step = load_student(run, which)
    sensors = sensor_model(config)
    if sensors is not None and precision != "fp32":
        raise DistillError(
            f"{precision} variants of a student with a sensor model are not supported; export it in fp32"
        )
    if not out.name.endswith(".onnx"):
        raise DistillError(f"--out must name an .onnx file, got {out}")
    metadata = file_metadata(record, config, spec, step, sensors)
    policy_contract = student_contract(run, record, config, spec, sensors)
    summary = _export_policy(
        networks,
        params,
        spec,
        sensors,
        out,
        opset,
        precision,
        gate_episodes,
        {**metadata, "contract": policy_contract, "contract_sha256": contract_hash(policy_contract)},
        say,
    )
    summary["contract"] = str(write_contract(policy_contract, out.with_suffix(".json")))
    summary["contract_sha256"] = contract_hash(policy_contract)
    if critic:
        critic_contract = student_contract(run, record, config, spec, None, kind="critic")
        summary.update(
            _export_critic(
                networks,
                params,
                spec,
                out,
                opset,
                {**metadata, "contract": critic_contract, "contract_sha256": contract_hash(critic_contract)},
            )
        )
        write_contract(critic_contract, Path(summary["critic"]).with_suffix(".json"))
    return summary


def _export_policy(
    networks, params, spec, sensors, out: Path, opset: int, precision: str, gate_episodes: int, metadata: dict, say
) -> dict:
    actor = jax.device_get(params["actor"])
    sensor_dim = sensors.sensor_dim if sensors else 0
    model = policy_graph(
        actor,
        state_dim=spec.state_dim,
        goal_dim=spec.goal_dim,
        action_dim=spec.action_dim,
        opset=opset,
        sensor_dim=sensor_dim,
    )

    @jax.jit
    def policy_fn(goal, **seen):
        return {"action": networks.act(actor, jnp.concatenate([seen["sensors" if sensors else "obs"], goal], -1))}

    policy_inputs = {"sensors": sensor_dim} if sensors else {"obs": spec.state_dim}
    policy_inputs["goal"] = spec.goal_dim
    if precision == "fp32":
        report = write_verified(model, out, policy_fn, policy_inputs, metadata=metadata)
        return {"policy": str(out), "precision": precision, "policy_parity_max_abs_error": report["max_abs_error"]}
    if out.is_dir():
        raise DistillError(f"cannot write ONNX file to {out}: it is a directory")
    # The variant derives from the fp32 file that passed the parity gate; that file is only the
    # reference here and is not kept.
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        report = write_verified(model, fp32_path, policy_fn, policy_inputs, metadata=metadata)
        gate = export_variant(fp32_path, precision, out, episodes=gate_episodes, seed=0, say=say)
    return {
        "policy": str(out),
        "precision": precision,
        "policy_parity_max_abs_error": report["max_abs_error"],
        "variant_gate": gate,
    }


def _export_critic(networks, params, spec, out: Path, opset: int, metadata: dict) -> dict:
    """``<out>.critic.onnx``: phi, psi and Q, behind the same gate (energies grow with the embedding
    scale, so the critic also gets a relative tolerance)."""
    critic_out = out.with_name(out.name[: -len(".onnx")] + ".critic.onnx")
    sa, goal_enc = jax.device_get(params["sa_encoder"]), jax.device_get(params["goal_encoder"])
    critic_model = critic_graph(
        sa, goal_enc, state_dim=spec.state_dim, action_dim=spec.action_dim, goal_dim=spec.goal_dim, opset=opset
    )

    @jax.jit
    def critic_fn(obs, action, goal):
        phi = networks.phi(sa, obs, action)
        psi = networks.psi(goal_enc, goal)
        return {"phi": phi, "psi": psi, "q": energy(phi, psi)}

    report = write_verified(
        critic_model,
        critic_out,
        critic_fn,
        {"obs": spec.state_dim, "action": spec.action_dim, "goal": spec.goal_dim},
        metadata=metadata,
        rtol=1e-6,
    )
    return {"critic": str(critic_out), "critic_parity_max_abs_error": report["max_abs_error"]}


__all__ = ["export_student", "file_metadata"]
