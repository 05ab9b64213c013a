"""The GPU campaign, one stage per call (``launch.sh STAGE`` runs it on a lent GPU):

- ``depth``: does depth pay on ant_hardest_maze (``depth.py``): a probe sizes the call to its
  deadline, both depths advance together, and ``--out`` holds everything after every epoch. Called
  again with the same ``--work`` it continues.
- ``speed``: the teacher's speed (``speed.py``), the depth plan's inputs first.
- ``--home DIR``: the CPU half of the depth stage (``home.py``): distils, exports and draws from what
  a depth call brought back in DIR.

    python benchmarks/gpu/campaign.py --stage depth --out "$OUT" --work runs/gpu/depth --deadline-s 540
    python benchmarks/gpu/campaign.py --stage speed --out "$OUT" --deadline-s 540
    python benchmarks/gpu/campaign.py --home results/gpu/<device>/depth
    python benchmarks/gpu/campaign.py --stage depth --reduced --out /tmp/out --work /tmp/work --deadline-s 120
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu.common import STARTED, CampaignError  # noqa: E402,F401  (STARTED: the deadline's origin)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("depth", "speed"))
    parser.add_argument("--home", metavar="DIR", help="On the CPU: the home half of a depth stage's results in DIR.")
    parser.add_argument("--out", default=None, help="Where results go (on a lent GPU: $OUT).")
    parser.add_argument("--work", default=None, help="Where the depth stage trains its runs (default runs/gpu/depth).")
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="Seconds after this process started by which the stage has stopped and saved.",
    )
    parser.add_argument(
        "--target-steps",
        type=int,
        default=None,
        help="Env steps per run at which the depth stage's runs are finished (may grow between calls).",
    )
    parser.add_argument("--reduced", action="store_true", help="Toy sizes on a point-mass maze (a CPU check).")
    parser.add_argument("--speed-point", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CampaignError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a DistillError from the toolkit is bad input too
        from distill.errors import DistillError

        if isinstance(err, DistillError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise


def run(args) -> int:
    size = "reduced" if args.reduced else "full"
    if args.speed_point:
        from benchmarks.gpu import speed

        speed.speed_point_worker(args.speed_point, speed.PLANS[size])
        return 0
    if args.home:
        from benchmarks.gpu.home import take_home

        take_home(Path(args.home), reduced=args.reduced, out=Path(args.out) if args.out else None)
        return 0
    if args.stage is None:
        raise CampaignError("name a --stage (depth or speed) or --home DIR")
    if args.out is None:
        raise CampaignError("--out is required: the folder whose files come back (on a lent GPU, $OUT)")
    deadline = float("inf") if args.deadline_s is None else args.deadline_s
    if args.stage == "depth":
        from benchmarks.gpu.depth import PLANS, stage_depth

        if args.deadline_s is None:
            raise CampaignError("--deadline-s is required for the depth stage: it sizes the call to it")
        work = Path(args.work) if args.work else ROOT / "runs" / "gpu" / "depth"
        stage_depth(PLANS[size], Path(args.out), work, deadline, args.target_steps)
        return 0
    from benchmarks.gpu import speed

    speed.stage_speed(speed.PLANS[size], Path(args.out), deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
