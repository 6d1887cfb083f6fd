"""How good is BoE's signal on *your* model? ``python -m boe_bench.diagnose``.

    python -m boe_bench.diagnose model=puzzle_mdm task=sudoku_grid sampler=boe steps_every=5 limit=5

Decodes ``limit`` documents with the sampler, composed exactly as ``python -m boe_bench``
composes a run (same config groups, same task/schedule/model building), and at every
``steps_every``-th step measures, for every candidate i of the step's ranking:

(a) ``tis``: TIS_i as the sampler used it (BoE's live-row or dense gradient, or boe_exact's
    exact drop), and ``score``, the gated score it ranked by;
(b) ``soft_drop_S``: the exact change S(0) - S(1; i) of the surrogate entropy S (over the
    sampler's targets, i left out) when i alone is fed its soft write, which is what TIS
    linearises (Theorem 3.1): one full forward per candidate;
(c) ``hard_drop_S`` and ``hard_drop_total``: the change of S, and of the total masked
    entropy (i's own entropy included: eq. 9's objective), when i alone is revealed with the
    token drawn for it (the sampler's token where it chose i): one full forward per candidate;
(d) ``tis_dense``: TIS through plain autograd over every row, where the sampler's TIS comes
    from the live-row pass (ActiveQueryAttention) with targets = masked \\ C.

A sampler outside the BoE family (confidence, lookum, ...) decodes as usual while a default
BoE ranking of the same state supplies the candidates, TIS and targets: its own choice is
then scored by the same yardsticks (a choice outside BoE's candidates is measured too, with
no TIS). Adaptive and remasking samplers are refused (their steps have no fixed budget).
The diagnostic forwards are not counted in the decode's NFE.

Writes under ``out_dir`` (default runs/diagnostics/<task>/<model>/<sampler>/, untracked):
candidates.csv (one row per candidate and step), steps.csv (per step: Spearman rank
correlations, top-b agreement, regrets), summary.md / summary.json, and diagnose.png.
Per step, "regret" is mean(c over the b best candidates by c) - mean(c over the chosen b),
with c = hard_drop_total measured one reveal at a time.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from boe_bench.errors import ConfigError
from boe_bench.runner import instantiate, resolve_schedule, shard_docs
from boe_bench.samplers.base import Accounting, DecodeState, StopCriterion, entropy
from boe_bench.samplers.boe import BoESampler, soft_write_shift
from boe_bench.samplers.boe_exact import BoEExactSampler, surrogate_drops, write_entropies

# (x, y) pairs whose per-step Spearman correlation the summary reports, with their labels.
PAIRS = [
    ("tis", "soft_drop_S", "TIS vs exact soft-write drop of S (what TIS linearises)"),
    ("tis", "hard_drop_S", "TIS vs hard-reveal drop of S"),
    ("tis", "hard_drop_total", "TIS vs hard-reveal drop of total masked entropy"),
    ("score", "hard_drop_total", "gated score vs hard-reveal drop of total"),
    ("tis_dense", "soft_drop_S", "dense TIS vs exact soft-write drop of S"),
    ("tis", "tis_dense", "live-row TIS vs dense TIS"),
    ("soft_drop_S", "hard_drop_total", "exact soft-write drop vs hard-reveal drop of total"),
    ("confidence", "hard_drop_total", "confidence vs hard-reveal drop of total"),
]
# Who picks the b candidates whose regret is reported (by hard_drop_total).
PICKERS = [("chosen", "the sampler's choice"), ("tis", "top-b by TIS"), ("score", "top-b by gated score"),
           ("soft_drop_S", "top-b by exact soft-write drop"), ("confidence", "top-b by confidence"),
           ("random", "a uniform random b (expected)")]


def spearman(a, b) -> float:
    """Spearman rank correlation with average ranks for ties; NaN when either side is
    constant or fewer than two finite pairs remain."""
    frame = pd.DataFrame({"a": a, "b": b}).replace([math.inf, -math.inf], math.nan).dropna()
    if len(frame) < 2 or frame["a"].nunique() < 2 or frame["b"].nunique() < 2:
        return math.nan
    return float(frame["a"].rank().corr(frame["b"].rank()))


class Probe:
    """Wraps a sampler's ``step`` (and, for BoE, its ``rank``) to measure sampled steps."""

    def __init__(self, sampler, model, every: int, chunk: int):
        if sampler.adaptive or sampler.remasks:
            raise ConfigError(f"diagnose needs a sampler with a fixed budget per step and no remasking; "
                              f"{sampler.name} is {'adaptive' if sampler.adaptive else 'remasking'}")
        if every < 1:
            raise ConfigError(f"steps_every must be >= 1, got {every}")
        self.sampler, self.model, self.every, self.chunk = sampler, model, every, chunk
        self.boe = isinstance(sampler, BoESampler)
        # Outside the BoE family a default BoE ranking supplies candidates, TIS and targets.
        self.ranker = sampler if self.boe else BoESampler(temperature=sampler.temperature)
        self.rows: list[dict] = []
        self.doc_ids: list = []
        self._step, self._rank, self._last = sampler.step, None, None
        sampler.step = self.step
        if self.boe:
            self._rank = sampler.rank
            sampler.rank = self.rank

    def rank(self, *args, **kwargs) -> dict:
        self._last = self._rank(*args, **kwargs)
        return self._last

    def step(self, model, state: DecodeState, window: Tensor, budget: Tensor) -> None:
        index = state.extras.get("diagnose_steps", 0)
        state.extras["diagnose_steps"] = index + 1
        if index % self.every:
            return self._step(model, state, window, budget)
        before = shadow(state)
        ranking = None
        if not self.boe:
            self.ranker.total_steps = state.extras["schedule"].steps
            ranking = self.ranker.rank(model, shadow(state), window, budget, index)
        self._last = None
        self._step(model, state, window, budget)
        ranking = ranking if ranking is not None else self._last
        chosen = (state.x != before.x) & before.active[:, None]
        self.measure(before, ranking, chosen, budget, index, state.x)

    def measure(self, state: DecodeState, ranking: dict, chosen: Tensor, budget: Tensor, step: int,
                x_after: Tensor) -> None:
        model = self.model
        cand = ranking["candidates"] & state.active[:, None]
        ranked = (cand.sum(-1) > budget.to(cand.device)) & state.active
        evaluated = (cand | chosen) & ranked[:, None]
        if not evaluated.any():
            return
        time = state.masked_fraction(budget) if model.time_conditioned else None
        with torch.no_grad():
            base = model(state.x, attention_mask=state.attention_mask, time=time)
        before = entropy(base)
        # Soft writes as the ranking built them; a chosen position outside the candidates
        # gets its own, from the same distribution (tempered alike).
        conf_logits = self.ranker.confidence_logits(model, ranking["logits"])
        probs = conf_logits.softmax(-1)
        delta = ranking["delta"].clone()
        extra = evaluated & ~cand
        if extra.any():
            delta = delta + soft_write_shift(model, probs, extra, self.ranker.soft_write_tau)
        tokens = torch.where(chosen, x_after, ranking["tokens"])
        rows, positions = evaluated.nonzero(as_tuple=True)
        targets = ranking["targets"]
        after_soft = write_entropies(model, state.x, state.attention_mask, time, rows, positions, delta=delta,
                                     chunk=self.chunk)
        after_hard = write_entropies(model, state.x, state.attention_mask, time, rows, positions, tokens=tokens,
                                     chunk=self.chunk)
        soft_s = surrogate_drops(before, after_soft, rows, positions, targets)
        hard_s = surrogate_drops(before, after_hard, rows, positions, targets)
        masked = state.masked
        still = masked[rows].clone()
        still[torch.arange(len(rows)), positions] = False
        hard_total = (before * masked).sum(-1)[rows] - (after_hard * still).sum(-1)
        dense = self.dense_tis(state, time, evaluated, targets, delta, ranking)
        confidence = probs.gather(-1, tokens[..., None]).squeeze(-1)
        own_entropy = entropy(conf_logits)
        masked_count = masked.sum(-1)
        for n, (b, i) in enumerate(zip(rows.tolist(), positions.tolist())):
            in_cand = bool(cand[b, i])
            self.rows.append({
                "doc": self.doc_ids[b], "step": step, "budget": int(budget[b]), "masked": int(masked_count[b]),
                "n_candidates": int(cand[b].sum()), "position": i, "chosen": bool(chosen[b, i]),
                "in_candidates": in_cand, "confidence": float(confidence[b, i]),
                "entropy": float(own_entropy[b, i]),
                "tis": float(ranking["tis"][b, i]) if in_cand else math.nan,
                "score": float(ranking["score"][b, i]) if in_cand else math.nan,
                "tis_dense": float(dense[b, i]) if dense is not None and in_cand else math.nan,
                "soft_drop_S": float(soft_s[n]), "hard_drop_S": float(hard_s[n]),
                "hard_drop_total": float(hard_total[n]),
            })

    def dense_tis(self, state, time, evaluated, targets, delta, ranking) -> Tensor | None:
        """(d): TIS with every row live, for the same targets and soft writes; where the ranking's
        TIS already is the dense one (rows = all) it is reused, and where it is not a gradient
        (boe_exact) or its S is per-candidate (leave-one-out) there is no single dense TIS."""
        ranker = self.ranker
        if isinstance(ranker, BoEExactSampler) or ranker.targets != "rest":
            return None
        if ranker.rows == "all":
            return ranking["tis"]
        embeds, row_logits = BoESampler.dense_forward(self.model, state, time)
        with torch.enable_grad():
            tis = ranker.dense_tis(self.model, row_logits, embeds, evaluated, targets, delta)
        return tis.detach()


