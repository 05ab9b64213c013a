import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.errors import DistillError
from distill.nn.networks import deterministic_action
from distill.store.checkpoints import RunCheckpoints, abstract_of
from distill.store.runs import read_metrics
from students import losses
from students.agent import make_distiller
from students.config import StudentConfig
from students.train import load_student
from tests.conftest import TINY_STUDENT_FLAGS, assert_one_line_error, run_cli, run_cli_in_process

TINY_STUDENT = dict(
    iterations=2, num_envs=8, unroll_length=10, updates_per_iteration=3, batch_size=32, eval_episodes=4, num_evals=2
)


def test_gaussian_kl_hand_computed():
    # KL(N(0,1) || N(1, e^2)) per dim = log(e) + (1 + 1) / (2 e^2) - 1/2
    kl = losses.gaussian_kl(jnp.zeros(2), jnp.zeros(2), jnp.ones(2), jnp.ones(2))
    np.testing.assert_allclose(kl, 2 * (1 + 1 / math.e**2 - 0.5), rtol=1e-6)
    assert float(losses.gaussian_kl(jnp.ones(3), -jnp.ones(3), jnp.ones(3), -jnp.ones(3))) == 0.0


def test_closed_form_kl_matches_monte_carlo_between_tanh_gaussians():
    mp, lp = jnp.array([0.4, -1.2]), jnp.array([-0.7, -0.2])
    mq, lq = jnp.array([0.1, -0.6]), jnp.array([-0.3, -0.9])
    eps = jax.random.normal(jax.random.PRNGKey(0), (400_000, 2))
    u = mp + jnp.exp(lp) * eps
    a = jnp.tanh(u)

    def tanh_gauss_logp(a, m, ls):
        pre = jnp.arctanh(jnp.clip(a, -1 + 1e-7, 1 - 1e-7))
        logn = -0.5 * ((pre - m) / jnp.exp(ls)) ** 2 - ls - 0.5 * jnp.log(2 * jnp.pi)
        return jnp.sum(logn - jnp.log(1 - a**2), -1)

    # Evaluate the densities at the pre-tanh sample itself to avoid arctanh round-off.
    logp = jnp.sum(-0.5 * eps**2 - lp - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(1 - a**2), -1)
    logq = jnp.sum(-0.5 * ((u - mq) / jnp.exp(lq)) ** 2 - lq - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(1 - a**2), -1)
    monte_carlo = float(jnp.mean(logp - logq))
    closed = float(losses.gaussian_kl(mp, lp, mq, lq))
    assert abs(monte_carlo - closed) < 0.02 * closed + 0.005
    # logp and logq are the tanh-Gaussian densities of the actions: check them against the density
    # computed from the actions alone, away from |a| -> 1 where arctanh loses the digits.
    inside = jnp.all(jnp.abs(a) < 0.99, -1)
    assert int(inside.sum()) > 300_000
    np.testing.assert_allclose(tanh_gauss_logp(a, mp, lp)[inside], logp[inside], atol=1e-3)
    np.testing.assert_allclose(tanh_gauss_logp(a, mq, lq)[inside], logq[inside], atol=1e-3)


def test_policy_loss_kinds():
    tm, tl = jnp.array([[0.0, 1.0]]), jnp.zeros((1, 2))
    sm, sl = jnp.array([[0.5, 1.0]]), jnp.zeros((1, 2))
    mse_expected = (math.tanh(0.5) - 0.0) ** 2
    kl_expected = 0.5 * 0.25
    mse, _ = losses.policy_loss("mse", tm, tl, sm, sl)
    kl, _ = losses.policy_loss("kl", tm, tl, sm, sl)
    both, _ = losses.policy_loss("both", tm, tl, sm, sl)
    np.testing.assert_allclose([mse, kl, both], [mse_expected, kl_expected, mse_expected + kl_expected], rtol=1e-6)


