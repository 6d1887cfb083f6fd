"""Experiments beyond one evaluation job, importable and run as modules:

- ``testbed``: every sampler on the self-trained puzzle model, entropy trajectories, TIS
  against the true one-step entropy drop (``python -m boe_bench.experiments.testbed``);
- ``diagnostics_sweep``: solve rate against steps on the puzzle model, and the table of
  ``python -m boe_bench.diagnose`` runs (``python -m boe_bench.experiments.diagnostics_sweep``).

Each writes under ``reports/`` (untracked) unless ``--out results/...`` is given.
"""
