"""A process that reaches the run's first collective long after the others still joins it.

Gloo (the CPU collectives) opens the context of a group of devices at the group's first
collective and gives every process 30 s to arrive, a limit jax 0.10 does not expose. Under
load one process can finish compiling the step more than 30 s after another, so
``jaxgan.distributed.initialize`` opens the context of all the run's devices itself, while
the processes stand at the same point. Here two processes x 2 CPU devices connect; process 1
then waits ``LATE_S`` (beyond gloo's 30 s) before both run a jitted sum over all four devices,
the kind of collective the training step runs. Before the fix, process 0 failed with "Gloo
context initialization failed: ... GetKeyValue() timed out".
"""

import subprocess
import sys

from test_multihost import ROOT, _env, _free_port

LATE_S = 33

PROCESS = """
import sys, time
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxgan import distributed

port, pid, late = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid, timeout_s=60)
mesh = Mesh(np.asarray(jax.devices()), ("all",))
x = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("all")),
                                           np.arange(2, dtype=np.float32) + 2 * pid)
step = jax.jit(lambda a: jnp.sum(a * a), out_shardings=NamedSharding(mesh, PartitionSpec()))
if pid == 1:
    time.sleep(late)
print("sum", float(step(x).addressable_data(0)), flush=True)
"""


def test_a_process_late_to_the_first_collective_over_every_device_still_joins_it():
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS, str(port), str(i), str(LATE_S)], cwd=ROOT,
                              env={**_env(2), "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=LATE_S + 90) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i}: {err[-2000:]}"
        # 0^2 + 1^2 + 2^2 + 3^2 over the four devices' values (gloo prints its own lines too).
        assert [line for line in out.splitlines() if line.startswith("sum")] == ["sum 14.0"], out