def test_representation_losses_hand_computed():
    phi_t = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    psi_t = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(losses.representation_regression(phi_t + 1.0, psi_t, phi_t, psi_t), 2.0, rtol=1e-6)
    assert abs(float(losses.relational_kl(phi_t, psi_t, phi_t, psi_t, 1.0))) < 1e-6
    # Teacher rows softmax([0, -5]), student logits all equal -> KL = sum p log(2 p)
    p = np.exp([0.0, -5.0]) / np.exp([0.0, -5.0]).sum()
    expected = float(np.sum(p * np.log(2 * p)))
    zeros = jnp.zeros((2, 2))
    np.testing.assert_allclose(losses.relational_kl(zeros, zeros, phi_t, psi_t, 1.0), expected, rtol=1e-4)
    np.testing.assert_allclose(losses.critic_guidance(jnp.array([-1.0, -3.0])), 2.0)


@pytest.fixture(scope="module")
def distiller(tiny_teacher_run):
    d, _ = make_distiller(StudentConfig(**TINY_STUDENT, beta_start=0.0), tiny_teacher_run)
    return d


def test_dagger_labels_come_from_the_teacher_on_student_visited_states(distiller):
    state = distiller.init(jax.random.PRNGKey(0))
    collect = jax.jit(distiller.collect)  # one compilation for both betas
    _, _, rows, teacher_acted = collect(
        state.params, state.env, state.readings, jax.random.PRNGKey(1), jnp.float32(0.0)
    )
    obs, action, _, _ = rows
    assert not bool(teacher_acted.any())  # beta = 0: the student acts at every step
    student_action = deterministic_action(distiller.student.policy(state.params["actor"], obs)[0])
    np.testing.assert_allclose(action, student_action, atol=1e-6)
    # The labels on those visited states are the teacher's outputs there.
    flat_obs = obs.reshape(-1, obs.shape[-1])
    flat_action = action.reshape(-1, action.shape[-1])
    s, g = flat_obs[:, : distiller.spec.state_dim], flat_obs[:, distiller.spec.state_dim :]
    labels = distiller.label(s, flat_action, g)
    mean, log_std = distiller.teacher.policy(distiller.teacher_params["actor"], flat_obs)
    np.testing.assert_allclose(labels.mean, mean, atol=1e-6)
    np.testing.assert_allclose(labels.log_std, log_std, atol=1e-6)
    # And with beta = 1 the teacher's action is executed.
    _, _, rows, teacher_acted = collect(
        state.params, state.env, state.readings, jax.random.PRNGKey(1), jnp.float32(1.0)
    )
    assert bool(teacher_acted.all())
    teacher_action = deterministic_action(distiller.teacher.policy(distiller.teacher_params["actor"], rows[0])[0])
    np.testing.assert_allclose(rows[1], teacher_action, atol=1e-6)


@pytest.mark.slow  # two compiled DAgger rounds: CI runs it with the learning tests
def test_aggregated_dataset_keeps_every_round(distiller):
    state = jax.jit(distiller.init)(jax.random.PRNGKey(0))
    round_fn = jax.jit(distiller.dagger_round)
    state, _ = round_fn(state)
    state, _ = round_fn(state)
    assert int(state.dataset.rows_written) == 2 * distiller.config.unroll_length
    assert distiller.config.dataset_rows >= 2 * distiller.config.unroll_length


def test_student_checkpoint_round_trip(distiller, tmp_path):
    state = jax.jit(distiller.dagger_round)(jax.jit(distiller.init)(jax.random.PRNGKey(2)))[0]
    expected = jax.device_get(state.params)
    ckpt = RunCheckpoints(tmp_path)
    ckpt.save(1, state, state.params, time_at_goal=0.0)
    _, restored = ckpt.restore_state(abstract_of(jax.eval_shape(distiller.init, jax.random.PRNGKey(0))))
    ckpt.close()
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(jax.device_get(restored.params))):
        np.testing.assert_array_equal(a, b)


