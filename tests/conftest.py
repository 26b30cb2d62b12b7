"""Test set-up: 8 fake CPU devices, so parallel paths run on any machine.

XLA reads the flag when JAX starts, so it is set here, before any test imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Reference statistics of the evaluation are cached; tests must not write to the home directory.
import tempfile  # noqa: E402

os.environ.setdefault("JAXGAN_CACHE", tempfile.mkdtemp(prefix="jaxgan-cache-"))
