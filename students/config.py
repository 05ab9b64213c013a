"""Student (compression) configuration."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

from distill.data.sensors import canonical_sensors, sensor_model
from distill.envs import get_spec
from distill.errors import DistillError
from distill.nn.memory import (
    FLOAT_BYTES,
    Network,
    available_bytes,
    check_fits,
    training_bytes,
)
from distill.store import runs
from students.losses import TERMS

# Wider than this is no longer a shallow, fast student for a robot; allowed, but warned about.
DEPLOYABLE_WIDTH = 1024
# A student behind sensors must learn what the state held from a history of readings (a velocity from
# positions), which takes more than copying the teacher's input-output map: on reacher and
# simple_big_maze with velocities dropped and history 3, the default 6 rounds of 150 updates kept
# 0.68 and 0.79 of the teacher, and 12 rounds of 300 kept 0.97 and 1.03 (results/sensors).
SENSOR_ITERATIONS, SENSOR_UPDATES = 12, 300


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """How a teacher is distilled into a student. Defaults are chosen by the ablation in the README."""

    teacher_run: str = ""
    """The teacher's run directory."""
    env: str = ""
    """Filled from the teacher run."""
    student_depth: int = 4
    """Residual depth of every student network; 0 means input projection and heads only."""
    student_width: int = 0
    """Hidden width; 0 takes the teacher's width."""
    repr_dim: int = 0
    """Filled from the teacher (the student's phi, psi live in the teacher's space)."""
    iterations: int = 6
    """DAgger rounds: collect with the mixed policy, aggregate, train."""
    num_envs: int = 64
    """Environments stepped in parallel while collecting."""
    unroll_length: int = 50
    """Steps per environment per DAgger round."""
    updates_per_iteration: int = 150
    """SGD steps per round, on batches drawn from all data aggregated so far."""
    batch_size: int = 256
    dataset_rows: int = 0
    """Time rows the aggregated dataset keeps; 0 keeps every round."""
    beta_start: float = 1.0
    """Probability that the teacher's action is executed in the first round."""
    beta_decay: float = 0.5
    """beta is multiplied by this every round; 1.0 with beta_start 1.0 is plain cloning on teacher rollouts."""
    env_goal_fraction: float = 0.5
    """Share of each batch that uses the episode's goal; the rest use hindsight future states."""
    policy_loss: str = "mse"
    """'kl' (closed form between the pre-tanh Gaussians), 'mse' (deterministic actions) or 'both'."""
    policy_weight: float = 1.0
    """Weight of the policy term (``policy_loss``)."""
    representation_weight: float = 1.0
    """Weight of the direct phi/psi regression (0 disables representation distillation)."""
    relational_weight: float = 1.0
    """Weight of the KL between teacher and student softmax over a batch of goals."""
    temperature: float = 1.0
    """tau of the relational softmax."""
    critic_guidance_weight: float = 0.0
    """Weight of -Q_teacher(s, pi_student(s, g), g) in the actor loss (0 disables)."""
    learning_rate: float = 1e-3
    """Adam step size; supervised targets tolerate a larger step than RL."""
    gamma: float = 0.99
    eval_episodes: int = 128
    num_evals: int = 2
    """Evaluations (and checkpoints) spread over the rounds."""
    seed: int = 0
    keep_checkpoints: int = 3
    backend: str = ""
    """Filled from the teacher: the physics pipeline it was trained with."""
    sensors: str = ""
    """The student's sensor model (``distill.data.sensors``), in its canonical form; '' reads the full state."""

    def resolved(self, teacher_width: int, repr_dim: int, env: str, backend: str) -> "StudentConfig":
        rows = self.dataset_rows or self.iterations * self.unroll_length
        return dataclasses.replace(
            self,
            student_width=self.student_width or teacher_width,
            repr_dim=repr_dim,
            env=env,
            backend=backend,
            dataset_rows=rows,
            num_evals=min(self.num_evals, self.iterations),
        )

    def network_kwargs(self) -> dict:
        """What ``make_crl_networks`` builds the student's networks from (training and loading alike)."""
        model = sensor_model(self)
        return dict(
            actor_depth=self.student_depth,
            critic_depth=self.student_depth,
            width=self.student_width,
            repr_dim=self.repr_dim,
            sensor_dim=model.sensor_dim if model else 0,
        )

    def validate(self, num_devices: int = 1) -> "StudentConfig":
        if self.student_depth < 0 or self.student_depth % 4:
            raise DistillError(f"--student-depth must be a non-negative multiple of 4, got {self.student_depth}")
        for name in ("iterations", "num_envs", "unroll_length", "updates_per_iteration", "batch_size", "eval_episodes"):
            if getattr(self, name) <= 0:
                raise DistillError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.student_width < 0:
            raise DistillError(f"--student-width must be positive, got {self.student_width}")
        if self.policy_loss not in ("kl", "mse", "both"):
            raise DistillError(f"--policy-loss must be 'kl', 'mse' or 'both', got '{self.policy_loss}'")
        if not 0.0 <= self.beta_start <= 1.0 or not 0.0 <= self.beta_decay <= 1.0:
            raise DistillError("beta start and decay must lie in [0, 1]")
        if not 0.0 <= self.env_goal_fraction <= 1.0:
            raise DistillError("env goal fraction must lie in [0, 1]")
        if self.temperature <= 0:
            raise DistillError(f"--temperature must be positive, got {self.temperature}")
        if min(getattr(self, field) for _, field in TERMS.values()) < 0:
            raise DistillError("loss weights must be non-negative")
        if self.num_envs % num_devices or self.batch_size % num_devices:
            raise DistillError(f"--num-envs and --batch-size must be divisible by the {num_devices} devices")
        if self.env:
            sensor_model(self)
            check_fits(
                self.training_bytes(),
                available_bytes(),
                f"a student of depth {self.student_depth} at width {self.student_width}",
            )
        return self

    def training_bytes(self) -> int:
        """Estimated peak memory of one distillation update (see distill.nn.memory); the teacher's
        forward passes keep no activations and are small beside its training."""
        spec = get_spec(self.env)
        width = self.student_width or 1
        model = sensor_model(self)
        sensor_dim = model.sensor_dim if model else 0
        networks = [
            Network((sensor_dim or spec.state_dim) + spec.goal_dim, 2 * spec.action_dim, self.student_depth),
            Network(spec.state_dim + spec.action_dim, self.repr_dim, self.student_depth),
            Network(spec.goal_dim, self.repr_dim, self.student_depth),
        ]
        dataset = (
            (self.dataset_rows or self.iterations * self.unroll_length)
            * self.num_envs
            * (spec.obs_dim + sensor_dim + spec.action_dim + 2)
        )
        return training_bytes(networks, width, self.batch_size, False, dataset * FLOAT_BYTES)


