"""Data parallelism two ways: ``jax.jit`` over a named 1-D mesh (default) or ``jax.pmap``.

Both compile the same ``train_step``. Under jit the state is replicated and the batch is
sharded along the mesh axis with ``NamedSharding``; XLA inserts the gradient all-reduce.
Under pmap each device holds a copy of the state and its share of the batch, and the step
averages over ``AXIS`` itself. Either way the caller sees global numpy batches in and a
single-copy state out (``unreplicate``), so checkpoints do not depend on the mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgan.config import Config, ConfigError

AXIS = "data"


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """How the step is spread over devices."""

    mode: str  # "jit" or "pmap"
    devices: tuple[Any, ...]

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def mesh(self) -> Mesh:
        return Mesh(np.asarray(self.devices), (AXIS,))

    @property
    def axis_name(self) -> str | None:
        """The axis the step reduces over itself: only pmap needs one."""
        return AXIS if self.mode == "pmap" else None

    def batchnorm_layout(self, sync: bool) -> tuple[int, str | None]:
        """(groups, axis_name) for ``BatchNorm``: global or per-device statistics."""
        if self.mode == "pmap":
            return 1, (AXIS if sync else None)
        return (1 if sync else self.num_devices), None

    def compile(self, step: Callable) -> Callable:
        """The compiled step; the state argument is donated."""
        if self.mode == "pmap":
            return jax.pmap(step, axis_name=AXIS, devices=self.devices, donate_argnums=0)
        replicated = NamedSharding(self.mesh, P())
        sharded = NamedSharding(self.mesh, P(AXIS))
        return jax.jit(step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                       donate_argnums=0)

    def put_state(self, state: Any) -> Any:
        """Places a single-copy state on the devices (replicated)."""
        if self.mode == "pmap":
            # pmap takes a leading device axis; broadcasting on device under jit avoids a
            # round trip through the host (jax.device_put_replicated is deprecated).
            n, sharding = self.num_devices, NamedSharding(self.mesh, P(AXIS))
            stack = jax.jit(lambda t: jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), t),
                            out_shardings=sharding)
            return stack(state)
        return jax.device_put(state, NamedSharding(self.mesh, P()))

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Splits a global host batch over the devices."""
        if self.mode == "pmap":
            n = self.num_devices
            batch = {k: v.reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in batch.items()}
        return jax.device_put(batch, NamedSharding(self.mesh, P(AXIS)))

    def unreplicate(self, tree: Any) -> Any:
        """One copy of a replicated pytree (state or metrics)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x[0], tree)
        return tree


def data_parallel(config: Config) -> DataParallel:
    """The device layout ``config.train`` asks for; checks the batch divides evenly."""
    devices = jax.local_devices()
    n = config.train.num_devices or len(devices)
    if n > len(devices):
        raise ConfigError(f"train.num_devices={n} but only {len(devices)} devices are visible")
    if config.train.batch_size % n:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is not divisible by the "
                          f"{n} devices")
    return DataParallel(config.train.parallel, tuple(devices[:n]))
