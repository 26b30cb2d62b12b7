"""Datasets: the procedural shapes dataset (more sources come with the input pipeline)."""
