"""Multi-process start-up on JAX's distributed runtime (TPU pods, multi-node GPU, localhost CPU).

Every process runs the same program and calls ``initialize`` before anything touches a
device. With a coordinator address, process 0 serves the coordination service there and
the others connect to it; with none (``auto``), JAX discovers the cluster itself (Cloud
TPU pod slices, SLURM, Open MPI). On CPU the cross-process collectives run over gloo.
"""

from __future__ import annotations

import socket
import time

import jax

from jaxgan.errors import JaxganError


class DistributedError(JaxganError, RuntimeError):
    """The distributed runtime could not start; one-line message naming the address."""


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
               auto: bool = False, timeout_s: int = 300) -> bool:
    """Starts JAX's distributed runtime; returns whether it was started.

    ``coordinator``/``num_processes``/``process_id`` go together (explicit cluster);
    ``auto`` lets JAX detect the cluster (Cloud TPU, SLURM). Neither: a single process,
    nothing to do. Raises ``DistributedError`` on inconsistent flags or an unreachable
    coordinator, within about ``timeout_s`` seconds.
    """
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
            jax.distributed.initialize(initialization_timeout=timeout_s)
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
                                   initialization_timeout=timeout_s)
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"could not join the run at {coordinator}: {str(e).splitlines()[0][:200]}") from None
    _connect_collectives(timeout_s)
    return True


def _connect_collectives(timeout_s: int) -> None:
    """Sets up the cross-process collectives while every process is at the same point.

    Gloo (the CPU collectives) connects the processes at the first collective and gives each
    one 30 s to arrive; jax 0.10 does not expose that timeout. Left to the training loop, the
    first collective comes after loading the text encoder, building the data and compiling,
    which on a loaded machine can put one process more than 30 s behind the other. Here they
    first meet on the coordination service (``timeout_s``), then run one tiny collective over
    every device, whose connections the run's collectives reuse.
    """
    from jax.experimental import multihost_utils
    from orbax.checkpoint import multihost

    multihost.get_barrier_sync_fn()(key="jaxgan_collectives", timeout_ms=timeout_s * 1000)
    multihost_utils.sync_global_devices("jaxgan: collectives connected")


def is_primary() -> bool:
    """Process 0 writes logs, samples and plots; every process takes part in the rest."""
    return jax.process_index() == 0