def shadow(state: DecodeState) -> DecodeState:
    """A copy of the canvas with its own (discarded) accounting and no random stream, so
    measuring never changes what the decode counts or draws."""
    return DecodeState(x=state.x.clone(), attention_mask=state.attention_mask, prompt_length=state.prompt_length,
                       mask_id=state.mask_id, accounting=[Accounting(seq_len=state.seq_len) for _ in state.accounting],
                       active=state.active.clone(), generator=None, extras={"schedule": state.extras.get("schedule")})


def per_step(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (document, step): Spearman of every pair, top-b agreements and regrets."""
    out = []
    for (doc, step), g in frame.groupby(["doc", "step"], sort=False):
        b = int(g["budget"].iloc[0])
        cand = g[g["in_candidates"]]
        row = {"doc": doc, "step": step, "budget": b, "masked": int(g["masked"].iloc[0]), "n_candidates": len(cand)}
        for x, y, _ in PAIRS:
            row[f"rho[{x},{y}]"] = spearman(cand[x], cand[y])
        best_total = g["hard_drop_total"].nlargest(b).mean()

        def top(column: str) -> pd.DataFrame:
            return cand.nlargest(b, column) if cand[column].notna().any() else cand.iloc[:0]

        for name, _ in PICKERS:
            if name == "chosen":
                picked = g[g["chosen"]]["hard_drop_total"].mean()
            elif name == "random":
                picked = cand["hard_drop_total"].mean()
            else:
                picked = top(name)["hard_drop_total"].mean()
            row[f"regret[{name}]"] = best_total - picked
        best_set = set(g.nlargest(b, "hard_drop_total")["position"])
        row["agree[tis,soft_drop_S]"] = len(set(top("tis")["position"]) & set(top("soft_drop_S")["position"])) / b
        row["agree[chosen,best_total]"] = len(set(g[g["chosen"]]["position"]) & best_set) / b
        out.append(row)
    return pd.DataFrame(out)


def summarise(frame: pd.DataFrame, steps: pd.DataFrame, header: dict) -> tuple[dict, str]:
    """summary.json's content and summary.md's text."""
    summary = {**header, "candidate_rows": len(frame), "measured_steps": len(steps), "pairs": {}, "regret": {},
               "agreement": {}}
    lines = [f"# BoE signal diagnostics: {header['sampler']} on {header['model']} / {header['task']}", "",
             f"{header['docs']} documents, every step k with k mod {header['steps_every']} = 0 of {header['steps']}; "
             f"{len(steps)} measured steps, {len(frame)} candidate measurements. Decode: "
             f"{header['metric']} = {header['score']}, mean NFE {header['mean_nfe']:.1f}, cost "
             f"{header['mean_cost_fwd_equiv']:.1f} forward-equivalents (diagnostic forwards not counted).", "",
             "## Spearman rank correlation over one step's candidates", "",
             "| pair | mean | median | min | max | steps |", "|---|---|---|---|---|---|"]
    for x, y, label in PAIRS:
        rho = steps[f"rho[{x},{y}]"].dropna() if len(steps) else pd.Series(dtype=float)
        stats = {"mean": rho.mean(), "median": rho.median(), "min": rho.min(), "max": rho.max(), "steps": len(rho)}
        summary["pairs"][f"{x}~{y}"] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in stats.items()}
        if len(rho):
            lines.append(f"| {label} | {stats['mean']:.3f} | {stats['median']:.3f} | {stats['min']:.3f} "
                         f"| {stats['max']:.3f} | {len(rho)} |")
        else:
            lines.append(f"| {label} | – | – | – | – | 0 |")
    lines += ["", "## Agreement and regret", "",
              "Top-b agreement: share of the b picks two rankings have in common. Regret (nats): mean "
              "hard-reveal drop of total masked entropy of the b best candidates minus that of the b picked "
              "(each candidate revealed alone; 0 is the best any rule can do on this measure).", "",
              "| quantity | mean |", "|---|---|"]
    for key, label in (("agree[tis,soft_drop_S]", "top-b by TIS = top-b by exact soft-write drop"),
                       ("agree[chosen,best_total]", "sampler's choice = top-b by hard-reveal drop of total")):
        value = float(steps[key].mean()) if len(steps) else math.nan
        summary["agreement"][key] = None if math.isnan(value) else value
        lines.append(f"| {label} | {value:.3f} |")
    for name, label in PICKERS:
        value = float(steps[f"regret[{name}]"].mean()) if len(steps) else math.nan
        summary["regret"][name] = None if math.isnan(value) else value
        lines.append(f"| regret of {label} | {value:.3f} |")
    return summary, "\n".join(lines) + "\n"


def plot(frame: pd.DataFrame, steps: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    cand = frame[frame["in_candidates"].astype(bool)]
    axes[0].scatter(cand["soft_drop_S"], cand["tis"], s=6, alpha=0.5)
    lo = min(cand["soft_drop_S"].min(), cand["tis"].min(), 0) if len(cand) else 0
    hi = max(cand["soft_drop_S"].max(), cand["tis"].max(), 0) if len(cand) else 1
    axes[0].plot([lo, hi], [lo, hi], color="grey", linewidth=0.8)
    axes[0].set_xlabel("exact soft-write drop of S (nats)")
    axes[0].set_ylabel("TIS as used")
    axes[0].set_title("TIS against what it linearises")
    axes[1].scatter(cand["hard_drop_total"], cand["tis"], s=6, alpha=0.5, color="tab:orange")
    axes[1].set_xlabel("hard-reveal drop of total masked entropy (nats)")
    axes[1].set_ylabel("TIS as used")
    axes[1].set_title("TIS against the hard reveal")
    data, labels = [], []
    for x, y, _ in PAIRS[:3] + PAIRS[4:5]:
        rho = steps[f"rho[{x},{y}]"].dropna() if len(steps) else pd.Series(dtype=float)
        if len(rho):
            data.append(rho.values)
            labels.append(f"{x}\nvs {y}")
    if data:
        axes[2].boxplot(data)
        axes[2].set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    axes[2].axhline(0, color="grey", linewidth=0.8)
    axes[2].set_ylabel("Spearman over one step's candidates")
    axes[2].set_title("Per-step rank agreement")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def diagnose(cfg: DictConfig) -> dict:
    """Run the decode with measurements and write the files; returns the summary."""
    task = instantiate(cfg.task, "task")
    schedule = resolve_schedule(cfg, task)
    sampler = instantiate(cfg.sampler, "sampler")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    docs = shard_docs(task.docs(), cfg.limit)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model, "model")
    probe = Probe(sampler, model, cfg.steps_every, cfg.chunk)
    stop = StopCriterion(model.tokenizer, task.until, model.eos_ids)
    records, accounting = [], []
    for start in range(0, len(docs), cfg.batch_size):
        batch = docs[start : start + cfg.batch_size]
        probe.doc_ids = [doc["id"] for doc in batch]
        init = [task.initial_generation(doc, model.tokenizer) for doc in batch]
        output = sampler.generate(model, [task.prompt_ids(doc, model.tokenizer) for doc in batch], schedule,
                                  stop=stop, seed=cfg.seed + start, gen_init=None if init[0] is None else init)
        for doc, text, acc in zip(batch, output.texts, output.accounting):
            metrics = task.score(doc, text)
            metrics.pop("answer", None)
            records.append({"metrics": metrics})
            accounting.append(acc)
        if cfg.progress:
            print(f"diagnose: {start + len(batch)}/{len(docs)} documents, {len(probe.rows)} measurements",
                  file=sys.stderr, flush=True)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(probe.rows, columns=["doc", "step", "budget", "masked", "n_candidates", "position", "chosen",
                                              "in_candidates", "confidence", "entropy", "tis", "score", "tis_dense",
                                              "soft_drop_S", "hard_drop_S", "hard_drop_total"])
    steps = per_step(frame) if len(frame) else pd.DataFrame()
    metrics = task.aggregate(records)
    header = {"sampler": choice("sampler", sampler.name), "model": choice("model", str(cfg.model.get("_target_"))),
              "task": task.name,
              "docs": len(docs), "steps": schedule.steps, "steps_every": cfg.steps_every,
              "metric": task.primary_metric, "score": metrics.get(task.primary_metric), "metrics": metrics,
              "mean_nfe": sum(a.nfe for a in accounting) / max(len(accounting), 1),
              "mean_cost_fwd_equiv": sum(a.cost_fwd_equiv for a in accounting) / max(len(accounting), 1),
              "config": OmegaConf.to_container(cfg, resolve=True)}
    summary, text = summarise(frame, steps, header)
    frame.to_csv(out / "candidates.csv", index=False)
    steps.to_csv(out / "steps.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "summary.md").write_text(text)
    plot(frame, steps, out / "diagnose.png", f"{sampler.name}: {task.name}, {schedule.steps} steps")
    return summary


def choice(group: str, fallback: str) -> str:
    """The config option chosen for ``group`` (e.g. model=puzzle_mdm), when Hydra composed the run."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get(group) or fallback)
    return fallback


@hydra.main(version_base="1.3", config_path="../configs", config_name="diagnose")
def main(cfg: DictConfig) -> None:
    try:
        summary = diagnose(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"diagnose: {summary['measured_steps']} steps, {summary['candidate_rows']} candidates -> {cfg.out_dir}")


if __name__ == "__main__":
    main()
