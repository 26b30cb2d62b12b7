"""The evaluation protocol: everything that changes a reported number, pinned and hashed.

FID that cannot be reproduced is the field's most common complaint (sample count, reference
statistics, resizer and feature network left unsaid). ``EvalProtocol`` names all of them;
``resolve`` adds the hashes of what it refers to (the feature network's weights, the
reference statistics, the CLIP model), and every reported number carries the hash of the
resolved protocol. Two numbers with the same protocol hash were measured the same way.

Reference statistics (the real images' features, their mean and covariance) are computed
once per reference spec and cached under ``cache_dir`` by the spec's hash, together with
a hash of their contents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxgan import paths
from jaxgan.config import ConfigError
from jaxgan.data import source_type
from jaxgan.data.source import DataError
from jaxgan.errors import JaxganError
from jaxgan.metrics.features import needs_attributes

PROTOCOL_VERSION = 1
# Images are rounded to uint8 before any feature network sees them (pixels.quantize).
QUANTIZATION = "uint8 round-trip"
GENERATORS = ("ema", "raw")


def default_cache_dir() -> Path:
    """``reference_stats`` under the cache root (``jaxgan.paths.cache_root``)."""
    return paths.cache_dir(paths.REFERENCE_STATS)


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How generated images are drawn and judged. Defaults are the shapes protocol.

    Attributes:
      dataset: where captions and reference images come from: "shapes", a TFDS name or a folder.
      data_seed: the dataset's seed (shapes draws its examples from it).
      split: the split whose captions condition the generator and whose images are the
        reference.
      num_samples: generated images; caption i is the caption of example i of ``split``.
      captions_per_image: captions used per reference image (shapes has one per image).
      num_reference: real images in the reference statistics (examples [0, N) of ``split``).
      resolution: image size the generator produces and the reference is rendered at.
      features: feature network spec (``metrics.features.load_feature_network``).
      generator: "ema" (the EMA weights, as sampling uses) or "raw" (the trained weights).
      truncation: 0 for none, else the truncation trick (Brock et al. 2019, BigGAN): noise
        drawn from a standard normal truncated to [-t, t].
      truncation_scale: s, a factor on the noise: s * normal, or with truncation t,
        s * (normal truncated to [-t, t]). BigGAN's sampling code and DF-GAN's evaluation
        (``truncnorm(-2, 2) * trunc_rate``) draw it so: DF-GAN's CUB/COCO protocol is t = 2,
        s = 0.88. Part of the hash only when not 1, so earlier hashes hold.
      seed: seeds the noise; sample i's noise is ``normal(fold_in(key(seed), i))``.
      kid_subsets, kid_subset_size: KID's subset scheme (Binkowski et al. 2018).
      pr_k: neighbours for precision/recall (Kynkaanniemi et al. 2019) and density/coverage.
      is_splits: Inception Score splits (Salimans et al. 2016).
      clip: a Hugging Face CLIPModel directory for CLIP score, or "" for no CLIP score.
      fit: for a dataset read from files, how non-square images become square ("crop" or
        "pad"); "" for a source that fixes it (``ExampleSource.fit``: shapes is drawn square).
        Part of the hash only when set, so shapes hashes are unchanged.
      fidelity_samples: shape fidelity (``metrics.fidelity``) of the first
        min(fidelity_samples, num_samples) samples, beside the same measure on as many real
        images; 0: off. Measured, and hashed, only on a source that can draw ideal objects
        (``ExampleSource.ideal_objects``: shapes).
      diversity_captions, diversity_samples: within-caption diversity (``metrics.diversity``)
        of ``diversity_samples`` (K) samples of each of N = min(diversity_captions,
        num_samples // K) captions, beside up to K real images of each (the same attribute
        combination, or the same caption text); diversity_captions 0: off. The cap keeps the
        extra draw no larger than the main one (small test evaluations stay small).
    """

    dataset: str = "shapes"
    data_seed: int = 0
    split: str = "test"
    num_samples: int = 10_000
    captions_per_image: int = 1
    num_reference: int = 10_000
    resolution: int = 32
    features: str = "shapes"
    generator: str = "ema"
    truncation: float = 0.0
    truncation_scale: float = 1.0
    seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3
    is_splits: int = 10
    clip: str = ""
    fit: str = ""
    fidelity_samples: int = 2000
    diversity_captions: int = 100
    diversity_samples: int = 10

    def __post_init__(self):
        problems = []
        # What the dataset can be judged on is a capability of its source (jaxgan.data.source).
        try:
            kind = source_type(self.dataset)
        except DataError as e:
            raise ConfigError(f"evaluation protocol: {e}") from None
        if kind.splits is not None and self.split not in kind.splits:
            problems.append(f"split must be {' or '.join(kind.splits)}, got {self.split!r}")
        if needs_attributes(self.features) and not kind.attributes:
            problems.append(f"the shapes feature network judges the shapes dataset only; evaluate "
                            f"{self.dataset} with features inception:FILE")
        if kind.fit is not None and self.fit != kind.fit:
            problems.append(f"fit does not apply to {self.dataset}, whose images are drawn square; got {self.fit!r}")
        if kind.fit is None and self.fit not in ("crop", "pad"):
            problems.append(f"fit must be crop or pad for {self.dataset}, got {self.fit!r}")
        if self.captions_per_image != 1:
            problems.append("the shapes dataset has one caption per image: captions_per_image must be 1")
        for name in ("num_samples", "num_reference", "kid_subsets", "kid_subset_size", "pr_k",
                     "is_splits", "resolution"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("fidelity_samples", "diversity_captions"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if self.diversity_samples < 2:
            problems.append(f"diversity_samples must be at least 2, got {self.diversity_samples}")
        if self.pr_k >= min(self.num_samples, self.num_reference):
            problems.append(f"pr_k={self.pr_k} needs more than {self.pr_k} samples and reference images")
        if self.is_splits > self.num_samples:
            problems.append(f"is_splits={self.is_splits} is more than num_samples={self.num_samples}")
        if self.generator not in GENERATORS:
            problems.append(f"generator must be ema or raw, got {self.generator!r}")
        # "not >= 0" also refuses NaN, which every comparison is false for.
        if not (self.truncation >= 0 and self.truncation != float("inf")):
            problems.append(f"truncation must be 0 (off) or a positive finite number, got {self.truncation}")
        if not (0 < self.truncation_scale < float("inf")):
            problems.append(f"truncation_scale must be a positive finite number, got {self.truncation_scale}")
        for name in ("seed", "data_seed"):
            if not 0 <= getattr(self, name) < 2**31:
                problems.append(f"{name} must be in [0, 2**31), got {getattr(self, name)}")
        if problems:
            raise ConfigError(f"evaluation protocol: {problems[0]}")

    def reference_spec(self, feature_network: dict[str, Any]) -> dict[str, Any]:
        """What the reference statistics depend on; its hash names their cache file.

        Args:
          feature_network: ``FeatureNetwork.identity`` (name, weights hash, resizer, scale).
        """
        spec = {"version": PROTOCOL_VERSION, "dataset": self.dataset, "data_seed": self.data_seed,
                "split": self.split, "num_reference": self.num_reference, "resolution": self.resolution,
                "quantization": QUANTIZATION, "feature_network": dict(feature_network)}
        return spec | ({"fit": self.fit} if self.fit else {})

    @property
    def measures_fidelity(self) -> bool:
        """Whether shape fidelity is measured: asked for, and the source draws ideal objects."""
        return self.fidelity_samples > 0 and source_type(self.dataset).ideal_objects

    @property
    def diversity_groups(self) -> int:
        """N, the captions within-caption diversity is measured on (0: not measured)."""
        return min(self.diversity_captions, self.num_samples // self.diversity_samples)


@dataclasses.dataclass(frozen=True)
class ResolvedProtocol:
    """A protocol with the hashes of the files and statistics it refers to."""

    protocol: EvalProtocol
    feature_network: dict[str, Any]  # FeatureNetwork.identity
    reference_sha256: str
    clip_weights_sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Every field; what the JSON output records and the hash covers."""
        fields = dataclasses.asdict(self.protocol)
        # The local paths are not part of the method; the weights' hashes are.
        fields["features"] = self.protocol.features.partition(":")[0]
        fields["clip"] = "clip" if self.protocol.clip else ""
        if not fields["fit"]:
            del fields["fit"]  # shapes: the hashes from before the field existed still hold
        if fields["truncation_scale"] == 1.0:
            del fields["truncation_scale"]  # likewise: unscaled noise hashes as before the field
        # The measures added later enter the hash only where they are measured, so that a
        # protocol that turns them off keeps the hash it had before they existed.
        if not self.protocol.measures_fidelity:
            del fields["fidelity_samples"]
        if not self.protocol.diversity_groups:
            del fields["diversity_captions"], fields["diversity_samples"]
        return {"version": PROTOCOL_VERSION, **fields, "quantization": QUANTIZATION,
                "feature_network": dict(self.feature_network),
                "reference_sha256": self.reference_sha256,
                "clip_weights_sha256": self.clip_weights_sha256}

    @property
    def hash(self) -> str:
        """16 hex digits of the sha256 of the canonical JSON of ``to_dict``."""
        return canonical_hash(self.to_dict())[:16]


def canonical_hash(obj: Any) -> str:
    """sha256 of ``obj`` as sorted, compact JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ReferenceStatsError(JaxganError, ValueError):
    """A cached reference-statistics file is unreadable or belongs to another spec; one line."""


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Real images' features (for KID and precision/recall) and their mean and covariance."""

    features: np.ndarray  # float32 [N, D]
    mu: np.ndarray  # float64 [D]
    sigma: np.ndarray  # float64 [D, D]
    spec: dict[str, Any]

    @property
    def sha256(self) -> str:
        """Hash of the contents (not of the file's bytes), so a re-save does not change it."""
        digest = hashlib.sha256()
        for array in (self.features, self.mu, self.sigma):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def save(self, path: Path) -> None:
        """Writes an ``.npz`` atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, features=self.features, mu=self.mu, sigma=self.sigma,
                 spec=np.asarray(json.dumps(self.spec, sort_keys=True)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ReferenceStats:
        """Reads a file written by ``save``; a broken file raises ``ReferenceStatsError`` naming it."""
        try:
            with np.load(path, allow_pickle=False) as f:
                stats = cls(np.asarray(f["features"]), np.asarray(f["mu"]), np.asarray(f["sigma"]),
                            json.loads(str(f["spec"])))
        except Exception as e:  # zip, key and JSON errors all mean "not a reference file"
            raise ReferenceStatsError(f"reference statistics {path} are unreadable ({type(e).__name__}: {e}); "
                                      "delete the file to recompute them") from None
        d = stats.features.shape[1] if stats.features.ndim == 2 else -1
        if stats.mu.shape != (d,) or stats.sigma.shape != (d, d):
            raise ReferenceStatsError(f"reference statistics {path} have inconsistent shapes "
                                      f"{stats.features.shape}, {stats.mu.shape}, {stats.sigma.shape}")
        return stats


def reference_path(cache_dir: Path, spec: dict[str, Any]) -> Path:
    """The cache file of a reference spec."""
    # A folder dataset is named by its path: keep the last part, without separators.
    name = Path(spec["dataset"]).name or "dataset"
    return Path(cache_dir) / f"{name}-{canonical_hash(spec)[:16]}.npz"
