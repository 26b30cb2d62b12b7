"""``jaxgan eval --workdir W``: every metric of a trained run under a pinned protocol.

Loads the checkpoint (latest, or ``--step``), generates ``--num-samples`` images over all
devices, and prints FID, KID, IS, precision/recall/density/coverage, text alignment and (with
``--clip DIR``) CLIP score, each with the protocol hash. Writes
``W/eval/step_NNNNNN-HASH.json``. ``--real SPLIT`` scores real images of a split instead of
the generator: the ceiling every metric can reach under the same protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxgan.config import Config, ConfigError
from jaxgan.metrics.evaluate import (EvalResult, ImageSource, evaluate, format_metrics, generator_source,
                                     real_source)
from jaxgan.metrics.protocol import EvalProtocol
from jaxgan.metrics.sharded import evaluation_mesh
from jaxgan.workdir import restore_state, saved_config


def protocol_for(config: Config, **overrides: Any) -> EvalProtocol:
    """The run's evaluation protocol: ``config.eval`` with ``overrides`` (None values ignored)."""
    e = config.eval
    fields = dict(dataset=config.data.dataset, data_seed=config.data.seed, split=e.split,
                  num_samples=e.num_samples, num_reference=e.num_reference or e.num_samples,
                  resolution=config.model.resolution, features=e.features, generator=e.generator,
                  truncation=e.truncation, seed=e.seed, clip=e.clip,
                  fit="" if config.data.dataset == "shapes" else config.data.fit)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return EvalProtocol(**fields)


def training_text_hashes(encoder: Any) -> list[str]:
    """Text-tower hashes of the models a run trains with (its frozen conditioning encoder)."""
    from jaxgan.metrics.clip_score import text_tower_sha256

    params = getattr(encoder, "params", None)
    return [text_tower_sha256(params)] if params is not None else []


class DatasetEvaluation:
    """What evaluating on a dataset other than shapes needs, built once per run: the split's
    examples in the protocol's order and the embedding table of their captions (the frozen-
    embedding cache's entry, shared with later evaluations)."""

    def __init__(self, config: Config, protocol: EvalProtocol, encoder: Any):
        import dataclasses

        from jaxgan.data import make_source
        from jaxgan.data.embeddings import embedding_table
        from jaxgan.metrics.dataset_eval import EvalExamples, dataset_real_source
        from jaxgan.models import uses_word_attention

        split = dataclasses.replace(config, data=dataclasses.replace(config.data, split=protocol.split))
        self.examples = EvalExamples(make_source(split), protocol)
        self.embed = embedding_table(encoder, self.examples.all_captions(), config.data.embedding_cache or None,
                                     with_words=uses_word_attention(config.model))
        self.reference = dataset_real_source(self.examples)


def run_source(config: Config, state: Any, which: str, protocol: EvalProtocol, encoder: Any,
               embed: Any = None, dataset: DatasetEvaluation | None = None) -> ImageSource:
    """The run's generator (EMA or raw weights of ``state``) as an image source; ``dataset``
    (required for datasets other than shapes) gives its captions and their embeddings."""
    from jaxgan.data.pipeline import CaptionEmbeddingCache
    from jaxgan.models import build_models, uses_word_attention

    generator, _ = build_models(config.model)
    if which == "ema":
        variables = {"params": state.ema_params, "batch_stats": state.ema_stats}
    else:
        variables = {"params": state.g_params, "batch_stats": state.g_stats}
    name = f"{which} generator at step {int(state.step)}"
    if protocol.dataset != "shapes":
        from jaxgan.metrics.dataset_eval import dataset_generator_source

        dataset = dataset or DatasetEvaluation(config, protocol, encoder)
        return dataset_generator_source(generator, variables, config.model.z_dim, dataset.embed.text,
                                        dataset.examples, name=name)
    embed = embed or CaptionEmbeddingCache(encoder, with_words=uses_word_attention(config.model))
    return generator_source(generator, variables, config.model.z_dim, embed.text, protocol, name=name)


def evaluate_workdir(workdir: str | Path, step: int | None = None, real: str | None = None,
                     num_devices: int = 0, cache_dir: str | None = None, progress: bool = True,
                     **protocol_overrides: Any) -> tuple[EvalResult, int]:
    """Evaluates ``workdir``'s checkpoint (or real images of split ``real``); returns (result, step)."""
    from jaxgan.text import load_text_encoder

    config = saved_config(workdir)
    protocol = protocol_for(config, **protocol_overrides)
    mesh = evaluation_mesh(num_devices)
    encoder = load_text_encoder(config.text.encoder, config.text.max_length or None)
    dataset = DatasetEvaluation(config, protocol, encoder) if protocol.dataset != "shapes" else None
    reference = dataset.reference if dataset else None
    if real is not None and dataset is not None:
        if real != protocol.split:
            raise ConfigError(f"--real on {protocol.dataset} scores the evaluation split ({protocol.split}); "
                              f"got {real!r}")
        from jaxgan.metrics.dataset_eval import dataset_real_source

        # Disjoint from the reference: the usable examples after the reference's.
        source = dataset_real_source(dataset.examples, offset=protocol.num_reference)
        result = evaluate(source, protocol, mesh, cache_dir=cache_dir, reference=reference,
                          training_text_hashes=training_text_hashes(encoder), progress=progress)
        return result, -1
    if real is not None:
        # Disjoint from the reference when it is the same split: examples after the reference's.
        offset = protocol.num_reference if real == protocol.split else 0
        source = real_source(real, protocol.data_seed, protocol.resolution, offset)
        result = evaluate(source, protocol, mesh, cache_dir=cache_dir,
                          training_text_hashes=training_text_hashes(encoder), progress=progress)
        return result, -1
    state = restore_state(config, workdir, encoder, step)
    source = run_source(config, state, protocol.generator, protocol, encoder, dataset=dataset)
    result = evaluate(source, protocol, mesh, cache_dir=cache_dir, reference=reference,
                      training_text_hashes=training_text_hashes(encoder), progress=progress)
    return result, int(state.step)


def print_result(result: EvalResult, step: int) -> None:
    """The metrics table, with the protocol hash on every line that others may quote."""
    p = result.protocol.protocol
    where = f"step {step}" if step >= 0 else "real images"
    print(f"{result.source}: {p.num_samples} samples, features {p.features.partition(':')[0]}, "
          f"{result.num_devices} device(s), {result.seconds:.1f}s")
    print(f"protocol {result.protocol.hash} ({where})")
    for name, text in format_metrics(result.metrics).items():
        print(f"  {name:20s} {text:>12s}")
