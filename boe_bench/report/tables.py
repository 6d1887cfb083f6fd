"""Paper-layout tables: samplers as rows, task x length as columns, ours beside the paper's."""
from __future__ import annotations

import pandas as pd

MISSING = "–"


def rank_marks(column: pd.Series, better: str | None = "max") -> dict:
    """Row -> 'best' / 'second' among the non-missing cells of a column (``better``: "max" or
    "min"; None marks nothing); tied cells share a mark, so a column of equal scores is all bold."""
    if better is None:
        return {}
    values = sorted(set(column.dropna().round(6)), reverse=better == "max")
    labels = dict(zip(values, ("best", "second")))
    return {row: labels[value] for row, value in column.dropna().round(6).items() if value in labels}


def column_key(task: str, gen_length, steps, with_steps: bool) -> str:
    return f"{task}@{int(gen_length)}" + (f"/s{int(steps)}" if with_steps else "")


def secondary_metrics(task: str) -> tuple[tuple[str, str, str | None], ...]:
    """What the task's paper table shows beside its primary metric (Task.table_metrics)."""
    from boe_bench.tasks import TASKS

    return TASKS.get(task).table_metrics if task in TASKS else ()


def secondary_columns(frame: pd.DataFrame) -> tuple[list[pd.DataFrame], dict[str, str | None]]:
    """Per task, one sampler x "<column> <label>" frame for each secondary metric the runs
    recorded, in the metric's own unit, and each such column's better direction."""
    pieces, better = [], {}
    for task, runs in frame.groupby("task"):
        for key, label, direction in secondary_metrics(task):
            values = f"metric:{key}"
            if values not in runs or runs[values].isna().all():
                continue
            keyed = runs.assign(column=[f"{c} {label}" for c in runs["column"]])
            pieces.append(keyed.pivot_table(index="sampler", columns="column", values=values, aggfunc="mean"))
            better.update({c: direction for c in keyed["column"]})
    return pieces, better


def paper_column(row) -> str:
    """The column a paper number belongs in: its task's secondary column if it names one."""
    base = column_key(row.task, row.gen_length, 0, False)
    labels = {key: label for key, label, _ in secondary_metrics(row.task)}
    return f"{base} {labels[row.metric]}" if row.metric in labels else base


def grid(frame: pd.DataFrame, paper: pd.DataFrame, axes: dict) -> tuple[pd.DataFrame, dict, list[str], dict]:
    """Our scores (percent) by sampler x column, then any secondary metrics (own unit); the
    paper's by (sampler, column); row order; each column's better direction."""
    with_steps = frame.groupby(["task", "gen_length", "sampler"])["steps"].nunique().gt(1).any() if len(frame) else False
    frame = frame.assign(column=[column_key(t, g, s, with_steps) for t, g, s in
                                 zip(frame["task"], frame["gen_length"], frame["steps"])],
                         percent=100 * frame["score"].astype(float))
    ours = frame.pivot_table(index="sampler", columns="column", values="percent", aggfunc="mean", dropna=False)
    extra, better = secondary_columns(frame)
    ours = pd.concat([ours, *extra], axis=1)
    scores = paper[paper["metric"] != "runtime"]
    reference = {(r.sampler, paper_column(r)): float(r.value) for r in scores.itertuples()}
    rows = list(dict.fromkeys([*axes.get("sampler", []), *ours.index, *(s for s, _ in reference)]))

    def numeric_order(column: str):
        base, _, label = column.partition(" ")
        task, rest = base.split("@")
        return (task, *(int(part.lstrip("s")) for part in rest.split("/")), label)

    columns = sorted(ours.columns, key=numeric_order)
    if not with_steps:
        lengths = axes.get("gen_length") or sorted({int(g) for g in frame["gen_length"]}) or []
        expected = [column_key(t, g, 0, False) for t in axes.get("task", []) for g in lengths]
        columns = list(dict.fromkeys([*expected, *columns, *(c for _, c in reference)]))
    return ours.reindex(index=rows, columns=columns), reference, rows, better


def cell_text(value, reference, digits: int = 1) -> str:
    text = MISSING if pd.isna(value) else f"{value:.{digits}f}"
    if reference is not None:
        text += f" ({reference:.1f}, {MISSING if pd.isna(value) else f'{value - reference:+.1f}'})"
    return text


def runtime_text(hours, reference) -> str:
    text = MISSING if pd.isna(hours) else f"{hours:.3g}"
    return text + (f" ({reference:.2f})" if reference is not None else "")


def table(frame: pd.DataFrame, paper: pd.DataFrame, axes: dict) -> tuple[str, str]:
    """Markdown and LaTeX; ours in percent, then (paper, ours - paper) where the paper has the
    cell; secondary metrics (Table 4's Gen PPL, entropy) in their own unit; best bold, second
    underlined per column, by the column's direction; NFE, cost and wall-clock per sampler."""
    scores, reference, rows, better = grid(frame, paper, axes)
    runtime = {r.sampler: float(r.value) for r in paper[paper["metric"] == "runtime"].itertuples()}
    per_sampler = frame.groupby("sampler")[["nfe", "cost"]].mean().reindex(rows)
    hours = frame.groupby("sampler")["wall_s"].sum().reindex(rows) / 3600
    marks = {c: rank_marks(scores[c], better.get(c, "max")) for c in scores.columns}
    md_rows, tex_rows = [], []
    for sampler in rows:
        md, tex = [sampler], [sampler.replace("_", "\\_")]
        for column in scores.columns:
            text = cell_text(scores.loc[sampler, column], reference.get((sampler, column)), 2 if column in better else 1)
            mark = marks[column].get(sampler)
            md.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
            tex_text = text.replace(MISSING, "--")
            tex.append(f"\\textbf{{{tex_text}}}" if mark == "best" else
                       f"\\underline{{{tex_text}}}" if mark == "second" else tex_text)
        extra = [MISSING if pd.isna(per_sampler.loc[sampler, k]) else f"{per_sampler.loc[sampler, k]:.1f}"
                 for k in ("nfe", "cost")]
        extra.append(runtime_text(hours.loc[sampler], runtime.get(sampler)))
        md_rows.append("| " + " | ".join(md + extra) + " |")
        tex_rows.append(" & ".join(tex + [e.replace(MISSING, "--") for e in extra]) + " \\\\")
    header = ["sampler", *scores.columns, "NFE", "cost (fwd)", "wall h"]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *md_rows])
    latex = "\n".join([f"\\begin{{tabular}}{{l{'c' * (len(header) - 1)}}}", "\\toprule",
                       " & ".join(h.replace("_", "\\_").replace("@", " L=") for h in header) + " \\\\",
                       "\\midrule", *tex_rows, "\\bottomrule", "\\end{tabular}"])
    return markdown, latex
