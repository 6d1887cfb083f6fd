"""Experiments beyond one evaluation job, importable and run as modules, each with its settings
in ``configs/<name>/default.yaml`` (key=value overrides on the command line; ``config.py``):

- ``testbed``: every sampler on the self-trained puzzle model, entropy trajectories, TIS
  against the true one-step entropy drop (``python -m boe_bench.experiments.testbed``);
- ``diagnostics_sweep``: solve rate against steps on the puzzle model, and the table of
  ``python -m boe_bench.diagnose`` runs (``python -m boe_bench.experiments.diagnostics_sweep``);
- ``code_eval_parity``: our sandbox's HumanEval/MBPP verdicts beside HF evaluate's code_eval
  (``python -m boe_bench.experiments.code_eval_parity``).

Each writes under ``reports/`` (untracked) unless ``out=results/...`` is given.
"""
