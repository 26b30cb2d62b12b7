"""Metrics for generated images.

``attributes``: text alignment on the shapes dataset, judged by an attribute classifier
trained on real images (``evaluate_text_alignment``, ``load_attribute_classifier``).
Submodules are imported on use, so loading one metric does not pull in the others.
"""
