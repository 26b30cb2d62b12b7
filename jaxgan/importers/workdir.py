"""What every checkpoint importer shares: its workdir flags, the empty-folder check, and the
step-0 workdir it writes (``config.json``, an orbax checkpoint at step 0, ``imported.json``).

A workdir written here is an ordinary jaxgan workdir: ``sample.py``, ``jaxgan eval`` and a
resumed ``train.py`` read it as they read one a run wrote, and ``imported.json`` records where
its weights came from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jaxgan.checkpoint import Checkpointer
from jaxgan.config import Config, to_json
from jaxgan.data import make_source, source_type
from jaxgan.data.pipeline import Pipeline
from jaxgan.errors import JaxganError
from jaxgan.importers.torch_files import ImportFileError
from jaxgan.paths import workdir_path
from jaxgan.state import GANState
from jaxgan.workdir import write_atomically


def add_workdir_arguments(p: argparse.ArgumentParser, default_preset: str, other_presets: str) -> None:
    """The ``--workdir``, ``--preset`` and ``--set`` flags every ``jaxgan import`` model takes;
    ``other_presets`` names the presets of the other releases, e.g. "dfgan_official_coco for COCO"."""
    p.add_argument("--workdir", required=True, help="a new or empty folder")
    p.add_argument("--preset", default=default_preset,
                   help=f"the checkpoint's settings (default {default_preset}; {other_presets})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set data.captions_dir=DIR (repeatable)")


def new_workdir(workdir: str | Path) -> Path:
    """``workdir`` as a path, after checking it is new or empty: an import never writes over a run.

    Raises:
      ImportFileError: the folder exists and holds something, or is a file.
    """
    path = workdir_path(workdir)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ImportFileError(f"{path} exists and is not empty; import into a new or empty folder")
    return path


def data_position_at_start(config: Config) -> dict[str, Any]:
    """What a checkpoint written before the first step stores as its data position: the
    input pipeline's own position at step 0 when the dataset can be opened here, else the
    same for a TFDS dataset not prepared here (a one-process run, nothing consumed).

    Example:
        data_position_at_start(get_config("dfgan_official_cub"))["next_step"]  # 0
    """
    try:
        source = make_source(config)
    except (JaxganError, ImportError):  # not prepared here, or tensorflow_datasets not installed
        source = None
    if source is not None:
        return Pipeline(config, source, None).position(0)
    base = {"dataset": config.data.dataset, "next_step": 0, "seed": config.data.seed,
            "batch_size": config.train.batch_size}
    if source_type(config.data.dataset).drawn:
        return base
    return base | {"process_count": 1, "consumed": [0], "stats": {"skipped": {}, "repaired": {}}}


def write_imported_workdir(workdir: Path, config: Config, state: GANState, record: dict[str, Any]) -> Path:
    """Writes ``config.json``, the checkpoint of ``state`` at step 0 and ``imported.json``
    (``record``: the source file, its format and what was carried over) into ``workdir``.

    ``imported.json`` is written last, so a workdir that has it is complete.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    write_atomically(workdir / "config.json", to_json(config) + "\n")
    checkpoints = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints, asynchronous=False)
    try:
        checkpoints.save(0, state, data_position_at_start(config), config)
        checkpoints.wait()
    finally:
        checkpoints.close()
    write_atomically(workdir / "imported.json", json.dumps(record, indent=2) + "\n")
    return Path(str(workdir))