def check_teacher_reads_state(teacher_run: Path, sensors: str) -> None:
    """A teacher labels every state the student visits with its action from that state alone; one
    trained behind sensors acts from a history of readings, which a label at one state cannot hold."""
    if sensors:
        raise DistillError(
            f"the teacher in {teacher_run} was trained behind sensors; a teacher labels from the true "
            "state: distil a teacher trained without --sensors"
        )


def student_config(
    teacher_run: Path,
    *,
    env: str | None = None,
    steps: int | None = None,
    dagger: bool | None = True,
    **fields,
) -> StudentConfig:
    """A checked config for distilling the teacher in ``teacher_run``; None means "the default".

    ``steps`` spreads that many SGD steps over the DAgger rounds; ``dagger=False`` executes only the
    teacher's actions (plain cloning on teacher rollouts); ``env``, if given, must be the teacher's.
    A student with ``sensors`` gets ``SENSOR_ITERATIONS`` rounds of ``SENSOR_UPDATES`` updates unless
    the rounds, updates or steps are given.
    """
    record = runs.read_config(teacher_run, kind="teacher")
    check_teacher_reads_state(teacher_run, record["config"].get("sensors", ""))
    teacher_env = record["config"]["env"]
    if env is not None and env != teacher_env:
        raise DistillError(
            f"environment mismatch: the teacher in {teacher_run} was trained on '{teacher_env}', not '{env}'"
        )
    if steps is not None and steps <= 0:
        raise DistillError(f"--steps must be positive, got {steps}")
    if fields.get("student_width") is not None and fields["student_width"] <= 0:
        raise DistillError(f"--student-width must be positive, got {fields['student_width']}")
    if fields.get("sensors"):
        # Recorded in canonical form, so that a spec string and the TOML file it came from are one config.
        fields["sensors"] = canonical_sensors(fields["sensors"], teacher_env)
    if fields.get("sensors") and steps is None:
        fields.setdefault("iterations", None)
        fields.setdefault("updates_per_iteration", None)
        if fields["iterations"] is None and fields["updates_per_iteration"] is None:
            fields.update(iterations=SENSOR_ITERATIONS, updates_per_iteration=SENSOR_UPDATES)
    config = StudentConfig(teacher_run=str(teacher_run), **{k: v for k, v in fields.items() if v is not None})
    # None is "the default" like every other option here: DAgger. Only an explicit False clones.
    if dagger is False:
        config = dataclasses.replace(config, beta_start=1.0, beta_decay=1.0)
    if steps is not None:
        rounds = min(config.iterations, steps)
        config = dataclasses.replace(config, iterations=rounds, updates_per_iteration=math.ceil(steps / rounds))
    if config.student_width > DEPLOYABLE_WIDTH:
        warnings.warn(
            f"student width {config.student_width} is wider than is sensible for deployment (> {DEPLOYABLE_WIDTH})",
            stacklevel=2,
        )
    teacher = record["config"]
    return config.resolved(
        teacher["width"], teacher["repr_dim"], teacher_env, teacher.get("backend") or get_spec(teacher_env).backend
    ).validate()


def run_student_config(out: Path, resume: bool, teacher_run: Path, **options) -> StudentConfig:
    """The config a ``compress`` call asks for: a new run's, or the recorded one with the given options
    on top (``compress`` refuses to resume if they change it)."""
    if not resume:
        return student_config(teacher_run, **options)
    recorded = runs.recorded_config(out, "student", StudentConfig)
    if options.pop("env", None) not in (None, recorded.env):
        raise DistillError(f"environment mismatch: {out} distils a teacher of '{recorded.env}'")
    if options.pop("steps", None) is not None:
        raise DistillError("--steps cannot change when resuming; the run keeps its recorded rounds and updates")
    if options.get("sensors"):
        options["sensors"] = canonical_sensors(options["sensors"], recorded.env)
    if options.pop("dagger", True) is False and recorded.beta_decay != 1.0:
        raise DistillError(f"cannot resume {out} with --no-dagger: it was started with DAgger")
    return dataclasses.replace(recorded, **{k: v for k, v in options.items() if v is not None})