def test_tiny_end_to_end_compress(tiny_student_run, tiny_teacher_run):
    """The session's tiny student was made by `distill compress` on a teacher trained in the test."""
    from distill.app.report import critic_agreement, visited_observations
    from teachers.train import load_teacher

    out = tiny_student_run
    report = json.loads((out / "report.json").read_text())
    assert report["retention"] == pytest.approx(
        report["student"]["time_at_goal"] / max(report["teacher"]["time_at_goal"], 1e-9)
    )
    for key in ("action_error", "critic_agreement", "jax_latency", "params"):
        assert key in report["student"]
    assert report["student"]["params"]["actor"] < report["teacher"]["params"]["actor"]
    assert (out / "report.md").read_text().startswith("# Distillation report")
    assert (out / "report.png").stat().st_size > 1000
    assert [m["round"] for m in read_metrics(out)][-1] == 2
    config, spec, student, params, _ = load_student(out)
    assert config.student_depth == 4 and config.student_width == 16 and spec.name == "reacher"
    # The report's critic agreement, recomputed from the saved checkpoints on the same visited states
    # (the report's 4 episodes, seed 0).
    assert report["teacher_run"] == str(tiny_teacher_run) and report["episodes"] == 4 and report["seed"] == 0
    t_config, _, teacher, t_params, _ = load_teacher(tiny_teacher_run)
    obs, _ = visited_observations(
        spec, spec.make(backend=t_config.backend), student, params, 4, jax.random.fold_in(jax.random.PRNGKey(0), 7)
    )
    expected = critic_agreement(spec, teacher, t_params, student, params, obs)
    assert report["student"]["critic_agreement"] == pytest.approx(expected, abs=1e-6)
    assert params["actor"]["tower"]["blocks"]["block"]["dense_0"]["kernel"].shape[0] == 1  # one residual block
    # `compress` without --dagger/--no-dagger distils with DAgger, as documented, not by cloning.
    assert (config.beta_start, config.beta_decay) == (1.0, 0.5)
    ev = run_cli("evaluate", str(out), "--episodes", "4", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["policy"].startswith("student")


def test_compress_with_scratch_baseline(tiny_student_run, tiny_teacher_run):
    """The report compares against a same-size network trained from scratch on the teacher's budget."""
    report = json.loads((tiny_student_run / "report.json").read_text())
    assert report["scratch"]["depth"] == report["student"]["depth"] == 4
    assert report["scratch"]["width"] == report["student"]["width"] == 16
    assert (
        report["scratch"]["env_steps"]
        == json.loads((tiny_teacher_run / "metrics.jsonl").read_text().splitlines()[-1])["env_steps"]
    )
    assert (
        json.loads((tiny_student_run / "scratch_baseline" / "config.json").read_text())["seed"] == 1
    )  # independent of the teacher


# Compressing a maze teacher compiles the student's and the report's programs for 1000-step maze
# episodes, a minute on a small machine: CI runs it with the slow tests. The default suite draws a
# maze run's paths through render --png.
@pytest.mark.slow
def test_maze_report_draws_teacher_and_student_paths(tiny_maze_teacher_run, tmp_path):
    from distill.eval.evaluation import PATH_EPISODES

    out = tmp_path / "student"
    flags = [f for f in TINY_STUDENT_FLAGS if f != "--no-progress"]
    result = run_cli(
        "compress", str(tiny_maze_teacher_run), "--out", str(out), *flags, "--no-baseline", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["env"] == "simple_u_maze" and report["maze_paths"] == "report_maze.png"
    assert (out / "report_maze.png").stat().st_size > 10_000
    assert "![paths](report_maze.png)" in (out / "report.md").read_text()
    # Every evaluation of a maze keeps the paths of its first episodes for such pictures.
    assert report["episodes"] >= PATH_EPISODES


def test_compress_bad_inputs(tiny_teacher_run, tmp_path):
    assert_one_line_error(
        run_cli_in_process("compress", str(tmp_path / "nope"), "--out", str(tmp_path / "o1")), "does not exist"
    )
    (tmp_path / "plain").mkdir()
    assert_one_line_error(
        run_cli_in_process("compress", str(tmp_path / "plain"), "--out", str(tmp_path / "o2")), "not a run directory"
    )
    for depth in ("3", "-4"):
        assert_one_line_error(
            run_cli_in_process(
                "compress", str(tiny_teacher_run), "--student-depth", depth, "--out", str(tmp_path / "o3")
            ),
            "non-negative multiple of 4",
        )
    assert_one_line_error(
        run_cli_in_process("compress", str(tiny_teacher_run), "--env", "ant", "--out", str(tmp_path / "o4")), "mismatch"
    )
    assert_one_line_error(
        run_cli_in_process("compress", str(tiny_teacher_run), "--report-episodes", "0", "--out", str(tmp_path / "o7")),
        "--report-episodes",
    )
    assert not (tmp_path / "o7").exists()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_teacher_run, broken)
    for path in (broken / "checkpoints" / "best").rglob("*"):
        if path.is_file():
            path.write_bytes(b"junk")
    assert_one_line_error(
        run_cli_in_process("compress", str(broken), "--out", str(tmp_path / "o5"), "--no-progress"), "checkpoint"
    )
    # A too-wide student is warned about before anything runs (here the run then stops on a bad loss name).
    wide = run_cli_in_process(
        "compress",
        str(tiny_teacher_run),
        "--student-width",
        "1040",
        "--policy-loss",
        "l1",
        "--out",
        str(tmp_path / "o6"),
    )
    assert wide.returncode != 0 and "warning: student width 1040" in wide.stderr and "Traceback" not in wide.stderr
    assert not (tmp_path / "o6").exists()


def test_a_student_run_is_not_a_teacher(tiny_student_run, tmp_path):
    assert_one_line_error(
        run_cli_in_process("compress", str(tiny_student_run), "--out", str(tmp_path / "o")), "not a teacher run"
    )


# Kept for CI's slow set: the default suite must fit in 15 minutes on 2 cores.
@pytest.mark.slow
def test_interrupted_compress_resumes(tiny_teacher_run, tmp_path):
    """Kill after the first checkpoint; --resume finishes the remaining rounds."""
    from tests.conftest import cli_process, kill_after_first_checkpoint

    out = tmp_path / "student"
    # The session's tiny student's sizes (two rounds, a checkpoint after each), so that its compiled
    # programs are reused from the cache.
    flags = ["--student-depth", "4", *TINY_STUDENT_FLAGS, "--no-baseline"]
    kill_after_first_checkpoint([cli_process("compress", str(tiny_teacher_run), "--out", str(out), *flags)], out)
    # The report's from-scratch baseline is an existing run here (the teacher itself stands in for a
    # sweep's depth-4 run): it is evaluated as it is, not trained.
    resumed = run_cli(
        "compress",
        str(tiny_teacher_run),
        "--out",
        str(out),
        "--resume",
        "--no-progress",
        "--baseline-run",
        str(tiny_teacher_run),
        "--report-episodes",
        "4",
    )
    assert resumed.returncode == 0, resumed.stderr
    metrics = read_metrics(out)
    assert [m["epoch"] for m in metrics] == list(range(1, len(metrics) + 1))  # no epoch lost or repeated
    assert metrics[-1]["round"] == 2
    report = json.loads((out / "report.json").read_text())
    assert report["scratch"]["run"] == str(tiny_teacher_run) and report["scratch"]["given"]
    assert report["scratch"]["time_at_goal"] == report["teacher"]["time_at_goal"]
    assert not (out / "scratch_baseline").exists()
    teacher_steps = read_metrics(tiny_teacher_run)[-1]["env_steps"]
    assert report["budgets"]["teacher"]["env_steps"] == report["budgets"]["scratch"]["env_steps"] == teacher_steps
    assert report["budgets"]["student"]["env_steps"] == metrics[-1]["env_steps"]
    assert "given run" in (out / "report.md").read_text()


def test_baseline_run_must_be_a_teacher_of_the_same_env(
    tiny_teacher_run, tiny_student_run, tiny_maze_teacher_run, tmp_path
):
    out = tmp_path / "student"
    for baseline, message in (
        (tiny_student_run, "is a student run"),
        (tiny_maze_teacher_run, "trained on 'simple_u_maze'"),
        (tmp_path / "none", "does not exist"),
    ):
        assert_one_line_error(
            run_cli_in_process("compress", str(tiny_teacher_run), "--out", str(out), "--baseline-run", str(baseline)),
            message,
        )
    assert_one_line_error(
        run_cli_in_process(
            "compress",
            str(tiny_teacher_run),
            "--out",
            str(out),
            "--no-baseline",
            "--baseline-run",
            str(tiny_teacher_run),
        ),
        "cannot go with --no-baseline",
    )
    assert not out.exists()


def test_loss_is_the_weighted_sum_of_its_table_of_terms():
    import dataclasses

    key = jax.random.PRNGKey(3)
    k = jax.random.split(key, 8)
    student = losses.Outputs(
        jax.random.normal(k[0], (5, 2)),
        0.1 * jax.random.normal(k[1], (5, 2)),
        jax.random.normal(k[2], (5, 4)),
        jax.random.normal(k[3], (5, 4)),
        teacher_q=-jnp.abs(jax.random.normal(k[4], (5,))),
    )
    teacher = losses.Outputs(
        jax.random.normal(k[5], (5, 2)),
        jnp.zeros((5, 2)),
        jax.random.normal(k[6], (5, 4)),
        jax.random.normal(k[7], (5, 4)),
    )
    config = StudentConfig(
        policy_weight=0.5,
        representation_weight=2.0,
        relational_weight=3.0,
        critic_guidance_weight=0.25,
        temperature=0.7,
    )
    for _, field in losses.TERMS.values():
        assert hasattr(config, field)  # every term's weight is a config field
    mse = losses.policy_loss("mse", teacher.mean, teacher.log_std, student.mean, student.log_std)[0]
    regression = losses.representation_regression(student.phi, student.psi, teacher.phi, teacher.psi)
    relational = losses.relational_kl(student.phi, student.psi, teacher.phi, teacher.psi, 0.7)
    guidance = -jnp.mean(student.teacher_q)
    total, metrics = losses.total_loss(student, teacher, config)
    np.testing.assert_allclose(total, 0.5 * mse + 2.0 * regression + 3.0 * relational + 0.25 * guidance, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss/relational"], relational, rtol=1e-6)
    # A zero weight leaves its term out entirely (and its metrics with it).
    without, metrics = losses.total_loss(student, teacher, dataclasses.replace(config, relational_weight=0.0))
    np.testing.assert_allclose(without, total - 3.0 * relational, rtol=1e-5)
    assert "loss/relational" not in metrics and "repr/relational_kl" not in metrics


def test_student_config_from_the_library_matches_the_command_line(tiny_teacher_run):
    from students.config import student_config

    config = student_config(tiny_teacher_run, steps=7, iterations=3, dagger=False, student_width=16)
    assert (config.iterations, config.updates_per_iteration) == (3, 3)  # 7 steps over 3 rounds, rounded up
    assert (config.beta_start, config.beta_decay) == (1.0, 1.0)
    # None means "the default", as it does for every other option: DAgger.
    assert student_config(tiny_teacher_run, dagger=None).beta_decay == 0.5
    with pytest.raises(DistillError, match="environment mismatch"):
        student_config(tiny_teacher_run, env="ant")
    with pytest.warns(UserWarning, match="wider than is sensible"):
        student_config(tiny_teacher_run, student_width=2048)


def test_compress_resume_with_a_changed_config_is_refused(tiny_student_run, tiny_teacher_run, tmp_path):
    run = tmp_path / "student"
    shutil.copytree(tiny_student_run, run)
    before = {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    result = run_cli_in_process(
        "compress", str(tiny_teacher_run), "--out", str(run), "--resume", "--student-depth", "8", "--no-progress"
    )
    assert_one_line_error(result, "changed config", "--student-depth 8 (the run has 4)")
    assert before == {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
