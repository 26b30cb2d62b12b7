"""Sample from a trained generator: `python sample.py --workdir W --prompt "..." [--num-per-prompt K]`.

Writes one PNG per sample, grid.png and manifest.jsonl; the logic lives in jaxgan.sampling.
"""

import sys

from jaxgan.cli import sample_main

if __name__ == "__main__":
    sys.exit(sample_main())
