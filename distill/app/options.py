"""Flags several commands share, each defined once: ``sweep`` takes ``train-teacher``'s teacher
settings and ``frontier`` takes ``compress``'s distillation settings from here, so their names,
defaults and help cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# --- a teacher's settings (train-teacher, sweep) ----------------------------------------------------
Width = Annotated[Optional[int], typer.Option(help="Hidden width (default 256).")]
ReprDim = Annotated[Optional[int], typer.Option(help="Dimension of phi and psi (default 64).")]
TeacherNumEnvs = Annotated[Optional[int], typer.Option("--num-envs", help="Parallel environments.")]
TeacherBatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="InfoNCE batch size.")]
TotalSteps = Annotated[Optional[int], typer.Option(help="Environment steps per run (default: the environment's).")]
TeacherUnrollLength = Annotated[
    Optional[int], typer.Option("--unroll-length", help="Steps per environment per training step.")
]
UpdatesPerStep = Annotated[Optional[int], typer.Option(help="SGD steps per training step (update-to-data ratio).")]
NumEvals = Annotated[Optional[int], typer.Option(help="Epochs per run, each followed by an evaluation.")]
TeacherEvalEpisodes = Annotated[
    Optional[int], typer.Option("--eval-episodes", help="Deterministic episodes per evaluation.")
]
ReplayRows = Annotated[Optional[int], typer.Option(help="Replay buffer time rows.")]
PrefillRows = Annotated[Optional[int], typer.Option(help="Rows collected before the first update.")]
Remat = Annotated[
    Optional[bool],
    typer.Option(
        "--remat/--no-remat",
        help="Force rematerialisation of residual blocks on or off (default: on from depth 256 or where memory needs it).",
    ),
]
BlockUnroll = Annotated[
    Optional[str],
    typer.Option(
        "--block-unroll",
        help="Residual blocks per iteration of the loop over blocks: K, 'all' (no loop) or 'auto' (default: 1 on a CPU, "
        "the whole tower up to depth 64 on a GPU). Speed only; checkpoints do not depend on it.",
    ),
]

# --- a student's distillation settings (compress, frontier) -----------------------------------------
Steps = Annotated[
    Optional[int],
    typer.Option(
        "--steps",
        "--budget",
        help="Distillation SGD steps per student, spread over the rounds (default 900; 3,600 with --sensors).",
    ),
]
Iterations = Annotated[Optional[int], typer.Option(help="DAgger rounds (default 6; 12 with --sensors).")]
StudentNumEnvs = Annotated[
    Optional[int], typer.Option("--num-envs", help="Environments stepped while collecting (default 64).")
]
StudentUnrollLength = Annotated[
    Optional[int], typer.Option("--unroll-length", help="Steps per environment per round (default 50).")
]
StudentBatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Distillation batch size (default 256).")]
StudentEvalEpisodes = Annotated[
    Optional[int],
    typer.Option("--eval-episodes", help="Episodes of the student's own evaluations during training (default 128)."),
]
StudentSeed = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0).")]

# --- every training command ------------------------------------------------------------------------
CheckpointMinutes = Annotated[float, typer.Option(help="Also checkpoint at least this often inside long epochs.")]
Progress = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress (a bar on a terminal, lines in a log).")
]
Which = Annotated[str, typer.Option("--checkpoint", help="'best' or 'last' checkpoint of a run.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TeacherRun = Annotated[Path, typer.Argument(help="The teacher's run directory.")]


__all__ = [name for name in dir() if name[0].isupper()]
