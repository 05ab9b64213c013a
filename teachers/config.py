"""Teacher configuration: the paper's defaults, plus small presets for CPU-friendly environments."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from distill.data.sensors import canonical_sensors, sensor_model
from distill.envs import DEFAULT_ENV, get_spec
from distill.errors import DistillError
from distill.nn.memory import (
    FLOAT_BYTES,
    Network,
    auto_remat,
    available_bytes,
    check_fits,
    training_bytes,
)
from distill.nn.networks import check_block_unroll
from distill.store import runs


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """Everything that defines a teacher run. Defaults follow Wang et al. (2025) unless noted."""

    RETIRED_FIELDS = ("unrolled_blocks",)
    """Recorded by older runs and now dropped on load: blocks are always stacked, and a run saved
    with unrolled blocks is converted when its checkpoints are read."""
    RUNTIME_FIELDS = ("block_unroll",)
    """Settings that change how fast a run trains, not what it computes: a resume may change them."""

    env: str = "reacher"
    """Registered environment name (``distill envs`` lists them)."""
    critic_depth: int = 4
    """Dense layers inside the critic encoders' residual blocks; a positive multiple of 4."""
    actor_depth: int = 4
    """Dense layers inside the actor's residual blocks; a positive multiple of 4."""
    width: int = 256
    """Hidden width of every network."""
    repr_dim: int = 64
    """Dimension of phi(s, a) and psi(g)."""
    num_envs: int = 512
    """Environments stepped in parallel."""
    unroll_length: int = 62
    """Environment steps per slot collected in one training step."""
    batch_size: int = 512
    """Transitions per SGD step (the InfoNCE batch). The paper's code defaults to 256, but every
    command the paper publishes passes 512, and its batch-size study shows deeper networks need the
    larger batch most. CPU presets set their own."""
    updates_per_step: int = 0
    """SGD steps per training step; 0 picks about one update per 40 collected transitions."""
    total_steps: int = 100_000_000
    """Environment steps to train for: the paper's code's default; environments the paper gives
    another budget (``ant_hardest_maze`` 200M; ``ant_u5_maze`` and the humanoid's U and big mazes
    400M) and the CPU environments set theirs in their preset."""
    num_evals: int = 20
    """Epochs; an evaluation follows every epoch."""
    eval_episodes: int = 128
    """Deterministic episodes per evaluation."""
    replay_rows: int = 10_000
    """Time rows kept in the replay buffer (each row holds one step of every slot)."""
    prefill_rows: int = 1_000
    """Rows collected before the first update."""
    gamma: float = 0.99
    """Discount of the hindsight goal distribution."""
    learning_rate: float = 3e-4
    """Adam step size for actor, critic and alpha."""
    logsumexp_penalty: float = 0.1
    """Weight of the logsumexp^2 regulariser in the critic loss."""
    target_entropy_scale: float = 0.5
    """Target entropy is -scale * action_dim."""
    remat: bool | None = None
    """Rematerialise residual blocks in the backward pass (less memory, more compute); None decides by
    itself: on from depth 256, or wherever the network would not fit comfortably without it."""
    block_unroll: int | str = "auto"
    """Residual blocks applied per iteration of the loop over blocks: a positive integer, 'all' (no
    loop) or 'auto': 1 on a CPU, where compile time then stays flat with depth, and on a GPU the whole
    tower up to 16 blocks (depth 64) and 8 per iteration beyond, where the loop's per-iteration cost
    dominates a 256-wide layer. It changes speed and compile time, never the parameters: runs resume
    and load under any unroll."""
    backend: str = ""
    """Brax physics pipeline; empty takes the environment's own."""
    seed: int = 0
    keep_checkpoints: int = 3
    """How many recent checkpoints to keep (the best one is kept as well)."""
    sensors: str = ""
    """What the actor reads instead of the state (``distill.data.sensors``), in its canonical form; '' reads
    the full state. The critic always reads the true state: it is used only in training, so a run
    behind sensors is CRL with an asymmetric actor-critic, the from-scratch match of a student with
    the same sensors."""

    @property
    def prefill_steps(self) -> int:
        """Collection steps (``unroll_length`` rows each) that fill the replay before the first update."""
        return math.ceil(self.prefill_rows / self.unroll_length)

    def network_kwargs(self) -> dict:
        """What ``make_crl_networks`` builds this run's networks from (training and loading alike)."""
        model = sensor_model(self)
        return dict(
            actor_depth=self.actor_depth,
            critic_depth=self.critic_depth,
            width=self.width,
            repr_dim=self.repr_dim,
            remat=bool(self.remat),
            block_unroll=self.block_unroll,
            sensor_dim=model.sensor_dim if model else 0,
        )

    def resolved(self) -> "TeacherConfig":
        """Fills derived defaults so that the written config is fully explicit."""
        updates = self.updates_per_step or max(1, round(self.num_envs * self.unroll_length / 40))
        remat = self.remat
        if remat is None:
            remat = auto_remat(
                self.training_bytes(remat=False), max(self.critic_depth, self.actor_depth), available_bytes()
            )
        return dataclasses.replace(
            self,
            updates_per_step=updates,
            remat=remat,
            backend=self.backend or get_spec(self.env).backend,
            sensors=canonical_sensors(self.sensors, self.env),
        )

    def training_bytes(self, remat: bool | None = None) -> int:
        """Estimated peak memory of one update (see distill.nn.memory)."""
        spec = get_spec(self.env)
        model = sensor_model(self)
        sensor_dim = model.sensor_dim if model else 0
        networks = [
            Network((sensor_dim or spec.state_dim) + spec.goal_dim, 2 * spec.action_dim, self.actor_depth),
            # phi is also differentiated through for the actor's action; psi only in the critic loss
            Network(spec.state_dim + spec.action_dim, self.repr_dim, self.critic_depth, passes=2),
            Network(spec.goal_dim, self.repr_dim, self.critic_depth),
        ]
        replay = self.replay_rows * self.num_envs * (spec.state_dim + sensor_dim + spec.action_dim + 2) * FLOAT_BYTES
        return training_bytes(
            networks, self.width, self.batch_size, bool(self.remat if remat is None else remat), replay
        )

    def validate(self, num_devices: int = 1) -> "TeacherConfig":
        for name in ("critic_depth", "actor_depth"):
            depth = getattr(self, name)
            if depth <= 0 or depth % 4:
                raise DistillError(f"--{name.replace('_', '-')} must be a positive multiple of 4, got {depth}")
        for name in (
            "width",
            "repr_dim",
            "num_envs",
            "unroll_length",
            "batch_size",
            "total_steps",
            "num_evals",
            "eval_episodes",
            "replay_rows",
            "prefill_rows",
        ):
            if getattr(self, name) <= 0:
                raise DistillError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        check_block_unroll(self.block_unroll)
        if self.env:
            sensor_model(self)
        if self.updates_per_step < 0:
            raise DistillError(f"--updates-per-step must be non-negative, got {self.updates_per_step}")
        if not 0.0 < self.gamma < 1.0:
            raise DistillError(f"gamma must lie in (0, 1), got {self.gamma}")
        if self.learning_rate <= 0:
            raise DistillError(f"learning rate must be positive, got {self.learning_rate}")
        if self.num_envs % num_devices or self.batch_size % num_devices:
            raise DistillError(
                f"--num-envs ({self.num_envs}) and --batch-size ({self.batch_size}) must be divisible by "
                f"the {num_devices} devices the data is sharded over"
            )
        if self.prefill_rows > self.replay_rows:
            raise DistillError(f"prefill rows ({self.prefill_rows}) exceed the replay buffer's {self.replay_rows} rows")
        if self.unroll_length > self.replay_rows:
            raise DistillError(f"--unroll-length ({self.unroll_length}) exceeds the replay buffer's rows")
        prefill_rows = self.prefill_steps * self.unroll_length
        fillable = min(prefill_rows, self.replay_rows) * self.num_envs
        if self.batch_size > fillable:
            raise DistillError(
                f"--batch-size {self.batch_size} cannot be filled: the prefilled replay holds only "
                f"{fillable} transitions ({self.num_envs} envs x {prefill_rows} rows)"
            )
        check_fits(
            self.training_bytes(),
            available_bytes(),
            f"a critic of depth {self.critic_depth} and actor of depth {self.actor_depth} at width {self.width}",
        )
        return self


