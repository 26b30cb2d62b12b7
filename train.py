"""Train a text-conditioned GAN: `python train.py [--workdir W] [--preset P] [--steps N] [--set k=v]`.

Kept short on purpose: the loop lives in jaxgan.train, the flags in jaxgan.cli.
"""

import sys

from jaxgan.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
