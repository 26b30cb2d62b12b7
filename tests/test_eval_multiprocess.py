"""Evaluation across processes: two JAX processes on localhost (gloo collectives) share one
mesh and report the same numbers as a single process."""

import json
import os
import socket
import subprocess
import sys
import textwrap

from jaxgan.metrics.evaluate import evaluate, real_source
from jaxgan.metrics.protocol import EvalProtocol
from jaxgan.metrics.sharded import evaluation_mesh

PROTOCOL = dict(num_samples=512, num_reference=512, kid_subsets=5, kid_subset_size=256, fidelity_samples=128,
                diversity_captions=8)

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[1]))
    from jaxgan.metrics.evaluate import evaluate, real_source
    from jaxgan.metrics.protocol import EvalProtocol
    from jaxgan.metrics.sharded import evaluation_mesh
    mesh = evaluation_mesh()
    result = evaluate(real_source("train", 0, 32), EvalProtocol(**json.loads(sys.argv[3])), mesh,
                      cache_dir=sys.argv[4], per_device=32, progress=False)
    print("RESULT " + json.dumps({"devices": mesh.size, "local": jax.local_device_count(),
                                  "hash": result.protocol.hash, "metrics": result.metrics}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_report_what_one_process_reports(tmp_path):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), json.dumps(PROTOCOL),
                               str(tmp_path / f"cache{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    results = []
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    single = evaluate(real_source("train", 0, 32), EvalProtocol(**PROTOCOL), evaluation_mesh(1),
                      cache_dir=tmp_path / "single", per_device=32, progress=False)
    for r in results:
        assert (r["devices"], r["local"]) == (4, 2)  # one mesh over both processes
        assert r["hash"] == single.protocol.hash
        assert r["metrics"] == single.metrics
