"""Joining a multi-process run through ``jax.distributed``, with bad settings refused in one line.

Every process of a run calls ``initialize`` with the same coordinator and process count and its own
id; afterwards ``jax.devices()`` spans all processes, the data mesh covers every device, each process
steps its own environment slots and replay columns, and parameters are replicated.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

from distill.errors import DistillError

# How long a process waits for the others (or for the coordinator) before giving up.
DEFAULT_TIMEOUT_S = 120


def parse_coordinator(address: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", address.strip())
    if not match or not 0 < int(match.group(2)) < 65536:
        raise DistillError(f"--coordinator must be HOST:PORT (for example 10.0.0.1:1234), got '{address}'")
    return match.group(1), int(match.group(2))


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    detect: bool = False,
    timeout_s: int = DEFAULT_TIMEOUT_S,
) -> bool:
    """Joins the run's processes. Returns False (and does nothing) for a single-process run.

    ``detect`` leaves every setting to JAX's cluster detection (SLURM, Open MPI, cloud TPU); otherwise
    the coordinator, the process count and this process's id must all be given.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not detect and not any(given):
        return False
    if timeout_s <= 0:
        raise DistillError(f"--coordinator-timeout must be positive, got {timeout_s}")
    if not detect and not all(given):
        raise DistillError(
            "a multi-process run needs --coordinator, --num-processes and --process-id together "
            "(or --distributed to let JAX detect the cluster)"
        )
    if not detect:
        parse_coordinator(coordinator)
        if num_processes < 1:
            raise DistillError(f"--num-processes must be at least 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise DistillError(
                f"--process-id must lie in [0, {num_processes - 1}] for {num_processes} processes, got {process_id}"
            )
    # The C++ runtime logs connection failures line by line; our own message says what went wrong.
    # It reads this when it is loaded, so before JAX is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jax

    try:
        with _native_log_held_back(), _errors_reported_in_one_line():
            jax.distributed.initialize(
                coordinator_address=coordinator,
                num_processes=num_processes,
                process_id=process_id,
                initialization_timeout=timeout_s,
                heartbeat_timeout_seconds=timeout_s,
                shutdown_timeout_seconds=timeout_s,
            )
    except Exception as err:  # jaxlib raises XlaRuntimeError, ValueError or RuntimeError here
        _abandon_runtime()
        where = f"coordinator {coordinator}" if coordinator else "the detected cluster"
        detail = (
            str(err).strip().splitlines()[0][:200]
            if isinstance(err, (ValueError, TypeError))
            else (
                "not every process connected"
                + (f" (this is process {process_id} of {num_processes})" if num_processes else "")
            )
        )
        raise DistillError(f"could not join the run through {where} within {timeout_s} s: {detail}") from None
    if num_processes is not None and jax.process_count() != num_processes:
        _abandon_runtime()
        raise DistillError(
            f"the run has {jax.process_count()} processes, not the {num_processes} given by --num-processes"
        )
    return True


_joined = False


@contextlib.contextmanager
def _native_log_held_back():
    """Holds back what the C++ runtime writes to stderr while joining.

    Its coordination service logs races between processes (two claiming one id, a barrier retried)
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says. A join that succeeds gets those lines back; one that fails
    is told in our single line instead, and the runtime's threads, which live on until the process
    ends, keep writing to nowhere while Python's own stderr goes on to the terminal.
    """
    import tempfile

    sys.stderr.flush()
    terminal = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            sys.stderr = os.fdopen(terminal, "w", buffering=1)
            raise
        os.dup2(terminal, 2)
        os.close(terminal)
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))
        sys.stderr.flush()


def _on_runtime_error(status) -> None:
    """The distributed runtime's error callback (it runs on one of the runtime's threads).

    Without one, the runtime aborts the process with a C++ stack trace, both when joining fails and
    when another process of the run dies later. While joining, the failure comes back to Python as
    an exception; afterwards the run cannot go on (its collectives would wait forever), so this
    process stops at once with one line.
    """
    if _joined:
        first = (str(status).strip().splitlines() or ["unknown error"])[0][:300]
        print(
            f"error: the multi-process run failed (another process stopped or cannot be reached): {first}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)


_abandoned = []


def _abandon_runtime() -> None:
    """Forgets a runtime that failed to join, so that exiting does not shut it down (which waits and
    logs) nor destroy it; the process is about to end anyway."""
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    _abandoned.append((state.client, state.service, state.preemption_sync_manager))
    state.client = state.service = state.preemption_sync_manager = None


@contextlib.contextmanager
def _errors_reported_in_one_line():
    """Hands the runtime client our error callback while ``jax.distributed.initialize`` creates it."""
    global _joined
    from jax._src import distributed as jax_distributed

    runtime = jax_distributed._jax
    make_client = runtime.get_distributed_runtime_client

    def client_with_callback(*args, **kwargs):
        kwargs.setdefault("missed_heartbeat_callback", _on_runtime_error)
        return make_client(*args, **kwargs)

    runtime.get_distributed_runtime_client = client_with_callback
    try:
        yield
        _joined = True
    finally:
        runtime.get_distributed_runtime_client = make_client


__all__ = ["DEFAULT_TIMEOUT_S", "initialize", "parse_coordinator"]