TOY_SETTINGS = dict(
    num_envs=4,
    unroll_length=10,
    batch_size=16,
    updates_per_step=2,
    total_steps=4 * 10 * 4,
    num_evals=1,
    eval_episodes=2,
    replay_rows=60,
    prefill_rows=20,
    width=32,
    repr_dim=8,
)
"""A teacher of toy size: trains and evaluates any environment, the 1000-step ones included, in
seconds on a CPU, to check a whole path (the test suite, the GPU stages' reduced runs). It learns nothing."""


def teacher_config(env: str = DEFAULT_ENV, **overrides) -> TeacherConfig:
    """The config for ``env``: its training preset, then the given overrides (None means "not given")."""
    values = dict(get_spec(env).preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("sensors"):
        values["sensors"] = canonical_sensors(values["sensors"], env)
    return TeacherConfig(env=env, **values)


def run_teacher_config(out: Path, resume: bool, env: str | None = None, **overrides) -> TeacherConfig:
    """The config a ``train-teacher`` call asks for: a new run's, or the recorded one with the given
    overrides on top (``train_teacher`` refuses to resume if they change it)."""
    if not resume:
        return teacher_config(env or DEFAULT_ENV, **overrides)
    recorded = runs.recorded_config(out, "teacher", TeacherConfig)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("sensors"):
        given["sensors"] = canonical_sensors(given["sensors"], env or recorded.env)
    return dataclasses.replace(recorded, env=env or recorded.env, **given)
