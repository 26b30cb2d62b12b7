"""The one evaluation of a run: what the training loop and ``jaxgan eval`` both call.

An ``Evaluator`` holds what is built once per run: the resolved protocol, the feature network,
the CLIP model (when the protocol scores CLIP), the evaluation split's examples and the
embedding table of their captions, and the reference statistics (``prepare``, or the first
evaluation). Building it loads the networks and checks the protocol, and training calls
``prepare`` before its first step, so a run with bad evaluation settings fails at once, not
``eval.every`` steps in. What differs between datasets is asked of their source
(``jaxgan.data.source``): a ``drawn`` source conditions sample ``i`` on its example ``i``, a
read one on the split's examples in the protocol's order (``metrics.dataset_eval``).

    evaluator = Evaluator(config, encoder)
    result = evaluator.evaluate_state(state)        # result.metrics["fid"], result.protocol.hash
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from jax.sharding import Mesh

from jaxgan.config import Config, ConfigError
from jaxgan.data import make_source, source_type
from jaxgan.data.embeddings import EmbeddingTable, embedding_table
from jaxgan.metrics import features
from jaxgan.metrics.clip_score import check_not_training_model, load_clip_scorer, text_tower_sha256
from jaxgan.metrics.dataset_eval import (
    EvalExamples,
    dataset_caption_groups,
    dataset_generator_source,
    dataset_real_source,
)
from jaxgan.metrics.evaluate import (
    CaptionGroups,
    EvalResult,
    ImageSource,
    drawn_caption_groups,
    drawn_real_source,
    evaluate,
    generator_source,
    reference_stats,
)
from jaxgan.metrics.protocol import EvalProtocol
from jaxgan.metrics.sharded import evaluation_mesh
from jaxgan.models import build_models
from jaxgan.text import DamsmTextEncoder, load_text_encoder
from jaxgan.workdir import restore_state, saved_config


def protocol_for(config: Config, **overrides: Any) -> EvalProtocol:
    """The run's evaluation protocol: ``config.eval`` with ``overrides`` (None values ignored).

    Example:
        protocol_for(get_config("default"), num_samples=1000).num_samples  # 1000
    """
    e = config.eval
    fixed_fit = source_type(config.data.dataset).fit  # "" for a source drawn square: not in the hash
    fields = dict(dataset=config.data.dataset, data_seed=config.data.seed, split=e.split,
                  num_samples=e.num_samples, num_reference=e.num_reference or e.num_samples,
                  resolution=config.model.resolution, features=e.features, generator=e.generator,
                  truncation=e.truncation, truncation_scale=e.truncation_scale, seed=e.seed, clip=e.clip,
                  fidelity_samples=e.fidelity_samples,
                  diversity_captions=e.diversity_captions, diversity_samples=e.diversity_samples,
                  fit=config.data.fit if fixed_fit is None else fixed_fit)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return EvalProtocol(**fields)


def evaluates(config: Config) -> bool:
    """Whether training ``config`` evaluates periodically: ``eval.every`` is set and the feature
    network can judge the dataset (the shapes network needs the source's attribute labels)."""
    return config.eval.every > 0 and bool(source_type(config.data.dataset).attributes
                                          or not features.needs_attributes(config.eval.features))


def training_text_hashes(encoder: Any) -> list[str]:
    """Text-tower hashes of the models a run trains with (its frozen conditioning encoder).

    A DAMSM encoder (an LSTM) has no transformer a CLIP could share, and its params have no
    Hugging Face names to hash under: it contributes none.
    """
    params = getattr(encoder, "params", None)
    if params is None or isinstance(encoder, DamsmTextEncoder):
        return []
    return [text_tower_sha256(params)]


class Evaluator:
    """Every metric of a run's generator under the run's protocol, built once per run.

    Args:
      config: the run's config.
      encoder: the run's frozen text encoder.
      mesh: devices to evaluate on (default: all).
      table: the run's embedding table, reused when the source embeds its captions on demand
        (what training encoded is not encoded again).
      cache_dir: where reference statistics are cached (``metrics.protocol.default_cache_dir``).
      progress: progress bars.
      protocol_overrides: fields of ``EvalProtocol`` that replace ``config.eval``'s.

    Example:
        evaluator = Evaluator(config, load_text_encoder(config.text.encoder))
        evaluator.evaluate_state(state).metrics["fid"]
    """

    def __init__(self, config: Config, encoder: Any, mesh: Mesh | None = None, table: Any = None,
                 cache_dir: str | Path | None = None, progress: bool = False, **protocol_overrides: Any):
        self.config, self.encoder = config, encoder
        self.mesh = mesh if mesh is not None else evaluation_mesh()
        self.cache_dir, self.progress = cache_dir, progress
        self.protocol = protocol_for(config, **protocol_overrides)
        # Through the module, so that a test can swap the loader.
        self.network = features.load_feature_network(self.protocol.features)
        self.text_hashes = training_text_hashes(encoder)
        self.clip_scorer = None
        if self.protocol.clip:
            self.clip_scorer = load_clip_scorer(self.protocol.clip)
            check_not_training_model(self.clip_scorer, self.text_hashes)
        self.generator, _ = build_models(config.model)
        self.source = make_source(config, split=self.protocol.split)
        # A drawn source draws its reference itself; a read one walks its split in the protocol's order.
        self.examples = None if self.source.drawn else EvalExamples(self.source, self.protocol)
        self.reference = None if self.examples is None else dataset_real_source(self.examples)
        with_words = config.model.uses_word_attention
        if self.source.embed_on_demand:
            self.table = table or EmbeddingTable.on_demand(encoder, with_words)
        else:
            captions = self.source.all_captions() if self.examples is None else self.examples.all_captions()
            self.table = embedding_table(encoder, captions, config.data.embedding_cache or None, with_words=with_words)
        self._stats = None
        self._groups: CaptionGroups | None = None

    def generator_source(self, state: Any, which: str | None = None) -> ImageSource:
        """``state``'s generator (``which``: "ema" or "raw" weights, default the protocol's) as an
        image source conditioned on the evaluation split's captions."""
        which = which or self.protocol.generator
        if which == "ema":
            variables = {"params": state.ema_params, "batch_stats": state.ema_stats}
        else:
            variables = {"params": state.g_params, "batch_stats": state.g_stats}
        name = f"{which} generator at step {int(state.step)}"
        z_dim = self.config.model.z_dim
        if self.examples is None:
            return generator_source(self.generator, variables, z_dim, self.table.text, self.protocol, name=name,
                                    source=self.source)
        return dataset_generator_source(self.generator, variables, z_dim, self.table.text, self.examples, name=name)

    def real_source(self, split: str) -> ImageSource:
        """Real images of ``split``: the ceiling every metric can reach under the protocol.
        From the protocol's split they are the examples after the reference's (disjoint from it).

        Raises:
          ConfigError: a read dataset asked for another split than the protocol's.
        """
        offset = self.protocol.num_reference if split == self.protocol.split else 0
        if self.examples is None:
            source = self.source if split == self.protocol.split else make_source(self.config, split=split)
            return drawn_real_source(source, offset)
        if split != self.protocol.split:
            raise ConfigError(f"--real on {self.protocol.dataset} scores the evaluation split "
                              f"({self.protocol.split}); got {split!r}")
        return dataset_real_source(self.examples, offset=offset)

    def prepare(self) -> None:
        """Computes the reference statistics (or reads them from the cache) and finds the caption
        groups of within-caption diversity, unless already done.

        Training calls it before its first step: a short split, an unreadable reference image or
        a broken cache file then stops the run before it has trained anything.

        Raises:
          ReferenceStatsError: the cached statistics are unreadable or belong to another spec.
          DataError: the evaluation split has too few usable images.
        """
        if self._stats is None:
            self._stats = reference_stats(self.protocol, self.network, self.mesh, self.cache_dir, self.progress,
                                          self.reference)
            n, k = self.protocol.diversity_groups, self.protocol.diversity_samples
            if n and self.examples is None:
                self._groups = drawn_caption_groups(self.source, n, k)
            elif n:
                self._groups = dataset_caption_groups(self.examples, n, k)

    def evaluate(self, source: ImageSource) -> EvalResult:
        """Scores ``source`` under the protocol; the reference statistics are computed (or read
        from the cache) at the first call, unless ``prepare`` did it, and kept."""
        start, first = time.perf_counter(), self._stats is None
        self.prepare()
        result = evaluate(source, self.protocol, self.mesh, self.network, cache_dir=self.cache_dir,
                          clip_scorer=self.clip_scorer, training_text_hashes=self.text_hashes,
                          progress=self.progress, reference=self.reference, stats=self._stats,
                          groups=self._groups)
        # The first evaluation's time includes the reference statistics, as evaluate's own does.
        return dataclasses.replace(result, seconds=time.perf_counter() - start) if first else result

    def evaluate_state(self, state: Any) -> EvalResult:
        """Every metric of ``state``'s generator (the protocol's weights: EMA or raw)."""
        return self.evaluate(self.generator_source(state))


def evaluate_workdir(workdir: str | Path, step: int | None = None, real: str | None = None,
                     num_devices: int = 0, cache_dir: str | None = None, progress: bool = True,
                     **protocol_overrides: Any) -> tuple[EvalResult, int]:
    """Evaluates ``workdir``'s checkpoint (or real images of split ``real``); returns (result, step)."""
    config = saved_config(workdir)
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    evaluator = Evaluator(config, encoder, mesh=evaluation_mesh(num_devices), cache_dir=cache_dir,
                          progress=progress, **protocol_overrides)
    if real is not None:
        return evaluator.evaluate(evaluator.real_source(real)), -1
    state = restore_state(config, workdir, encoder, step)
    return evaluator.evaluate_state(state), int(state.step)
