"""Multi-process start-up on JAX's distributed runtime (TPU pods, multi-node GPU, localhost CPU).

Every process runs the same program and calls ``initialize`` before anything touches a
device. With a coordinator address, process 0 serves the coordination service there and
the others connect to it; with none (``auto``), JAX discovers the cluster itself (Cloud
TPU pod slices, SLURM, Open MPI). On CPU the cross-process collectives run over gloo.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from orbax.checkpoint import multihost

from jaxgan.config import Config, to_dict
from jaxgan.errors import JaxganError

# A process that hears nothing from another for this long takes it for dead (``--heartbeat-timeout``).
DEFAULT_HEARTBEAT_TIMEOUT_S = 60


class DistributedError(JaxganError, RuntimeError):
    """The distributed runtime could not start; one-line message naming the address."""


class DisagreementError(DistributedError):
    """The processes of one run resolved different configs or made different decisions.

    Raised on every process at the same point (the processes compare notes first), so they
    all stop together and shut the runtime down cleanly."""


class ProcessLostError(DistributedError):
    """A collective failed because another process of the run died or stopped answering."""


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); IPv6 hosts in brackets (``[::1]:1234``)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--coordinator {address!r} is not HOST:PORT (for example 10.0.0.1:1234)")
    return host.strip("[]"), int(port)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Returns once a TCP connection to ``address`` succeeds; raises ``DistributedError`` after
    ``timeout_s``. (JAX's own client aborts the whole process on a timeout, with no message
    a user can act on, so the reachability check happens here first.)"""
    host, port = parse_address(address)
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(timeout_s, 0.1))):
                return
        except OSError as e:
            last = e.strerror or type(e).__name__
        if time.monotonic() >= deadline:
            raise DistributedError(f"cannot reach the coordinator at {address} within {timeout_s:g} s ({last}); "
                                   "is process 0 running and is the address reachable from this host?")
        time.sleep(0.25)


def _check_can_listen(address: str) -> None:
    _, port = parse_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as e:
            raise DistributedError(f"process 0 cannot serve the coordinator on port {port} of {address} "
                                   f"({e.strerror}); pick a free port") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               auto: bool = False, timeout_s: int = 300,
               heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S) -> bool:
    """Starts JAX's distributed runtime; returns whether it was started.

    ``coordinator``/``num_processes``/``process_id`` go together (explicit cluster);
    ``auto`` lets JAX detect the cluster (Cloud TPU, SLURM). Neither: a single process,
    nothing to do. Raises ``DistributedError`` on inconsistent flags or an unreachable
    coordinator, within about ``timeout_s`` seconds. A process that sends no heartbeat for
    ``heartbeat_timeout_s`` seconds is declared dead by the coordination service, which then
    stops the others (docs/multihost.md, "When a process dies").
    """
    if heartbeat_timeout_s < 1:
        raise DistributedError(f"--heartbeat-timeout must be at least 1 second, got {heartbeat_timeout_s}")
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise DistributedError("--coordinator, --num-processes and --process-id go together; give all three")
    if not auto and coordinator is None:
        return False
    if coordinator is not None:
        parse_address(coordinator)
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise DistributedError(f"--process-id {process_id} must be in [0, {num_processes}) "
                                   f"for --num-processes {num_processes}")
    # Cross-process collectives of the CPU backend; accelerators use their own (ICI, NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is None:
        try:
            jax.distributed.initialize(initialization_timeout=timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s)
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"could not detect the cluster: {str(e).splitlines()[0][:200]}") from None
        _connect_collectives(timeout_s)
        return True
    if process_id == 0:
        _check_can_listen(coordinator)
    else:
        wait_for_coordinator(coordinator, timeout_s)
    try:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s)
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"could not join the run at {coordinator}: {str(e).splitlines()[0][:200]}") from None
    _connect_collectives(timeout_s)
    return True


def _connect_collectives(timeout_s: int) -> None:
    """Sets up the cross-process collectives while every process is at the same point.

    Gloo (the CPU collectives) opens one context per group of devices, at the first
    collective over that group, and gives each process 30 s to arrive; jax 0.10 does not
    expose that timeout. Left to the training loop, the first collective over every device
    comes after loading the text encoder, building the data and compiling the step, which on
    a loaded machine can put one process more than 30 s behind the other. Here they first
    meet on the coordination service (``timeout_s``), then sum one number per device over
    every device: that opens the context of the whole run's devices, which the step, the
    evaluation and the sharded checkpoints reuse. ``multihost_utils``' collectives (the notes
    between processes) take one device per process, a different group, connected last.
    """
    multihost.get_barrier_sync_fn()(key="jaxgan_collectives", timeout_ms=timeout_s * 1000)
    mesh = Mesh(np.asarray(jax.devices()), ("all",))
    ones = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("all")),
                                                  np.ones(jax.local_device_count(), np.float32))
    jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(ones).block_until_ready()
    multihost_utils.sync_global_devices("jaxgan: collectives connected")


def is_primary() -> bool:
    """Process 0 writes logs, samples and plots; every process takes part in the rest."""
    return jax.process_index() == 0


# Exchanging small notes between processes. Collectives move fixed-shape arrays, so a note
# travels as JSON bytes: its length first, then the bytes padded to the longest.

def broadcast_json(value: Any) -> Any:
    """Process 0's ``value`` (anything JSON can hold), on every process."""
    if jax.process_count() == 1:
        return value
    data = json.dumps(value, sort_keys=True).encode()
    size = int(multihost_utils.broadcast_one_to_all(np.int64(len(data))))
    padded = np.frombuffer(data.ljust(size, b" ")[:size], np.uint8)
    return json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(padded), np.uint8)).decode())


