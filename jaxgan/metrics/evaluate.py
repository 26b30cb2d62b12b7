"""Evaluation under a pinned protocol: generate, extract features on every device, score.

``evaluate(source, protocol, ...)`` draws ``protocol.num_samples`` images from ``source``
(a trained generator, or real images for the ceiling), conditioned on the captions of
examples [0, N) of the protocol's split, and reports FID, KID, Inception Score,
precision/recall/density/coverage, text-alignment accuracy (for sources with attribute labels)
and CLIP score (when the protocol names a CLIP model), with the hash of the resolved protocol.

Generation and feature extraction happen in one compiled function, sharded over the mesh
(``metrics.sharded``), so images never leave the devices; only features come back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxgan import pixels
from jaxgan.data import source_type
from jaxgan.data.source import ExampleSource
from jaxgan.metrics import clip_score as clip_lib
from jaxgan.metrics import diversity as diversity_lib
from jaxgan.metrics import fid as fid_lib
from jaxgan.metrics import fidelity as fidelity_lib
from jaxgan.metrics.attributes import attribute_accuracy
from jaxgan.metrics.features import FeatureNetwork, clip_image_network, load_feature_network, shapes_feature_network
from jaxgan.metrics.inception_score import inception_score
from jaxgan.metrics.kid import kernel_inception_distance
from jaxgan.metrics.precision_recall import precision_recall_density_coverage
from jaxgan.metrics.protocol import (
    EvalProtocol,
    ReferenceStats,
    ReferenceStatsError,
    ResolvedProtocol,
    canonical_hash,
    default_cache_dir,
    reference_path,
)
from jaxgan.metrics.sharded import ShardedMap, evaluation_mesh
from jaxgan.sampling import apply_generator, generator_variables


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSource:
    """What is evaluated: images for examples [0, N) of the protocol's caption list.

    Attributes:
      name: for the report, e.g. "ema generator" or "real images (train split)".
      consts: weights the image function needs (placed on every device once).
      make_images: ``make_images(consts, inputs) -> float [B, R, R, 3]`` in [-1, 1]; pure.
        ``inputs`` holds ``index`` (int32 [B], the example index) and what ``inputs`` adds.
      inputs: ``inputs(start, size) -> dict`` of host arrays for examples [start, start + size).
      captions: ``captions(start, size) -> (captions, attrs [size, A])`` that the images of
        those examples should show: what text alignment and CLIP score compare with.
      attributes: whether ``attrs`` holds the examples' attribute labels (a source with
        ``ExampleSource.attributes``), so that attribute alignment can be scored.
      inputs_for: ``inputs_for(captions) -> dict`` of host arrays for images conditioned on
        any captions (a generator: their embeddings), or None (real images): what draws the
        K samples of a caption for within-caption diversity.
    """

    name: str
    consts: Any
    make_images: Callable[[Any, dict[str, jax.Array]], jax.Array]
    inputs: Callable[[int, int], dict[str, np.ndarray]]
    captions: Callable[[int, int], tuple[list[str], np.ndarray]]
    attributes: bool = False
    inputs_for: Callable[[list[str]], dict[str, np.ndarray]] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class CaptionGroups:
    """Captions that real images share, for within-caption diversity (``metrics.diversity``).

    Attributes:
      captions: one caption per group; the generator draws K samples of each.
      real: real images of the groups, group after group.
      real_group: int [M], the group of each of ``real``'s M images.
    """

    captions: list[str]
    real: ImageSource
    real_group: np.ndarray


def protocol_noise(seed: int, index: jax.Array, z_dim: int, truncation: float = 0.0,
                   scale: float = 1.0) -> jax.Array:
    """Noise of samples ``index`` [B]: a pure function of (seed, index), whatever the batching.

    With ``truncation`` t > 0, each component is drawn from the standard normal truncated to
    [-t, t] (BigGAN's truncation trick, Brock et al. 2019, arXiv:1809.11096). ``scale`` s then
    multiplies it, as BigGAN's and DF-GAN's samplers do (``truncnorm(-2, 2) * 0.88``).
    """
    base = jax.random.key(seed)

    def one(i: jax.Array) -> jax.Array:
        key = jax.random.fold_in(base, i)
        if truncation > 0:
            z = jax.random.truncated_normal(key, -truncation, truncation, (z_dim,))
        else:
            z = jax.random.normal(key, (z_dim,))
        return z if scale == 1.0 else scale * z

    return jax.vmap(one)(index)


def drawn_source(protocol: EvalProtocol, split: str | None = None) -> ExampleSource:
    """The protocol's dataset, split ``split`` (default the protocol's), when its source is
    ``drawn``: its examples are then addressed by index with no files to read."""
    kind = source_type(protocol.dataset)
    if not kind.drawn:
        raise ValueError(f"the examples of {protocol.dataset} must be given (metrics.dataset_eval.EvalExamples)")
    return kind(resolution=protocol.resolution, seed=protocol.data_seed, split=split or protocol.split)


def generator_source(generator: Any, variables: Any, z_dim: int,
                     embed: Callable[[list[str]], dict[str, np.ndarray]], protocol: EvalProtocol,
                     name: str = "generator", source: ExampleSource | None = None) -> ImageSource:
    """A generator conditioned on the captions of a drawn source's examples [0, N), with the
    protocol's noise.

    Args:
      generator: the Flax generator module; applied with ``train=False`` (BatchNorm running
        statistics, so a sample does not depend on its batch).
      variables: ``{"params": ..., "batch_stats": ...}`` (the generator's frozen params are added).
      z_dim: noise width.
      embed: captions -> ``{"sentence": [B, S]}`` plus ``words``/``word_mask`` for generators
        with word attention (``EmbeddingTable.text`` of the run's frozen text encoder).
      protocol: gives the seed and the truncation, and the captions unless ``source`` does.
      source: a ``drawn`` example source (default ``drawn_source(protocol)``).
    """
    seed, truncation, scale = protocol.seed, protocol.truncation, protocol.truncation_scale
    source = source or drawn_source(protocol)

    def make_images(consts: Any, inputs: dict[str, jax.Array]) -> jax.Array:
        z = protocol_noise(seed, inputs["index"], z_dim, truncation, scale)
        return apply_generator(generator, consts, z, inputs)

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        return dict(embed(source.labels(start, size)[0]))

    def inputs_for(captions: list[str]) -> dict[str, np.ndarray]:
        return dict(embed(captions))

    return ImageSource(name, generator_variables(generator, variables), make_images, inputs, source.labels,
                       bool(source.attributes), inputs_for)


def drawn_real_source(source: ExampleSource, offset: int = 0, name: str | None = None) -> ImageSource:
    """Real images of a drawn source, examples [offset, offset + N) (the reference, or a ceiling)."""

    def make_images(_consts: Any, inputs: dict[str, jax.Array]) -> jax.Array:
        return pixels.to_float(inputs["image"])

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        return {"image": source.draw(offset + start, size)["image"]}

    def captions(start: int, size: int) -> tuple[list[str], np.ndarray]:
        return source.labels(offset + start, size)

    return ImageSource(name or f"real images ({source.split} split from {offset})", {}, make_images, inputs,
                       captions, bool(source.attributes))


def drawn_caption_groups(source: ExampleSource, count: int, per_group: int,
                         scan_limit: int = 200_000) -> CaptionGroups | None:
    """The first ``count`` classes of a drawn source's examples, each with its first ``per_group``
    examples (a class: the attribute combination when the source has attribute labels, else
    the caption text); the group's caption is its first example's. None if none fills.

    Example:
        groups = drawn_caption_groups(ShapesSource(32, split="test"), count=100, per_group=10)
    """
    members: dict[Any, list[int]] = {}
    captions: dict[Any, str] = {}
    for start in range(0, scan_limit, 1000):
        labels, attrs = source.labels(start, 1000)
        known = len(members)
        for i, text in enumerate(labels):
            key = tuple(attrs[i].tolist()) if source.attributes else text
            if key not in members and len(members) == count:
                continue
            group = members.setdefault(key, [])
            captions.setdefault(key, text)
            if len(group) < per_group:
                group.append(start + i)
        # Done when every group is full and no more can come (count reached, or no new class
        # in the last 1000 examples: shapes has 432 combinations).
        if all(len(g) == per_group for g in members.values()) and (len(members) in (count, known)):
            break
    full = [key for key, group in members.items() if len(group) == per_group]
    if not full:
        return None
    indices = np.array([i for key in full for i in members[key]])

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        return {"image": np.concatenate([source.draw(int(i), 1)["image"] for i in indices[start:start + size]])}

    def real_captions(start: int, size: int) -> tuple[list[str], np.ndarray]:
        rows = [source.labels(int(i), 1) for i in indices[start:start + size]]
        return [r[0][0] for r in rows], np.concatenate([r[1] for r in rows])

    real = ImageSource(f"real images sharing a class ({source.split} split)", {},
                       lambda _consts, inputs: pixels.to_float(inputs["image"]), inputs, real_captions)
    return CaptionGroups([captions[key] for key in full], real, np.repeat(np.arange(len(full)), per_group))


def real_source(split: str, data_seed: int, resolution: int, offset: int = 0,
                name: str | None = None, dataset: str = EvalProtocol.dataset) -> ImageSource:
    """Real images of the drawn dataset ``dataset`` (the protocol's default), examples
    [offset, offset + N) of ``split``."""
    protocol = EvalProtocol(dataset=dataset, data_seed=data_seed, resolution=resolution, split=split)
    return drawn_real_source(drawn_source(protocol), offset, name)


def extract(source: ImageSource, count: int, networks: dict[str, FeatureNetwork], mesh: Mesh,
            per_device: int = 64, progress: str | None = None) -> dict[str, np.ndarray]:
    """Runs ``source`` and every network on examples [0, count); outputs as ``"{net}/{key}"``.

    Images are quantized to uint8 values before the networks see them (``pixels.quantize``).
    """

    def fn(consts: dict[str, Any], inputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        images = pixels.quantize(source.make_images(consts["source"], inputs))
        out = {}
        for name, net in networks.items():
            for key, value in net.apply(consts[name], images).items():
                out[f"{name}/{key}"] = value
        return out

    mapped = ShardedMap(fn, mesh, per_device)
    consts = mapped.put_consts({"source": source.consts, **{n: net.variables for n, net in networks.items()}})

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        return {"index": np.arange(start, start + size, dtype=np.int32), **source.inputs(start, size)}

    chunks = list(mapped(consts, count, inputs, progress))
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def reference_stats(protocol: EvalProtocol, network: FeatureNetwork, mesh: Mesh,
                    cache_dir: str | Path | None = None, progress: bool = True,
                    real: ImageSource | None = None) -> tuple[ReferenceStats, Path]:
    """The reference statistics of ``protocol``: loaded from the cache, or computed and cached.

    ``real`` gives the reference images of a dataset that is read
    (``dataset_eval.dataset_real_source``); a drawn dataset draws its own.
    """
    spec = protocol.reference_spec(network.identity)
    path = reference_path(Path(cache_dir) if cache_dir else default_cache_dir(), spec)
    if path.exists():
        stats = ReferenceStats.load(path)
        if stats.spec != spec:
            raise ReferenceStatsError(f"reference statistics {path} were computed for another spec; delete the file")
        return stats, path
    if real is None:
        real = drawn_real_source(drawn_source(protocol))
    out = extract(real, protocol.num_reference, {"features": network}, mesh,
                  progress="reference features" if progress else None)
    features = out["features/features"].astype(np.float32)
    mu, sigma = fid_lib.stats_from_features(features)
    stats = ReferenceStats(features, mu, sigma, spec)
    if jax.process_index() == 0:
        stats.save(path)
    return stats, path


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Every metric of one evaluation, with the protocol it was measured under.

    ``notes`` says why a measure the protocol asks for is absent (within-caption diversity on
    a dataset whose captions are all different).
    """

    metrics: dict[str, float]
    protocol: ResolvedProtocol
    source: str
    reference_file: str
    num_devices: int
    seconds: float
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "protocol_hash": self.protocol.hash,
                "protocol": self.protocol.to_dict(), "source": self.source,
                "reference_file": self.reference_file, "num_devices": self.num_devices,
                "seconds": round(self.seconds, 2), **({"notes": list(self.notes)} if self.notes else {})}


def _pixels_network() -> FeatureNetwork:
    """The quantized images themselves, as uint8, for the measures computed on the host."""
    return FeatureNetwork(name="pixels", apply=lambda _v, images: {"image": pixels.to_uint8(images)},
                          variables={}, weights_sha256="", resizer="none")


def _with_rows(source: ImageSource, count: int, captions: list[str]) -> ImageSource:
    """``source``'s examples [0, count), then examples conditioned on ``captions`` (count + j
    is conditioned on ``captions[j]``, with the noise of index count + j)."""

    def inputs(start: int, size: int) -> dict[str, np.ndarray]:
        end, parts = start + size, []
        if start < count:
            parts.append(source.inputs(start, min(end, count) - start))
        if end > count:
            lo = max(start, count) - count
            parts.append(source.inputs_for(captions[lo:end - count]))
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}

    return dataclasses.replace(source, inputs=inputs)


# Real-image values of the measures that have one (fidelity, diversity), by protocol and
# feature network: they do not change between the evaluations of a run.
_REAL_CACHE: dict[tuple[EvalProtocol, str], dict[str, float]] = {}


def real_ceilings(protocol: EvalProtocol, network: FeatureNetwork, mesh: Mesh, groups: CaptionGroups | None,
                  per_device: int = 64) -> dict[str, float]:
    """Shape fidelity and within-caption diversity of real images under ``protocol`` (the
    ``_real`` values beside the generated ones); computed once per protocol and network."""
    key = (protocol, canonical_hash(network.identity))
    if key in _REAL_CACHE:
        return _REAL_CACHE[key]
    out: dict[str, float] = {}
    if protocol.measures_fidelity:
        source = drawn_source(protocol)
        count = min(protocol.fidelity_samples, protocol.num_samples)
        images, attrs = source.draw(0, count)["image"], source.labels(0, count)[1]
        out.update(_real_keys(fidelity_lib.shape_fidelity(images, attrs, source)))
    if groups is not None:
        features = extract(groups.real, len(groups.real_group), {"features": network}, mesh, per_device)
        div = diversity_lib.within_group_diversity(features["features/features"], groups.real_group)
        out.update({"diversity_spread_real": div["spread"], "diversity_pairwise_real": div["pairwise"]})
    _REAL_CACHE[key] = out
    return out


def _real_keys(metrics: dict[str, float]) -> dict[str, float]:
    """``fidelity_iou/x`` -> ``fidelity_iou_real/x``; ``fidelity_iou`` -> ``fidelity_iou_real``."""
    out = {}
    for k, v in metrics.items():
        name, sep, cls = k.partition("/")
        out[f"{name}_real{sep}{cls}"] = v
    return out


def _ratio(value: float, real: float) -> float:
    return value / real if real else float("nan")


def evaluate(source: ImageSource, protocol: EvalProtocol, mesh: Mesh | None = None,
             network: FeatureNetwork | None = None, cache_dir: str | Path | None = None,
             clip_scorer: Any = None, training_text_hashes: Iterable[str] = (),
             per_device: int = 64, progress: bool = True, reference: ImageSource | None = None,
             stats: tuple[ReferenceStats, Path] | None = None, groups: CaptionGroups | None = None) -> EvalResult:
    """Scores ``source`` under ``protocol``.

    Args:
      source: what to evaluate (``generator_source`` or ``real_source``).
      protocol: the pinned protocol.
      mesh: devices to run on; all of them by default.
      network: the feature network, if already loaded (else from ``protocol.features``).
      cache_dir: where reference statistics are cached (``protocol.default_cache_dir()``).
      clip_scorer: a loaded ``metrics.clip_score.ClipScorer`` (else loaded from
        ``protocol.clip`` if set).
      training_text_hashes: text-tower hashes of every model the run used in training;
        CLIP score is refused if the evaluation CLIP shares weights with one of them.
      per_device: examples per device per compiled call.
      progress: progress bars.
      reference: the real images of a dataset that is read (computed once, then cached).
      stats: ``reference_stats``' result, when the caller already holds it.
      groups: the caption groups of within-caption diversity on a dataset that is read
        (``dataset_eval.dataset_caption_groups``); a drawn dataset finds its own.
    """
    start_time = time.perf_counter()
    mesh = mesh or evaluation_mesh()
    network = network or load_feature_network(protocol.features)
    reference, ref_path = stats or reference_stats(protocol, network, mesh, cache_dir, progress, reference)

    networks = {"features": network}
    if not network.reads_attributes and source.attributes:
        networks["attributes"] = shapes_feature_network()
    if protocol.measures_fidelity:
        networks["pixels"] = _pixels_network()
    clip_sha = ""
    if protocol.clip or clip_scorer is not None:
        clip_scorer = clip_scorer or clip_lib.load_clip_scorer(protocol.clip)
        clip_lib.check_not_training_model(clip_scorer, training_text_hashes)
        networks["clip"] = clip_image_network(clip_scorer)
        clip_sha = clip_scorer.weights_sha256

    notes = []
    k = protocol.diversity_samples
    if protocol.diversity_groups and groups is None and source_type(protocol.dataset).drawn:
        groups = drawn_caption_groups(drawn_source(protocol), protocol.diversity_groups, k)
    if protocol.diversity_groups and groups is None:
        notes.append(f"within-caption diversity: absent, no {k} images of the split share a caption")
    # The K samples of each group's caption are drawn in the same pass as the others.
    extra = [c for c in groups.captions for _ in range(k)] if groups and source.inputs_for else []
    run = _with_rows(source, protocol.num_samples, extra) if extra else source
    out = extract(run, protocol.num_samples + len(extra), networks, mesh, per_device,
                  progress="samples + features" if progress else None)
    extra_out = {key: v[protocol.num_samples:] for key, v in out.items()}
    out = {key: v[:protocol.num_samples] for key, v in out.items()}
    metrics = score(out, reference, protocol)
    captions, attrs = source.captions(0, protocol.num_samples)
    if source.attributes:
        attr_key = "features/attrs" if "features/attrs" in out else "attributes/attrs"
        metrics.update(alignment_accuracy(out[attr_key], attrs))
    if "clip" in networks:
        metrics.update(_clip_metrics(clip_scorer, out["clip/features"], captions))
    real = real_ceilings(protocol, network, mesh, groups, per_device)
    if protocol.measures_fidelity:
        count = min(protocol.fidelity_samples, protocol.num_samples)
        metrics.update(fidelity_lib.shape_fidelity(out["pixels/image"][:count], attrs[:count],
                                                   drawn_source(protocol)))
    if extra:
        div = diversity_lib.within_group_diversity(extra_out["features/features"],
                                                   np.repeat(np.arange(len(groups.captions)), k))
        metrics.update({"diversity_spread": div["spread"], "diversity_pairwise": div["pairwise"]})
    elif groups is not None:
        notes.append(f"within-caption diversity: {source.name} draws no samples for given captions; "
                     "only the real images' value is reported")
    metrics.update(_with_ratios(metrics, real))
    if groups is not None:
        metrics["diversity_groups"] = float(len(groups.captions))

    resolved = ResolvedProtocol(protocol, network.identity, reference.sha256, clip_sha)
    return EvalResult(metrics, resolved, source.name, str(ref_path), mesh.size,
                      time.perf_counter() - start_time, tuple(notes))


def _with_ratios(metrics: dict[str, float], real: dict[str, float]) -> dict[str, float]:
    """The real values, and generated / real for fidelity's IoU and diversity's two numbers."""
    out = dict(real)
    for name in ("fidelity_iou", "diversity_spread", "diversity_pairwise"):
        if name in metrics and f"{name}_real" in real:
            out[f"{name}_ratio"] = _ratio(metrics[name], real[f"{name}_real"])
    return out


def _clip_metrics(scorer: Any, image_embeds: np.ndarray, captions: list[str], chunk: int = 256) -> dict[str, float]:
    """CLIP score of each image with its own caption; captions embedded once each."""
    unique = list(dict.fromkeys(captions))
    table = {}
    for start in range(0, len(unique), chunk):
        part = unique[start:start + chunk]
        table.update(zip(part, np.asarray(scorer.embed_texts(part))))
    text = np.stack([table[c] for c in captions])
    scores = clip_lib.aggregate_clip_scores(clip_lib.clip_score(jnp.asarray(image_embeds), jnp.asarray(text)))
    return {k: float(v) for k, v in scores.items() if k != "n"}


def score(out: dict[str, np.ndarray], reference: ReferenceStats, protocol: EvalProtocol) -> dict[str, float]:
    """FID, KID, IS and precision/recall/density/coverage from extracted outputs."""
    features = out["features/features"].astype(np.float32)
    mu, sigma = fid_lib.stats_from_features(features)
    kid_mean, kid_std = kernel_inception_distance(reference.features, features, protocol.kid_subsets,
                                                  protocol.kid_subset_size, seed=protocol.seed)
    is_mean, is_std = inception_score(out["features/probs"], protocol.is_splits, from_logits=False)
    prdc = precision_recall_density_coverage(reference.features, features, k=protocol.pr_k)
    return {"fid": fid_lib.frechet_distance(mu, sigma, reference.mu, reference.sigma),
            "kid": kid_mean, "kid_std": kid_std, "is": is_mean, "is_std": is_std,
            **{k: float(v) for k, v in prdc.items()}}


def alignment_accuracy(predicted: np.ndarray, wanted: np.ndarray) -> dict[str, float]:
    """Text alignment: the fraction of samples whose attributes match their caption's."""
    return {f"alignment_{k}": v for k, v in attribute_accuracy(predicted, wanted).items()}


# Metrics are printed to 4 significant digits. Features are float32, and XLA's CPU and GPU
# kernels sum in an order that can depend on the thread and device layout, which moves the
# metrics by about 1e-6 relative between device counts (measured: at most 2.2e-6 between
# 1 and 8 CPU devices); 4 digits stay clear of that, so the printed values reproduce.
SIGNIFICANT_DIGITS = 4


def format_metrics(metrics: dict[str, float]) -> dict[str, str]:
    """Each metric as printed: 4 significant digits; alignment as a percentage, 2 decimals."""
    out = {}
    for k, v in metrics.items():
        if k.startswith("alignment_"):
            out[k] = f"{100 * v:.2f}%"
        else:
            out[k] = significant(v, SIGNIFICANT_DIGITS)
    return out


# Keys that ``metric_lines`` gathers into one line per measure, not one line per key.
_GATHERED = ("fidelity_", "diversity_")


def metric_lines(metrics: dict[str, float]) -> list[str]:
    """What ``jaxgan eval`` prints: a line per metric, then one line each for shape fidelity
    and within-caption diversity with their real values and the ratio, and fidelity's IoU
    ratio per class.

    Example:
        metric_lines({"fid": 0.27, "fidelity_iou": 0.9, "fidelity_iou_real": 0.997, ...})
        # ["  fid                        0.2700", "  shape fidelity     IoU 0.9000 (real ...", ...]
    """
    text = format_metrics(metrics)
    lines = [f"  {k:20s} {v:>12s}" for k, v in text.items() if not k.startswith(_GATHERED)]
    if "fidelity_iou" in metrics:
        line = f"IoU {text['fidelity_iou']}"
        if "fidelity_iou_real" in metrics:
            line += f" (real {text['fidelity_iou_real']}, ratio {text['fidelity_iou_ratio']})"
        line += f"; colour error {text['fidelity_color_error']}"
        if "fidelity_color_error_real" in metrics:
            line += f" (real {text['fidelity_color_error_real']})"
        lines.append(f"  {'shape fidelity':20s} {line}")
        classes = [k.partition("/")[2] for k in metrics if k.startswith("fidelity_iou/")]
        ratios = [f"{c.replace('_', ' ')} "
                  f"{significant(_ratio(metrics[f'fidelity_iou/{c}'], metrics[f'fidelity_iou_real/{c}']), 3)}"
                  for c in classes if f"fidelity_iou_real/{c}" in metrics]
        if ratios:
            lines.append(f"  {'  IoU ratio by class':20s} {', '.join(ratios)}")
    if "diversity_spread_real" in metrics:
        groups = int(metrics.get("diversity_groups", 0))
        if "diversity_spread" in metrics:
            line = (f"spread {text['diversity_spread']} (real {text['diversity_spread_real']}, ratio "
                    f"{text['diversity_spread_ratio']}); pairwise {text['diversity_pairwise']} (real "
                    f"{text['diversity_pairwise_real']}, ratio {text['diversity_pairwise_ratio']})")
        else:
            line = f"real spread {text['diversity_spread_real']}, pairwise {text['diversity_pairwise_real']}"
        lines.append(f"  {'caption diversity':20s} {line}; {groups} captions")
    return lines


def significant(value: float, digits: int) -> str:
    """``value`` with ``digits`` significant digits in positional notation, trailing zeros kept."""
    if value == 0 or not np.isfinite(value):
        return f"{value:.{digits - 1}f}"
    exponent = int(np.floor(np.log10(abs(value))))
    return f"{value:.{max(digits - 1 - exponent, 0)}f}"
