"""Per-example estimators of a run's metrics: each knows its value on any resample of the
run's examples, so one code path gives the interval (stats.wilson or the bootstrap) and the
paired comparison (McNemar or paired bootstrap) of every number the report prints.

Which estimator a metric gets, from the records in the run's ``examples.jsonl``:
- a per-example 0/1 outcome (pass@1, exact match, countdown accuracy, Sudoku ``solved``):
  ``binary``, the mean; Wilson interval, McNemar's exact test when paired;
- ``cell_accuracy``: ``ratio``, Σcorrect_cells / Σempty_cells pooled over puzzles (d1's number);
- any other per-example number (OWT ``entropy``, accounting ``nfe`` and ``cost``): ``mean``;
- ``gen_ppl``: ``ppl``, exp(ΣNLL / Σtokens) over per-text terms; ``mauve``: MAUVE of the
  resampled generations' features against the resampled references' features. Both need the
  scoring LM, so they are computed once per run with the run's own scorers (task config in
  ``summary.json``) and cached in ``<run>/example_scores.pt``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from boe_bench.report import stats

log = logging.getLogger(__name__)
SCORES_CACHE = "example_scores.pt"
# MAUVE refits its k-means on every resample: fewer resamples than the cheap statistics.
MAUVE_BOOT = 100


@dataclass
class Estimator:
    kind: str                     # binary | ratio | mean | ppl | mauve
    ids: list[str]
    data: dict[str, Any] = field(default_factory=dict)

    def value(self, idx: np.ndarray | None = None) -> float:
        idx = np.arange(len(self.ids)) if idx is None else idx
        d = self.data
        if self.kind in ("binary", "mean"):
            return float(d["x"][idx].mean())
        if self.kind in ("ratio", "ppl"):
            den = d["den"][idx].sum()
            if not den:
                return float("nan")
            return float(d["num"][idx].sum() / den) if self.kind == "ratio" else float(np.exp(d["num"][idx].sum() / den))
        if self.kind == "mauve":
            from boe_bench.scoring.text_metrics import mauve_score
            import torch

            buckets = d["buckets"] if d["buckets"] != "auto" else max(2, int(round(len(idx) / 10)))
            return mauve_score(torch.from_numpy(d["p"][idx]), torch.from_numpy(d["q"][idx]), num_buckets=buckets)
        raise ValueError(self.kind)

    @property
    def n(self) -> int:
        return len(self.ids)

    def boot(self) -> int:
        return MAUVE_BOOT if self.kind == "mauve" else stats.N_BOOT

    def interval(self) -> tuple[float, float]:
        """95% interval of the metric (fractions for rates, the metric's unit otherwise)."""
        if self.n == 0 or (self.kind == "mauve" and self.n < 2):
            return float("nan"), float("nan")
        if self.kind == "binary":
            return stats.wilson(float(self.data["x"].sum()), self.n)
        return stats.bootstrap(self.value, self.n, n_boot=self.boot())

    def subset(self, ids: list[str]) -> "Estimator":
        where = {i: k for k, i in enumerate(self.ids)}
        idx = np.array([where[i] for i in ids], dtype=int)
        data = {k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in self.data.items()}
        return Estimator(self.kind, list(ids), data)


def compare(a: Estimator, b: Estimator) -> dict | None:
    """a - b on the examples both ran: difference, 95% interval (paired bootstrap), p-value
    (McNemar exact for 0/1 outcomes, else the paired bootstrap's), the test's name, n."""
    common = [i for i in a.ids if i in set(b.ids)]
    if not common or a.kind != b.kind or (a.kind == "mauve" and len(common) < 2):
        return None
    a, b = a.subset(common), b.subset(common)
    lo, hi, p = stats.paired_bootstrap(a.value, b.value, len(common), n_boot=a.boot())
    result = {"delta": a.value() - b.value(), "lo": lo, "hi": hi, "p": p, "test": "paired bootstrap", "n": len(common)}
    if a.kind == "binary":
        only_a, only_b, p = stats.mcnemar_exact(a.data["x"], b.data["x"])
        result.update(p=p, test="McNemar exact", only_a=only_a, only_b=only_b)
    return result


def read_examples(run: Path) -> list[dict]:
    path = run / "examples.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_binary(values: list) -> bool:
    return bool(values) and all(isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1)) for v in values)


