"""What the GPU stages share: the card's name, results that stay with their card, atomic JSON, tars."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTED = time.monotonic()
"""When this process started: every stage's deadline counts from here."""


class CampaignError(Exception):
    """Bad input to a GPU stage: one line on stderr, exit status 2, nothing lost."""


def device_name() -> str:
    import jax

    device = jax.devices()[0]
    return getattr(device, "device_kind", device.platform).replace(" ", "_")


def seconds_left(deadline_s: float) -> float:
    """Seconds until ``deadline_s`` after this process started."""
    return deadline_s - (time.monotonic() - STARTED)


def stamp(phase: str, text: str) -> None:
    """A progress line with the wall time and the seconds since the process started."""
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - STARTED:6.1f}s] {phase}: {text}", flush=True)


def write_json(path: Path, value) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CampaignError(f"{path} is missing ({what})") from None
    except (OSError, json.JSONDecodeError) as err:
        raise CampaignError(f"{path} is unreadable ({what}): {err}") from None


def write_tar(path: Path, members: dict[str, Path], exclude: tuple[str, ...] = ()) -> Path:
    """``path`` (a .tar, written through a temporary file) holding each ``members`` file or folder
    under its name, less the folders named in ``exclude``."""
    tmp = path.with_name(path.name + ".tmp")

    def keep(info: tarfile.TarInfo):
        return None if Path(info.name).name in exclude else info

    with tarfile.open(tmp, "w") as tar:
        for name, source in members.items():
            if Path(source).exists():
                tar.add(source, arcname=name, filter=keep)
    os.replace(tmp, path)
    return path


def check_writable(folder: Path, what: str) -> Path:
    """``runs.writable_dir``, its refusal as a CampaignError."""
    from distill.errors import DistillError
    from distill.store.runs import writable_dir

    try:
        return writable_dir(folder, what)
    except DistillError as err:
        raise CampaignError(str(err)) from None


def strip_machine_paths(folder: Path, *places: Path) -> None:
    """Files that travel into the repository lose this machine's folders: each of ``places`` becomes
    ``<name>`` of its last component (text files only)."""
    swaps = [(str(Path(p).absolute()), f"<{Path(p).name}>") for p in places]
    for path in Path(folder).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".txt", ".jsonl") and path.stat().st_size < 1 << 22:
            text = path.read_text(errors="replace")
            new = text
            for old, mark in swaps:
                new = new.replace(old, mark)
            if new != text:
                path.write_text(new)
