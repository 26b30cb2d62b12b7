"""Metrics for generated images.

``attributes``: text alignment on the shapes dataset, judged by an attribute classifier
trained on real images (``evaluate_text_alignment``, ``load_attribute_classifier``).

The score math, as pure functions of feature arrays (extracting the features is elsewhere):
``fid``: ``FeatureStats`` (streaming mean/covariance, saved as .npz), ``frechet_distance``.
``kid``: ``kernel_inception_distance``, unbiased polynomial-kernel MMD^2 over subsets.
``inception_score``: ``inception_score``; ``joint_probabilities`` for independent heads.
``precision_recall``: ``precision_recall``, ``precision_recall_density_coverage`` (k-NN balls).

The evaluation (``jaxgan eval``; see docs/evaluation.md, "The protocol"):
``protocol``: ``EvalProtocol``, everything that changes a number, hashed; reference statistics cache.
``features``: feature networks (shapes attribute classifier, FID InceptionV3, CLIP image tower).
``inception``: InceptionV3 in the FID variant (Flax), its weight file and pytorch-fid converter.
``clip_score``: CLIP score from a HF CLIPModel directory (towers: ``jaxgan.text.clip_hf.load_clip``).
``sharded``: per-example functions over all devices, independent of the device count.
``evaluate``: image sources (a generator, real images), feature extraction, every metric.
``alignment``: the 432-combination text-alignment report of a run.
``fidelity``: shape fidelity, mask IoU and colour error against the ideal object (shapes).
``diversity``: within-caption diversity, spread and pairwise distance within a caption's samples.

Submodules are imported on use, so loading one metric does not pull in the others.
"""