def estimators(run: Path, summary: dict, records: list[dict] | None = None) -> dict[str, Estimator]:
    """Metric name -> estimator for every number of ``summary['metrics']`` that the records
    determine, plus ``nfe`` and ``cost`` (per-example accounting)."""
    records = read_examples(run) if records is None else records
    ids = [r["id"] for r in records]
    if not records:
        return {}
    out: dict[str, Estimator] = {}
    for key in ("nfe", "cost_fwd_equiv"):
        if all(key in r.get("accounting", {}) for r in records):
            name = "cost" if key == "cost_fwd_equiv" else key
            out[name] = Estimator("mean", ids, {"x": np.array([r["accounting"][key] for r in records], dtype=float)})
    metrics = summary.get("metrics", {})
    for key in metrics:
        per_example = [r.get("metrics", {}).get(key) for r in records]
        if key == "cell_accuracy" and all("correct_cells" in r["metrics"] for r in records):
            out[key] = Estimator("ratio", ids, {
                "num": np.array([r["metrics"]["correct_cells"] for r in records], dtype=float),
                "den": np.array([r["metrics"]["empty_cells"] for r in records], dtype=float)})
        elif key in ("gen_ppl", "mauve"):
            continue
        elif any(v is None for v in per_example) or not all(isinstance(v, (int, float)) for v in per_example):
            continue
        elif is_binary(per_example):
            out[key] = Estimator("binary", ids, {"x": np.array(per_example, dtype=float)})
        elif key in ("correct_cells", "empty_cells"):
            continue
        else:
            out[key] = Estimator("mean", ids, {"x": np.array(per_example, dtype=float)})
    if "gen_ppl" in metrics or "mauve" in metrics:
        out.update(text_estimators(run, summary, records))
    return out


def text_estimators(run: Path, summary: dict, records: list[dict]) -> dict[str, Estimator]:
    """Per-text perplexity terms and MAUVE features with the run's own scorers (cached)."""
    import torch

    cache = run / SCORES_CACHE
    ids = [r["id"] for r in records]
    scores = torch.load(cache, weights_only=False) if cache.exists() else None
    if scores is None or scores.get("ids") != ids:
        try:
            scores = score_texts(summary, records)
        except Exception as err:  # a missing scorer must not cost the whole report
            log.warning("%s: no per-example text scores (%s: %s); Gen PPL/MAUVE intervals left out",
                        run, type(err).__name__, err)
            return {}
        torch.save(scores, cache)
    out = {}
    metrics = summary.get("metrics", {})
    if "gen_ppl" in metrics:
        out["gen_ppl"] = Estimator("ppl", ids, {"num": np.array(scores["nll"]), "den": np.array(scores["tokens"])})
    if "mauve" in metrics and scores.get("p") is not None and len(scores["p"]) == len(scores["q"]) == len(scores["mauve_ids"]):
        kept = scores["mauve_ids"]
        out["mauve"] = Estimator("mauve", kept, {"p": scores["p"], "q": scores["q"], "buckets": scores["buckets"]})
    return out


def score_texts(summary: dict, records: list[dict]) -> dict:
    """The owt task's scorers on each record: (NLL, tokens) per text and last-token features
    of each generation and its reference (examples with an empty generation are left out of
    MAUVE, as MAUVE leaves them out)."""
    from omegaconf import OmegaConf

    from boe_bench.runner import instantiate
    from boe_bench.scoring.text_metrics import last_token_features, load_scorer_lm, perplexity_terms

    task = instantiate(OmegaConf.create(summary["config"]["task"]), "task")
    samples = [r.get("answer") or "" for r in records]
    model, tokenizer = load_scorer_lm(task.ppl_model, task.scorer_device)
    terms = perplexity_terms(samples, model, tokenizer, max_length=task.max_text_length)
    result = {"ids": [r["id"] for r in records], "nll": [t[0] for t in terms], "tokens": [t[1] for t in terms],
              "p": None, "q": None, "mauve_ids": [], "buckets": task.mauve_num_buckets}
    kept = [k for k, s in enumerate(samples) if s]
    if "mauve" in summary.get("metrics", {}) and len(kept) >= 2:
        references = {d["id"]: d["reference"] for d in task.docs()}
        model, tokenizer = load_scorer_lm(task.mauve_featurizer, task.scorer_device)
        result["q"] = last_token_features([samples[k] for k in kept], model, tokenizer, task.max_text_length).numpy()
        result["p"] = last_token_features([references[records[k]["id"]] for k in kept], model, tokenizer,
                                          task.max_text_length).numpy()
        result["mauve_ids"] = [records[k]["id"] for k in kept]
    return result
