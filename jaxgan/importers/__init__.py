"""Importers of published PyTorch checkpoints (DF-GAN, GALIP) into jaxgan workdirs.

``torch_files`` reads the release files safely (tensors only, a restricted unpickler for the
DAMSM vocabulary) and checks their keys; the per-model modules map names and layouts.
"""
