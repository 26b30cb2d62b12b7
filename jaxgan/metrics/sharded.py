"""Per-example functions over every device of a mesh, with results that ignore the device count.

Evaluation maps a function over tens of thousands of examples (generate, then extract
features). ``ShardedMap`` runs it in global chunks of ``per_device * num_devices`` examples
split along the mesh's data axis, so every device computes a block of ``per_device``
consecutive examples. Since a device always sees the same block of examples with the same
per-device shape, whatever the number of devices, the numbers do not change with it: one
device and eight give the same bits (the test checks this).

Inputs are host arrays every process can compute (noise from seeds, caption embeddings,
rendered images); ``jax.make_array_from_callback`` gives each device its slice, which works
in multi-process runs too. Results are replicated, so every process reads all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

AXIS = "data"


def evaluation_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (0: all), axis ``"data"`` as in training."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if n > len(devices):
        raise ValueError(f"asked for {n} devices but only {len(devices)} are visible")
    return Mesh(np.asarray(devices[:n]), (AXIS,))


class ShardedMap:
    """``fn(consts, inputs) -> outputs``, per example, over all devices of ``mesh``.

    Args:
      fn: pure; ``inputs`` and ``outputs`` are dicts of arrays with a leading example axis,
        and example i of the output depends only on example i of the input.
      mesh: the devices; its single axis splits the examples.
      per_device: examples per device per call (the compiled per-device batch).
    """

    def __init__(self, fn: Callable[[Any, dict], dict], mesh: Mesh, per_device: int = 64):
        self.mesh = mesh
        self.per_device = per_device
        self.chunk = per_device * mesh.size
        self._split = NamedSharding(mesh, P(mesh.axis_names[0]))
        self._replicated = NamedSharding(mesh, P())
        self._fn = jax.jit(fn, in_shardings=(self._replicated, self._split),
                           out_shardings=self._replicated)

    def put_consts(self, consts: Any) -> Any:
        """Replicates weights on every device of the mesh once, before the calls."""
        return jax.device_put(consts, self._replicated)

    def _global(self, host: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(host.shape, self._split, lambda index: host[index])

    def __call__(self, consts: Any, count: int, inputs: Callable[[int, int], dict[str, np.ndarray]],
                 progress: str | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yields the outputs of examples [0, count) chunk by chunk, in order, on the host.

        Args:
          consts: from ``put_consts``.
          count: number of examples.
          inputs: ``inputs(start, size)`` -> host arrays of examples [start, start + size).
          progress: a progress bar label, or None for none.
        """
        bar = tqdm(total=count, desc=progress, unit="img", disable=progress is None, leave=False)
        try:
            for start in range(0, count, self.chunk):
                size = min(self.chunk, count - start)
                host = inputs(start, size)
                # The last chunk is padded to the compiled shape; its padding is dropped below.
                padded = {k: _pad_to(np.asarray(v), self.chunk) for k, v in host.items()}
                out = self._fn(consts, {k: self._global(v) for k, v in padded.items()})
                yield {k: np.asarray(v)[:size] for k, v in out.items()}
                bar.update(size)
        finally:
            bar.close()


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    pad = np.zeros((size - len(x), *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad])
