"""``distill doctor``: what this installation runs on, and where it strays from the tested lock.

The lock is ``constraints.txt`` at the project's root (``make install`` installs with it; ``make
lock`` refreshes it). A run that behaves differently on another machine usually runs other versions:
the doctor names them before anyone compares figures.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path

from distill.errors import DistillError
from distill.store.runs import PACKAGES

DEFAULT_LOCK = Path(__file__).resolve().parents[2] / "constraints.txt"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by normalised name."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise DistillError(f"cannot read the lock {path}: {err.strerror or err}") from None
    pins = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if not match:
            raise DistillError(f"{path}:{number} is not a 'name==version' line: {line!r}")
        pins[_normal(match.group(1))] = match.group(2)
    return pins


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def diagnose(lock: Path | None = None) -> dict:
    """Python, the key packages (installed and locked), JAX's devices, the compile cache, and every
    locked package whose installed version differs from the lock."""
    import jax

    lock_path = Path(lock) if lock else DEFAULT_LOCK
    pins = read_lock(lock_path) if lock or lock_path.is_file() else None
    packages = [
        {"name": name, "installed": installed(name), "locked": (pins or {}).get(_normal(name))} for name in PACKAGES
    ]
    differences = []
    if pins is not None:
        for name, version in sorted(pins.items()):
            have = installed(name)
            if have != version:
                differences.append({"name": name, "installed": have, "locked": version})
    cache = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return {
        "python": platform.python_version(),
        "packages": packages,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "compile_cache": cache or None,
        "lock": str(lock_path) if pins is not None else None,
        "differences": differences,
    }


def report_lines(report: dict) -> list[str]:
    lines = [f"python {report['python']}"]
    for p in report["packages"]:
        pin = "" if p["locked"] is None or p["locked"] == p["installed"] else f" (lock: {p['locked']})"
        lines.append(f"{p['name']} {p['installed'] or 'not installed'}{pin}")
    lines.append(f"devices: {', '.join(report['devices'])} ({report['backend']})")
    lines.append(f"compile cache: {report['compile_cache'] or 'off (set JAX_COMPILATION_CACHE_DIR)'}")
    if report["lock"] is None:
        lines.append("lock: none found (constraints.txt lies beside pyproject.toml in a checkout)")
    elif not report["differences"]:
        lines.append(f"lock: every package matches {report['lock']}")
    for d in report["differences"]:
        lines.append(
            f"warning: {d['name']} {d['installed'] or 'not installed'} is installed, the lock has "
            f"{d['locked']} (make install brings the locked versions)"
        )
    return lines
