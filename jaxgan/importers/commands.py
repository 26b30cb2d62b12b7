"""``jaxgan import SOURCE``: one subcommand per published model, from one small table.

Each entry of ``IMPORTERS`` adds its flags to its own subparser and runs with the parsed
flags; ``jaxgan.cli`` registers ``build_parser`` and ``run`` as the ``import`` command, so its
one error wrapper turns an ``ImportFileError`` into ``error: <one line>`` and exit status 2.
A new importer is one more row.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from jaxgan.importers import damsm, dfgan, galip, torch_files


@dataclasses.dataclass(frozen=True)
class Importer:
    """One ``jaxgan import`` subcommand.

    Attributes:
      help: the line ``jaxgan import --help`` shows.
      add_arguments: adds the subcommand's flags to its parser.
      run: does the import with the parsed flags; returns the exit status.
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


IMPORTERS: dict[str, Importer] = {
    "damsm": Importer("AttnGAN's DAMSM text encoder (text_encoder*.pth + captions pickle) -> a text encoder "
                      "directory", damsm.add_arguments, damsm.run),
    "dfgan": Importer("an official DF-GAN state_epoch_N.pth (tobran/DF-GAN) + a DAMSM encoder directory -> a "
                      "jaxgan workdir", dfgan.add_arguments, dfgan.run),
    "galip": Importer("an official GALIP state_epoch_N.pth (tobran/GALIP) + its CLIP directory -> a jaxgan "
                      "workdir", galip.add_arguments, galip.run),
}


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan import``: a subcommand per entry of ``IMPORTERS``."""
    p = argparse.ArgumentParser(prog="jaxgan import",
                                description="Import official PyTorch release files into jaxgan (needs torch).")
    sub = p.add_subparsers(dest="source", required=True, metavar="SOURCE",
                           help=", ".join(IMPORTERS))
    for name, importer in IMPORTERS.items():
        importer.add_arguments(sub.add_parser(name, help=importer.help, description=importer.help))
    return p


def run(args: argparse.Namespace) -> int:
    """Runs the subcommand ``args.source`` names."""
    # Every importer reads .pth files: say how to get torch before loading encoders or CLIPs.
    torch_files.require_torch()
    return IMPORTERS[args.source].run(args)
