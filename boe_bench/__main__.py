"""``python -m boe_bench task=gsm8k sampler=boe``: one evaluation job, composed by Hydra."""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from boe_bench.errors import ConfigError


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from boe_bench.runner import run

    try:
        summary = run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        # In a sweep one refused cell must not stop the others: Hydra marks it failed, runs
        # the rest, then exits non-zero naming it. A re-run redoes only unfinished cells.
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        sys.exit(2)
    score = summary["score"]
    print(
        f"{summary['task']['task']}: {summary['primary_metric']}={score if score is None else round(score, 4)} "
        f"n={summary['n']} mean_nfe={summary['mean_nfe']:.1f} mean_cost={summary['mean_cost_fwd_equiv']:.2f} "
        f"wall={summary['job_wall_s']:.1f}s -> {cfg.out_dir}"
    )


if __name__ == "__main__":
    main()
