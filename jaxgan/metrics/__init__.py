"""Metrics for generated images.

``attributes``: text alignment on the shapes dataset, judged by an attribute classifier
trained on real images (``evaluate_text_alignment``, ``load_attribute_classifier``).

The score math, as pure functions of feature arrays (extracting the features is elsewhere):
``fid``: ``FeatureStats`` (streaming mean/covariance, saved as .npz), ``frechet_distance``.
``kid``: ``kernel_inception_distance``, unbiased polynomial-kernel MMD^2 over subsets.
``inception_score``: ``inception_score``; ``joint_probabilities`` for independent heads.
``precision_recall``: ``precision_recall``, ``precision_recall_density_coverage`` (k-NN balls).

Submodules are imported on use, so loading one metric does not pull in the others.
"""
