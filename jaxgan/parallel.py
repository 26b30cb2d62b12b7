"""Device layout of the step: data parallelism with optional FSDP (``DataFsdpParallel``),
compiled with ``jax.jit`` (default) or ``jax.pmap``, on one process or many.

Both modes compile the same ``train_step`` over one ``(data, fsdp)`` mesh from
``jax.make_mesh`` (``make_mesh``) and split the batch over all its devices (both axes).

* jit: each state leaf is replicated, or with ``train.fsdp > 1`` split along one dimension
  over the ``fsdp`` axis (FSDP/ZeRO-3: XLA all-gathers a weight where it is used and
  reduce-scatters its gradient). Which leaves split is a rule on their shapes
  (``fsdp_spec``), so shardings come from ``jax.eval_shape`` with no model code.
* pmap: one copy of the state per device (``fsdp`` is 1) and the step averages over
  ``AXIS`` itself.

Across processes (``jax.distributed``), each process builds only its own rows of every
global batch (``local_rows``) and ``put_batch`` assembles the global array with
``jax.make_array_from_process_local_data``. The caller sees a single-copy state either way
(``canonical``, ``to_host``), so checkpoints depend on neither the mode nor the topology.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgan.config import Config, ConfigError

AXIS = "data"
FSDP_AXIS = "fsdp"
# The batch is split over both axes: every device gets its own rows.
BATCH_AXES = (AXIS, FSDP_AXIS)
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


def make_mesh(num_devices: int, fsdp: int = 1) -> Mesh:
    """The ``(data, fsdp)`` mesh over the first ``num_devices`` devices (all of them when
    several processes run), each process's devices one contiguous block.

    ``jax.make_mesh`` orders the devices for fast collectives: along the torus on TPU, by
    device id on GPU and CPU (where ids already run process by process). Each process builds
    one contiguous block of every batch's rows (``local_rows``), so where that order
    interleaves processes (possible on a TPU pod) the devices are grouped by process, keeping
    ``make_mesh``'s order within each, as ``jax.pmap`` groups them.
    """
    shape, names = (num_devices // fsdp, fsdp), (AXIS, FSDP_AXIS)
    # Auto axes: XLA propagates shardings as it does on a plain Mesh (make_mesh's default is
    # Explicit, which would make sharding part of every array's type).
    mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * 2, devices=jax.devices()[:num_devices])
    order = list(mesh.devices.flat)
    by_process = sorted(order, key=lambda d: d.process_index)  # stable
    if by_process == order:
        return mesh
    return Mesh(np.asarray(by_process).reshape(shape), names)


@dataclasses.dataclass(frozen=True)
class DataFsdpParallel:
    """Data parallelism over a ``(data, fsdp)`` mesh, with the state optionally split over
    ``fsdp`` (FSDP), compiled with ``jax.jit`` or ``jax.pmap``.

    The batch is split over every device of the mesh (both axes). Under jit each state leaf is
    replicated or split by ``fsdp_spec``; pmap keeps a whole copy per device (``fsdp`` is 1).

    Example:
        parallel = data_fsdp_parallel(config)
        step = parallel.compile(train_step)
        state, metrics = step(parallel.put_state(state), parallel.put_batch(batch))
    """

    mode: str  # "jit" or "pmap"
    mesh: Mesh  # (data, fsdp) over every device in the layout, all processes (``make_mesh``)

    @property
    def devices(self) -> tuple[Any, ...]:
        """Every device in the layout, all processes, in mesh order."""
        return tuple(self.mesh.devices.flat)

    @property
    def fsdp(self) -> int:
        """Size of the parameter-sharding axis."""
        return self.mesh.shape[FSDP_AXIS]

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def local_devices(self) -> tuple[Any, ...]:
        return tuple(d for d in self.devices if d.process_index == jax.process_index())

    @property
    def flat_mesh(self) -> Mesh:
        """The same devices as one ``data`` axis (what evaluation splits examples over)."""
        return Mesh(self.mesh.devices.reshape(-1), (AXIS,))

    @property
    def axis_name(self) -> str | None:
        """The axis the step reduces over itself: only pmap needs one."""
        return AXIS if self.mode == "pmap" else None

    def batchnorm_layout(self, sync: bool) -> tuple[int, str | None]:
        """(groups, axis_name) for ``BatchNorm``: global or per-device statistics."""
        if self.mode == "pmap":
            return 1, (AXIS if sync else None)
        return (1 if sync else self.num_devices), None

    @property
    def _split(self) -> NamedSharding:
        """A leading axis split over every device: the batch rows (jit) or the per-device
        copies (pmap)."""
        if self.mode == "pmap":
            # pmap's own layout, a flat "data" axis: an input laid out any other way, even an
            # equivalent one, makes pmap trace and compile the step again.
            return NamedSharding(self.flat_mesh, P(AXIS))
        return NamedSharding(self.mesh, P(BATCH_AXES))

    # --- the state -------------------------------------------------------------------------

    def leaf_sharding(self, shape: tuple[int, ...]) -> NamedSharding:
        """Where a single-copy state leaf of this shape lives (the checkpointed layout)."""
        return NamedSharding(self.mesh, fsdp_spec(tuple(shape), self.fsdp))

    def state_shardings(self, abstract_state: Any) -> Any:
        """One ``NamedSharding`` per leaf of a single-copy state (``jax.eval_shape`` output)."""
        return jax.tree.map(lambda a: self.leaf_sharding(a.shape), abstract_state)

    def abstract_with_shardings(self, abstract_state: Any) -> Any:
        """``ShapeDtypeStruct``s that carry their sharding: what a checkpoint restores into."""
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.leaf_sharding(a.shape)),
                            abstract_state)

    def init_state(self, init: Callable[..., Any], *args: Any) -> Any:
        """Runs ``init(*args)`` sharded from the start (no device ever holds a whole FSDP-split
        leaf) and returns the state in the step's layout. ``args`` are inputs of the compiled
        init (frozen params), not constants in it."""
        shardings = self.state_shardings(jax.eval_shape(init, *args))
        return self.to_step_layout(jax.jit(init, out_shardings=shardings)(*args))

    def put_state(self, state: Any) -> Any:
        """Places a single-copy state (host arrays, the same on every process) for the step."""
        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self.leaf_sharding(x.shape), lambda idx: x[idx])

        return self.to_step_layout(jax.tree.map(put, state))

    def put_frozen(self, frozen: Any) -> Any:
        """Places frozen params (host arrays, ``jaxgan.state.frozen_params``) whole on every
        device, once, for the step's ``frozen`` argument: replicated under jit (never FSDP-split:
        they are read, not trained), one copy per device under pmap."""
        replicated = NamedSharding(self.mesh, P())

        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, replicated, lambda idx: x[idx])

        return self.to_step_layout(jax.tree.map(put, frozen))

    def to_step_layout(self, state: Any) -> Any:
        """Canonical (single-copy, global) state -> what the compiled step takes."""
        if self.mode != "pmap":
            return state
        # pmap wants a leading device axis: every local device gets a copy.
        n_local = len(self.local_devices)

        def stack(x):
            local = np.asarray(x.addressable_data(0))
            return jax.make_array_from_process_local_data(
                self._split, np.broadcast_to(local, (n_local, *local.shape)), (self.num_devices, *local.shape))

        return jax.tree.map(stack, state)

    def canonical(self, state: Any) -> Any:
        """The step's state -> one global copy in the checkpointed layout (for orbax)."""
        if self.mode != "pmap":
            return state
        # pmap returns process-local replicas; device 0's is everyone's (they are identical).
        def one(x):
            local = np.asarray(x.addressable_data(0))[0]
            return jax.make_array_from_process_local_data(self.leaf_sharding(local.shape), local, local.shape)

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
            if self.mode == "pmap":  # [rows, ...] -> [local devices, rows per device, ...]
                value = value.reshape(n_local, -1, *value.shape[1:])
            global_shape = (value.shape[0] * self.num_devices // n_local, *value.shape[1:])
            out[key] = jax.make_array_from_process_local_data(self._split, value, global_shape)
        return out

    # --- the step --------------------------------------------------------------------------

    def compile(self, step: Callable) -> Callable:
        """The compiled ``step(state, batch[, frozen])``; the state argument is donated, the
        frozen params (``put_frozen``) are not."""
        if self.mode == "pmap":
            return jax.pmap(step, axis_name=AXIS, devices=self.devices, donate_argnums=0)
        replicated = NamedSharding(self.mesh, P())

        def laid_out(state, batch, frozen=None):
            new_state, metrics = step(state, batch) if frozen is None else step(state, batch, frozen)
            # The new state keeps the layout of the old one (the rule depends only on shapes).
            new_state = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, self.leaf_sharding(x.shape)),
                                     new_state)
            return new_state, metrics

        # The state arrives in its own layout (sharded init or restore), the batch split over
        # every device; metrics are global scalars.
        return jax.jit(laid_out, out_shardings=(None, replicated), donate_argnums=0)


def data_fsdp_parallel(config: Config) -> DataFsdpParallel:
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
    return DataFsdpParallel(t.parallel, make_mesh(n, t.fsdp))