def gather_json(value: Any) -> list[Any]:
    """Every process's ``value`` (anything JSON can hold), in process order, on every process."""
    if jax.process_count() == 1:
        return [value]
    data = json.dumps(value, sort_keys=True).encode()
    size = int(np.max(multihost_utils.process_allgather(np.int64(len(data)))))
    rows = np.asarray(multihost_utils.process_allgather(np.frombuffer(data.ljust(size, b" "), np.uint8)))
    return [json.loads(bytes(row.astype(np.uint8)).decode()) for row in rows.reshape(-1, size)]


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def flat_config(config: Config) -> dict[str, Any]:
    """``{"train.g_lr": 0.0002, ...}``: the config's keys and values as JSON carries them."""
    return json.loads(json.dumps(_flat(to_dict(config))))


def differing_keys(reference: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """``{key: my value}`` for the flat config keys where ``mine`` differs from ``reference``
    (a key only one side has counts, with ``None`` for a missing value)."""
    # Compared as JSON text: a NaN equals itself there, and a tuple its list.
    return {k: mine.get(k) for k in sorted(set(reference) | set(mine))
            if json.dumps(reference.get(k)) != json.dumps(mine.get(k))}


def _describe(reference: dict[str, Any], differences: list[dict[str, Any]], limit: int = 4) -> str:
    parts = []
    for process, diff in enumerate(differences):
        for key, value in diff.items():
            parts.append(f"{key} ({json.dumps(reference.get(key))} on process 0, {json.dumps(value)} on process "
                         f"{process})")
    shown = ", ".join(p if len(p) < 160 else p[:157] + "...)" for p in parts[:limit])
    return shown + (f" and {len(parts) - limit} more" if len(parts) > limit else "")


def check_same_config(config: Config, exchange: tuple[Callable, Callable] = (broadcast_json, gather_json)) -> None:
    """Stops every process with ``DisagreementError`` unless all resolved the same config.

    Process 0 broadcasts its resolved config (a few KB of JSON); each process compares it
    with its own key by key and the processes gather the keys that differ, so every process
    raises the same one-line error naming them. Called by every process at the start of a
    run, before any collective whose path depends on the config. ``exchange`` (broadcast,
    gather) is for tests.
    """
    broadcast, gather = exchange
    mine = flat_config(config)
    reference = broadcast(mine)
    differences = gather(differing_keys(reference, mine))
    if any(differences):
        raise DisagreementError(
            f"the processes resolved different configs: {_describe(reference, differences)}; every process must "
            "run the same command on the same workdir (a resumed run reads WORKDIR/config.json, which every "
            "process must see)")


# When a process dies, the others learn it at their next collective (gloo: at once, from the
# closed connection) or from the coordination service's heartbeat check (``heartbeat_timeout_s``).
# Either way the runtime cannot be shut down cleanly any more: JAX's exit handler waits at a
# shutdown barrier for every process (up to 5 minutes), then aborts with a C++ stack trace. The
# same happens when one process stops on an error of its own (process 0 finds the workdir
# locked) while the others wait for it in a collective. So a process that ends a run with an
# error first meets the others at a short barrier of its own: if all of them come (they all
# raised the same error), JAX's clean shutdown follows; if not, the process leaves without it.
_EXIT_MEETING_S = 10
_exit = {"code": None, "meet": False}
_Fn = TypeVar("_Fn", bound=Callable[..., Any])
# Phrases of the runtime errors that a dead or unreachable peer causes (gloo's socket errors
# and timeouts, NCCL's, the coordination service's).
_PEER_FAILURES = ("gloo", "nccl", "connection reset", "connection closed", "broken pipe", "heartbeat",
                  "unavailable", "deadline_exceeded", "timed out", "socket closed")


def _leave() -> None:
    if _exit["code"] is None:
        return
    if _exit["meet"]:
        try:
            multihost.get_barrier_sync_fn()(key="jaxgan_exit", timeout_ms=_EXIT_MEETING_S * 1000)
            return  # every process is leaving: JAX's shutdown will not wait in vain
        except Exception:  # noqa: BLE001 - any failure to meet means leaving alone
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit["code"])


def _leave_after_error(code: int, meet: bool) -> None:
    if jax.process_count() == 1:
        return
    if _exit["code"] is None:
        # Registered after JAX's own exit handler, so it runs before it (atexit is last in, first out).
        atexit.register(_leave)
    _exit.update(code=code, meet=meet)


def _status(error: BaseException) -> int:
    """The exit status the command line gives ``error``."""
    if isinstance(error, JaxganError | OSError):
        return 2
    return 130 if isinstance(error, KeyboardInterrupt) else 1


def stops_when_a_process_is_lost(fn: _Fn) -> _Fn:
    """Makes ``fn`` (a whole run) end within a bounded time on an error in a multi-process run.

    A collective's failure becomes ``ProcessLostError``, whose message carries the first line
    of the runtime's error (for gloo, e.g. "Connection reset by peer"); the process then exits
    as soon as its caller returns, without JAX's shutdown, which would wait for the lost
    process. After any other error the process waits up to 10 s at exit for the others and
    leaves alone if they do not come.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except jax.errors.JaxRuntimeError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if jax.process_count() == 1 or not any(p in first.lower() for p in _PEER_FAILURES):
                _leave_after_error(1, meet=True)
                raise
            _leave_after_error(2, meet=False)
            raise ProcessLostError(
                f"process {jax.process_index()} lost contact with another process of the run, which probably "
                f"died or hung (see its log): {first[:240]}; this process stops too. Start every process again "
                "to resume from the last checkpoint") from None
        except BaseException as e:
            _leave_after_error(_status(e), meet=True)
            raise
    return wrapper  # type: ignore[return-value]
