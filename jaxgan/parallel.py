"""Device layout of the step: ``jax.jit`` over a named mesh (default) or ``jax.pmap``,
on one process or many.

Both compile the same ``train_step``.

* jit: a 2-D mesh ``(data, fsdp)`` over every device of every process. The batch is split
  over all devices (both axes); each state leaf is replicated, or with ``train.fsdp > 1``
  split along one dimension over the ``fsdp`` axis (FSDP/ZeRO-3: XLA all-gathers a weight
  where it is used and reduce-scatters its gradient). Which leaves split is a rule on their
  shapes (``fsdp_spec``), so shardings come from ``jax.eval_shape`` with no model code.
* pmap: one copy of the state per device and the step averages over ``AXIS`` itself.

Across processes (``jax.distributed``), each process builds only its own rows of every
global batch (``local_rows``) and ``put_batch`` assembles the global array with
``jax.make_array_from_process_local_data``. The caller sees a single-copy state either way
(``canonical``, ``to_host``), so checkpoints depend on neither the mode nor the topology.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgan.config import Config, ConfigError

AXIS = "data"
FSDP_AXIS = "fsdp"
# Leaves smaller than this stay replicated under FSDP: biases and norms are cheap to copy,
# and sharding them would add a collective each for no memory saved.
FSDP_MIN_SIZE = 2 ** 12


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """Where one state leaf lives: split its largest dimension divisible by ``fsdp`` over the
    ``fsdp`` axis (the last such dimension on ties), or replicated when small or indivisible."""
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    candidates = [(size, i) for i, size in enumerate(shape) if size % fsdp == 0]
    if not candidates:
        return P()
    _, axis = max(candidates)
    return P(*([None] * axis), FSDP_AXIS)


def _ordered(devices: list[Any]) -> tuple[Any, ...]:
    # Devices of one process are contiguous in the mesh, so each process's rows of the batch
    # are one contiguous block that it can build alone.
    return tuple(sorted(devices, key=lambda d: (d.process_index, d.id)))


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """How the step is spread over devices (possibly of several processes)."""

    mode: str  # "jit" or "pmap"
    devices: tuple[Any, ...]  # every device in the layout, all processes, in mesh order
    fsdp: int = 1  # size of the parameter-sharding axis (jit only)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def local_devices(self) -> tuple[Any, ...]:
        return tuple(d for d in self.devices if d.process_index == jax.process_index())

    @property
    def mesh(self) -> Mesh:
        """jit: (data, fsdp); pmap: (data,)."""
        if self.mode == "pmap":
            return Mesh(np.asarray(self.devices), (AXIS,))
        grid = np.asarray(self.devices).reshape(self.num_devices // self.fsdp, self.fsdp)
        return Mesh(grid, (AXIS, FSDP_AXIS))

    @property
    def flat_mesh(self) -> Mesh:
        """The same devices as one ``data`` axis (what evaluation splits examples over)."""
        return Mesh(np.asarray(self.devices), (AXIS,))

    @property
    def axis_name(self) -> str | None:
        """The axis the step reduces over itself: only pmap needs one."""
        return AXIS if self.mode == "pmap" else None

    @property
    def batch_axes(self) -> tuple[str, ...]:
        return (AXIS,) if self.mode == "pmap" else (AXIS, FSDP_AXIS)

    def batchnorm_layout(self, sync: bool) -> tuple[int, str | None]:
        """(groups, axis_name) for ``BatchNorm``: global or per-device statistics."""
        if self.mode == "pmap":
            return 1, (AXIS if sync else None)
        return (1 if sync else self.num_devices), None

    # --- the state -------------------------------------------------------------------------

    def leaf_sharding(self, shape: tuple[int, ...]) -> NamedSharding:
        """Where a single-copy state leaf of this shape lives (the checkpointed layout)."""
        if self.mode == "pmap":
            return NamedSharding(self.flat_mesh, P())
        return NamedSharding(self.mesh, fsdp_spec(tuple(shape), self.fsdp))

    def state_shardings(self, abstract_state: Any) -> Any:
        """One ``NamedSharding`` per leaf of a single-copy state (``jax.eval_shape`` output)."""
        return jax.tree.map(lambda a: self.leaf_sharding(a.shape), abstract_state)

    def abstract_with_shardings(self, abstract_state: Any) -> Any:
        """``ShapeDtypeStruct``s that carry their sharding: what a checkpoint restores into."""
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.leaf_sharding(a.shape)),
                            abstract_state)

    def init_state(self, init: Callable[[], Any]) -> Any:
        """Runs ``init`` sharded from the start (no device ever holds a whole FSDP-split
        leaf) and returns the state in the step's layout."""
        shardings = self.state_shardings(jax.eval_shape(init))
        return self.to_step_layout(jax.jit(init, out_shardings=shardings)())

    def put_state(self, state: Any) -> Any:
        """Places a single-copy state (host arrays, the same on every process) for the step."""
        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self.leaf_sharding(x.shape), lambda idx: x[idx])

        return self.to_step_layout(jax.tree.map(put, state))

    def to_step_layout(self, state: Any) -> Any:
        """Canonical (single-copy, global) state -> what the compiled step takes."""
        if self.mode != "pmap":
            return state
        # pmap wants a leading device axis: every local device gets a copy.
        n_local, sharding = len(self.local_devices), NamedSharding(self.flat_mesh, P(AXIS))

        def stack(x):
            local = np.asarray(x.addressable_data(0))
            return jax.make_array_from_process_local_data(
                sharding, np.broadcast_to(local, (n_local, *local.shape)), (self.num_devices, *local.shape))

        return jax.tree.map(stack, state)

    def canonical(self, state: Any) -> Any:
        """The step's state -> one global copy in the checkpointed layout (for orbax)."""
        if self.mode != "pmap":
            return state
        # pmap returns process-local replicas; device 0's is everyone's (they are identical).
        def one(x):
            local = np.asarray(x.addressable_data(0))[0]
            return jax.make_array_from_process_local_data(NamedSharding(self.flat_mesh, P()), local, local.shape)

        return jax.tree.map(one, state)

    def to_host(self, tree: Any) -> Any:
        """Numpy copy of a single-copy pytree (state or metrics) from the step's outputs.

        Collective when leaves are split over processes (FSDP): every process must call it.
        """
        def host(x):
            if self.mode == "pmap":
                return np.asarray(x.addressable_data(0))[0]
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        return jax.tree.map(host, tree)

    # --- the batch -------------------------------------------------------------------------

    def local_rows(self, batch_size: int) -> tuple[int, int]:
        """[lo, hi): the rows of every global batch this process builds and feeds."""
        per_device = batch_size // self.num_devices
        mine = [i for i, d in enumerate(self.devices) if d.process_index == jax.process_index()]
        lo, hi = mine[0] * per_device, (mine[-1] + 1) * per_device
        if hi - lo != len(mine) * per_device:
            raise RuntimeError("this process's devices are not contiguous in the mesh")
        return lo, hi

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of a global batch (all rows with one process) -> global arrays."""
        n_local = len(self.local_devices)
        out = {}
        for key, value in batch.items():
            value = np.asarray(value)
            rows = value.shape[0]
            global_rows = rows * self.num_devices // n_local
            if self.mode == "pmap":
                value = value.reshape(n_local, rows // n_local, *value.shape[1:])
                shape = (self.num_devices, rows // n_local, *value.shape[2:])
                sharding = NamedSharding(self.flat_mesh, P(AXIS))
            else:
                shape = (global_rows, *value.shape[1:])
                sharding = NamedSharding(self.mesh, P(self.batch_axes))
            out[key] = jax.make_array_from_process_local_data(sharding, value, shape)
        return out

    # --- the step --------------------------------------------------------------------------

    def compile(self, step: Callable) -> Callable:
        """The compiled step; the state argument is donated."""
        if self.mode == "pmap":
            return jax.pmap(step, axis_name=AXIS, devices=self.devices, donate_argnums=0)
        replicated = NamedSharding(self.mesh, P())

        def laid_out(state, batch):
            new_state, metrics = step(state, batch)
            # The new state keeps the layout of the old one (the rule depends only on shapes).
            new_state = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.leaf_sharding(x.shape)),
                                     new_state)
            return new_state, metrics

        # The state arrives in its own layout (sharded init or restore), the batch split over
        # every device; metrics are global scalars.
        return jax.jit(laid_out, out_shardings=(None, replicated), donate_argnums=0)


def data_parallel(config: Config) -> DataParallel:
    """The device layout ``config.train`` asks for; checks the batch and axes divide evenly."""
    t = config.train
    devices = jax.devices()
    multi = jax.process_count() > 1
    n = t.num_devices or len(devices)
    if n > len(devices):
        raise ConfigError(f"train.num_devices={n} but only {len(devices)} devices are visible")
    if multi and n != len(devices):
        raise ConfigError(f"train.num_devices={n}: a run over {jax.process_count()} processes uses all "
                          f"{len(devices)} of their devices (set 0)")
    if t.batch_size % n:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the {n} devices "
                          f"({jax.process_count()} process(es)); use a multiple of {n}")
    if t.fsdp < 1 or n % t.fsdp:
        raise ConfigError(f"train.fsdp={t.fsdp} must be at least 1 and divide the {n} devices")
    if t.fsdp > 1 and t.parallel != "jit":
        raise ConfigError("train.fsdp > 1 needs train.parallel=jit (pmap keeps a whole copy per device)")
    chosen = _ordered(devices) if multi else tuple(jax.local_devices()[:n])
    return DataParallel(t.parallel, chosen, t.fsdp)
