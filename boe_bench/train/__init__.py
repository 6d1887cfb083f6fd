"""Trainers of the models this project ships (deterministic under a seed, CPU-sized)."""
