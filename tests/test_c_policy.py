"""Students that run anywhere: the C export against the JAX student and OnnxPolicy (history and reset
included), its parity gate refusing a planted mistake, the contract beside every export, the
fixed-rate loop check, and bad input refused in one line with nothing written."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli_in_process


@pytest.fixture(scope="module")
def c_export(tiny_student_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "policy_c"
    result = run_cli_in_process("export", str(tiny_student_run), "--format", "c", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_the_c_policy_is_what_the_jax_student_and_the_onnx_file_compute(tiny_student_run, tiny_student_onnx, c_export):
    from export.c_policy import load_c_policy
    from export.runtime import OnnxPolicy
    from students.train import load_student

    _, spec, networks, params, _ = load_student(tiny_student_run)
    builds = set(Path(tempfile.gettempdir()).glob("distill-c-*"))
    c_policy, onnx_policy = load_c_policy(c_export), OnnxPolicy(tiny_student_onnx)
    assert set(Path(tempfile.gettempdir()).glob("distill-c-*")) == builds  # its build folder is gone
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((64, spec.state_dim)).astype(np.float32)
    goal = rng.standard_normal((64, spec.goal_dim)).astype(np.float32)
    jax_action = np.asarray(networks.act(params["actor"], np.concatenate([obs, goal], -1)))
    assert np.abs(c_policy(obs, goal) - jax_action).max() <= 1e-5
    assert np.abs(c_policy(obs, goal) - onnx_policy(obs, goal)).max() <= 1e-5
    assert np.abs(c_policy(obs[0], goal[0]) - jax_action[0]).max() <= 1e-5


def test_a_sensor_students_c_history_is_onnxpolicys_through_resets(sensor_student_run, tmp_path):
    from export.c_policy import load_c_policy, write_c_policy
    from export.runtime import OnnxPolicy
    from export.student import export_student

    summary = write_c_policy(sensor_student_run, tmp_path / "c")
    assert summary["sensors"] and summary["max_abs_error"] <= 1e-5
    export_student(sensor_student_run, tmp_path / "policy.onnx")
    c_policy, onnx_policy = load_c_policy(tmp_path / "c"), OnnxPolicy(tmp_path / "policy.onnx")
    assert c_policy.reading_dim == onnx_policy.reading_dim and c_policy.history == onnx_policy.history == 3
    rng = np.random.default_rng(2)
    goal = rng.standard_normal(onnx_policy.goal_dim).astype(np.float32)
    for episode in range(3):  # a reset starts a fresh history in both
        c_policy.reset()
        onnx_policy.reset()
        for _ in range(6):
            reading = rng.standard_normal(onnx_policy.reading_dim).astype(np.float32)
            assert np.abs(c_policy(reading, goal) - onnx_policy(reading, goal)).max() <= 1e-5, episode
    header = (tmp_path / "c" / "policy.h").read_text()
    assert "distill_step(distill_state *state" in header and "#define DISTILL_HISTORY 3" in header
    assert "oldest first" in header and "latency: trained with readings 1 control steps late" in header


def test_the_generated_c_compiles_without_warnings_under_strict_flags(c_export):
    from export.c_policy import CFLAGS, compiler

    source = (c_export / "policy.c").read_text()
    assert "#include <stdlib.h>" not in source and "malloc" not in source
    assert set(re.findall(r"#include <([^>]+)>", source)) == {"math.h", "string.h"}
    assert re.findall(r"^(?:static )?float \w+\[", source, flags=re.M) == []  # no mutable globals
    result = subprocess.run(
        [compiler(), *CFLAGS, "-c", str(c_export / "policy.c"), "-o", "/dev/null"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_planted_mistake_in_the_generated_c_is_refused(tiny_student_run):
    import jax

    from distill.errors import DistillError
    from export.c_policy import c_sources, gate
    from students.train import load_student

    _, spec, networks, params, _ = load_student(tiny_student_run)
    actor = jax.device_get(params["actor"])
    dims = {"input_dim": spec.state_dim, "goal_dim": spec.goal_dim, "action_dim": spec.action_dim}
    sources = c_sources(actor, **dims)
    rng = np.random.default_rng(0)
    inputs = [
        (
            rng.standard_normal((7, spec.state_dim)).astype(np.float32),
            rng.standard_normal((7, spec.goal_dim)).astype(np.float32),
        )
    ]

    def reference(x, goal):
        return np.asarray(networks.act(params["actor"], np.concatenate([x, goal], -1)))

    assert gate(sources, dims, reference, inputs) <= 1e-5
    first = re.search(r"static const float mean_kernel\[\d+\] = \{\n    ([^,]+),", sources["policy.c"])
    planted = dict(
        sources,
        **{"policy.c": sources["policy.c"].replace(first.group(0), first.group(0).replace(first.group(1), "0.5f"), 1)},
    )
    assert planted["policy.c"] != sources["policy.c"]
    with pytest.raises(DistillError, match="disagrees with the JAX student"):
        gate(planted, dims, reference, inputs)


def test_the_contract_hash_agrees_across_policy_json_the_onnx_file_and_the_header(tiny_student_onnx, c_export):
    from export.contract import contract_hash
    from export.runtime import OnnxPolicy, PolicyFileError

    onnx_contract = json.loads(tiny_student_onnx.with_suffix(".json").read_text())
    c_contract = json.loads((c_export / "policy.json").read_text())
    digest = contract_hash(onnx_contract)
    assert onnx_contract["sha256"] == c_contract["sha256"] == digest == contract_hash(c_contract)
    policy = OnnxPolicy(tiny_student_onnx, contract=tiny_student_onnx.with_suffix(".json"))
    assert policy.metadata["contract_sha256"] == digest
    assert f"contract sha256: {digest}" in (c_export / "policy.h").read_text()
    contract = policy.contract
    assert contract["observation"]["input"] == "obs" and contract["action"]["tanh_inside"] is True
    assert contract["control"]["period_s"] > 0 and [s["name"] for s in contract["state"]["slices"]][0] == "joint_cos"
    # Robot code written against another contract is refused, with the first difference named.
    other = json.loads(json.dumps(onnx_contract))
    other["control"]["period_s"] = 0.125
    with pytest.raises(PolicyFileError, match=r"control\.period_s is .* in the file, 0\.125 expected"):
        OnnxPolicy(tiny_student_onnx, contract=other)
    other = json.loads(json.dumps(onnx_contract))
    other["provenance"]["retention"] = 0.5  # provenance is not part of the contract
    OnnxPolicy(tiny_student_onnx, contract=other)


def test_the_loop_check_reports_overruns_when_the_period_is_shorter_than_a_call(c_export, tiny_student_onnx):
    from export.loop_check import loop_check

    calm = loop_check(c_export, rate_hz=200, seconds=0.5)
    assert calm["kind"] == "C" and calm["ticks"] == 100 and calm["overrun_share"] < 0.2
    rushed = loop_check(tiny_student_onnx, rate_hz=1e6, seconds=0.005)
    assert rushed["kind"] == "ONNX" and rushed["ticks"] == 5000
    assert rushed["overruns"] >= 0.9 * rushed["ticks"] and rushed["call_p50_us"] > rushed["period_us"]


def test_bad_input_is_refused_in_one_line_and_leaves_nothing(
    tiny_student_run, tiny_teacher_run, tiny_student_onnx, tmp_path, monkeypatch
):
    out = tmp_path / "c"
    assert_one_line_error(
        run_cli_in_process("export", str(tiny_student_run), "--format", "rust", "--out", str(out)),
        "--format must be 'onnx' or 'c'",
    )
    assert_one_line_error(
        run_cli_in_process("export", str(tiny_teacher_run), "--format", "c", "--out", str(out)), "not a student run"
    )
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    assert_one_line_error(
        run_cli_in_process("export", str(tiny_student_run), "--format", "c", "--out", str(tmp_path / "taken")),
        "not empty",
    )
    monkeypatch.setenv("CC", "no-such-compiler")
    assert_one_line_error(
        run_cli_in_process("export", str(tiny_student_run), "--format", "c", "--out", str(out)),
        "no C compiler on the PATH",
    )
    monkeypatch.delenv("CC")
    assert_one_line_error(
        run_cli_in_process("loop-check", str(tiny_student_onnx), "--rate", "0"), "--rate must be positive"
    )
    assert_one_line_error(run_cli_in_process("loop-check", str(tiny_student_run / "config.json")), "is not a policy")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
