"""Test set-up: 8 fake CPU devices, so parallel paths run on any machine.

XLA reads the flag when JAX starts, so it is set here, before any test imports jax.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Reference statistics of the evaluation are cached; tests must not write to the home directory.
import tempfile  # noqa: E402

# Many tests compile the same step (same config, fresh closures). XLA's persistent cache
# makes every compile after the first a lookup, shared by the xdist workers and by the
# train.py subprocesses the multi-process tests start. Results do not change: a cached
# executable is the same program. Every compile is cached, however short: the suite compiles
# hundreds of small programs (losses, layers, penalties), and on a second run of
# test_losses, test_regularizers and test_augment caching them all took 21 s of CPU against
# 34 s with a 0.5 s threshold (a first run: 56 s against 50 s).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxgan-tests-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

os.environ.setdefault("JAXGAN_CACHE", tempfile.mkdtemp(prefix="jaxgan-cache-"))


import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def quick_compiles():
    """XLA's optimisation passes off for tests that compile many variants and run each for a
    few steps: they check how pieces compose, and the passes would cost more
    compile time than they save in run time. The core parallel and resume tests keep them."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


# The slowest files, slowest first (per-file sums of `pytest --durations=0`, December 2026). xdist's
# --dist loadfile hands out files in collection order, alphabetical by default, so a long file
# collected late could run alone on one worker while the other idled (one run: 709 s of wall
# time for 1192 s of work on 2 workers, 113 s above an even split). Collected first, they run
# while the short files fill in around them. A new file that takes over a minute belongs here.
SLOW_FIRST = ("test_mixed_precision.py", "test_multihost_datasets.py", "test_train.py", "test_multihost.py",
              "test_sample_attention.py", "test_step_variants.py", "test_bench.py", "test_faults_multihost.py",
              "test_remote_workdir.py", "test_dfgan.py", "test_faults_crash.py", "test_step.py", "test_r3gan.py",
              "test_galip.py", "test_pretrain_text.py", "test_clip_towers.py", "test_clip_pair.py",
              "test_galip_import.py", "test_dfgan_import.py", "test_faults_resume.py", "test_inception.py",
              "test_schedules.py", "test_losses.py", "test_fixture_workdir.py", "test_models.py",
              "test_preemption.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# The fault-injection suite's counts (tests/faults.py): each xdist worker hands its tally to
# the controller, which prints the sum once at the end of the run.
from faults import TALLY  # noqa: E402


class _FaultTallyController:
    def pytest_testnodedown(self, node, error):
        TALLY.add(getattr(node, "workeroutput", {}).get("fault_tally", {}))


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_FaultTallyController(), "jaxgan-fault-tally")


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):  # an xdist worker: report to the controller
        session.config.workeroutput["fault_tally"] = TALLY.as_dict()


def pytest_terminal_summary(terminalreporter):
    if TALLY.inputs:
        terminalreporter.write_line(TALLY.line())
