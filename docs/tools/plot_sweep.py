"""Weak / full against one setting's value (e.g. the reprojection weight) at one training budget, over
initialisations and repeated trainings, from the JSON files `reproduce_weak_vs_full.py` wrote.

Reads both of its outputs: the list of runs ``--output`` writes after training, and the held-out summaries
assembled from ``--evaluate`` runs (``{"runs": {name: [rows]}}``, whose rows say what their checkpoint was
trained with in ``settings.trained_set``). A weak run's value is its ``--set KEY=VALUE``, else ``--default``
(the config's value, which runs without the override trained with). Each weak training is divided by the
mean of its initialisation's supervised siblings at the same budget (the sibling reads neither teacher nor
reprojection loss, so the swept setting does not change it). Repeated trainings of one seed and value are
all kept and averaged; the same run passed twice (identical figures) is an error. Runs with other
overrides than the swept key, the teacher's space and the seed are left out and named, and so are scores of
kept checkpoints that are not a whole training: a list's ``--evaluate`` rows (points on a training's history,
which ``plot_run_history.py`` draws) and a summary's rows scored from a checkpoint before the end of its
schedule or from an average of checkpoints. Summary rows scored
from checkpoints that predate ``trained_set`` are left out unless ``--unrecorded NAME=SEED[:VALUE]`` says
what the run called NAME trained with (no VALUE: the default; its teacher: ``--teacher``). Each mean over
seeds comes with the seeds' standard deviation; ``--seeds`` keeps only the initialisations named, so that
values trained at different sets of seeds can be compared on the seeds they share.

    python docs/tools/plot_sweep.py docs/results/*10000*.json --steps 10000 \
        --sweep pipeline.model.loss.reprojection_weight --default 0.5 --output docs/reprojection_weight_sweep.png
"""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from statistics import mean, stdev
from pathlib import Path
from typing import Dict, List, Optional, Tuple

_spec = importlib.util.spec_from_file_location("plot_weak_vs_full", Path(__file__).with_name("plot_weak_vs_full.py"))
_budget = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_budget)
METRICS, TARGET, PAPER_AUC_RATIO = _budget.METRICS, _budget.TARGET, _budget.PAPER_AUC_RATIO

Run = Tuple[str, int, Optional[float], Dict[str, float], str]  # variant, seed, swept value (None for full), metrics, source


def rows_of(path: Path, unrecorded: Dict[str, Tuple[int, Optional[float]]], sweep: str, teacher: str
            ) -> List[Tuple[str, Optional[str], dict]]:
    """(label, summary run name or None, row) for every run in a file of either format; evaluate rows get
    the training's settings."""
    data = _budget.read_json(path)
    if isinstance(data, list):
        return [(f"{path}", None, row) for row in data]
    if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
        raise SystemExit(f"{path}: neither a list of runs nor a summary with a 'runs' mapping")
    out = []
    for name, rows in data["runs"].items():
        for row in rows:
            settings = row.get("settings") or {}
            trained = {"iterations": settings.get("iterations")}  # no seed: describe() leaves it out
            for key in ("schedule_steps", "averaged_steps"):  # what says the checkpoint is not a whole training
                if settings.get(key) is not None:
                    trained[key] = settings[key]
            if settings.get("trained_set") is not None and settings.get("trained_from_seed") is not None:
                trained.update(seed=settings["trained_from_seed"], set=settings["trained_set"],
                               teacher_space=settings.get("trained_teacher_space"))
            elif name in unrecorded:
                seed, value = unrecorded[name]
                trained.update(seed=seed, teacher_space=teacher, set=[] if value is None else [f"{sweep}={value}"])
            out.append((f"{path}:{name}", name, {**row, "settings": trained}))
    return out


def collect(paths: List[Path], sweep: str, default: float, steps: int, teacher: str,
            unrecorded: Optional[Dict[str, Tuple[int, Optional[float]]]] = None,
            seeds: Optional[List[int]] = None) -> Tuple[List[Run], List[str], set]:
    """The runs at ``steps`` (of ``seeds`` only, when given), what was left out and why, and the names of
    the summaries' runs."""
    runs: List[Run] = []
    skipped: List[str] = []
    names = set()
    for path in paths:
        for label, name, row in rows_of(path, unrecorded or {}, sweep, teacher):
            names.add(name)
            settings = row.get("settings") or {}
            if settings.get("iterations") not in (None, steps):
                continue
            if settings.get("averaged_steps"):
                skipped.append(f"{label}: {row.get('variant')} scores an average of the checkpoints at steps "
                               f"{settings['averaged_steps']}, not a training of {steps} steps; left out")
                continue
            if settings.get("schedule_steps") not in (None, settings.get("iterations")):
                skipped.append(f"{label}: {row.get('variant')} scores a checkpoint at step {settings['iterations']} of a "
                               f"{settings['schedule_steps']}-step schedule, not a training of {steps} steps; left out")
                continue
            left_out = _budget.checkpoint_score(label, row) if name is None else None  # a summary's rows are final checkpoints'
            if left_out:
                skipped.append(left_out)
                continue
            described = _budget.describe(row)
            if described is None:
                skipped.append(f"{label}: {row.get('variant')} does not say what it trained with (seed, steps, --set; "
                               f"--unrecorded NAME=SEED[:VALUE] supplies it for a summary's run); left out")
                continue
            variant, _, seed, space, others = described
            if variant not in ("weak", "full") or (seeds is not None and seed not in seeds):
                continue
            value, rest = default, []
            for item in others:
                key, _, text = item.partition("=")
                if key == sweep:
                    try:
                        value = float(text)
                    except ValueError:
                        raise SystemExit(f"{label}: {item} is not a number")
                else:
                    rest.append(item)
            if rest:
                skipped.append(f"{label}: {variant} seed {seed} has other overrides {rest}; left out")
                continue
            if variant == "weak" and space != teacher:
                continue
            metrics = {key: float(row["metrics"][key]) for key, _ in METRICS}
            if variant == "full":
                value = None  # the sibling has no reprojection loss or teacher: one pool per seed
            for other in runs:
                if other[:4] == (variant, seed, value, metrics):
                    raise SystemExit(f"{label}: {variant} seed {seed} has the same figures as {other[4]}; pass each run once")
            runs.append((variant, seed, value, metrics, label))
    return runs, skipped, names


def table_of(runs: List[Run]) -> List[dict]:
    """One row per (value, seed) with a weak training and a sibling, then one per value: the mean over seeds."""
    full = defaultdict(list)
    weak = defaultdict(list)
    for variant, seed, value, metrics, _ in runs:
        (full[seed] if variant == "full" else weak[(value, seed)]).append(metrics)
    rows = []
    for value in sorted({v for v, _ in weak}):
        per_seed = []
        for seed in sorted(s for v, s in weak if v == value):
            if seed not in full:
                continue
            row = {"value": value, "seed": seed, "weak_runs": len(weak[(value, seed)]), "full_runs": len(full[seed])}
            for key, _ in METRICS:
                w, f = mean([m[key] for m in weak[(value, seed)]]), mean([m[key] for m in full[seed]])
                row[f"weak_{key}"], row[f"full_{key}"] = w, f
                row[f"ratio_{key}"] = _budget.ratio(w, f)
                row[f"ratios_{key}"] = [_budget.ratio(m[key], f) for m in weak[(value, seed)]]
            per_seed.append(row)
        rows += per_seed
        if per_seed:
            summary = {"value": value, "seed": "mean", "weak_runs": sum(r["weak_runs"] for r in per_seed),
                       "full_runs": sum(r["full_runs"] for r in per_seed), "seeds": len(per_seed)}
            for key, _ in METRICS:
                for part in ("weak", "full", "ratio"):
                    summary[f"{part}_{key}"] = mean([r[f"{part}_{key}"] for r in per_seed])
                # How far seeds disagree: with three or four seeds a mean moves by about sd / sqrt(n).
                summary[f"sd_ratio_{key}"] = stdev([r[f"ratio_{key}"] for r in per_seed]) if len(per_seed) > 1 else None
            rows.append(summary)
    return rows


def plot(table: List[dict], output: Path, sweep: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in table if r["seed"] != "mean"})
    colours = {seed: plt.get_cmap("tab10")(i % 10) for i, seed in enumerate(seeds)}
    fig, axs = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4.5), sharey=True)
    for ax, (key, name) in zip(axs, METRICS):
        for seed in seeds:
            rows = [r for r in table if r["seed"] == seed]
            ax.plot([r["value"] for r in rows], [r[f"ratio_{key}"] for r in rows], "o-", color=colours[seed], ms=5,
                    alpha=0.6, label=f"seed {seed}")
            for r in rows:  # each training where a seed was trained more than once
                if len(r[f"ratios_{key}"]) > 1:
                    ax.plot([r["value"]] * len(r[f"ratios_{key}"]), r[f"ratios_{key}"], "x", color=colours[seed], ms=6)
        means = [r for r in table if r["seed"] == "mean" and r["seeds"] > 1]  # one seed's "mean" is that seed's point
        ax.plot([r["value"] for r in means], [r[f"ratio_{key}"] for r in means], "D-", color="black", lw=2, ms=6,
                label="mean over seeds (n: how many)")
        for r in means:
            ax.annotate(f"n={r['seeds']}", (r["value"], r[f"ratio_{key}"]), textcoords="offset points", xytext=(6, -12), fontsize=8)
        ax.axhline(TARGET, color="black", lw=1, ls=":", label=f"target {TARGET}")
        if key == "pose_auc30":
            ax.axhline(PAPER_AUC_RATIO, color="grey", lw=1, ls="--", label=f"paper ({PAPER_AUC_RATIO:.2f})")
        values = sorted({r["value"] for r in table})
        if values and min(values) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.set_xlabel(sweep)
        ax.set_title(f"weak / full, held-out {name} (x: single trainings)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _budget.save_figure(fig, output, title)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    parser = _budget.results_parser(__doc__, "sweep.png", "JSON files written (or assembled) from reproduce_weak_vs_full.py")
    parser.add_argument("--sweep", required=True, help="the --set key whose value is the x axis")
    parser.add_argument("--default", type=float, required=True, help="its value in runs that did not override it")
    parser.add_argument("--steps", type=int, required=True, help="the training budget to compare at")
    parser.add_argument("--teacher", choices=["depth", "disparity"], default="depth")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="only these initialisations, e.g. the seeds every value was trained at, to compare values on the same seeds")
    parser.add_argument("--unrecorded", nargs="*", default=[], metavar="NAME=SEED[:VALUE]",
                        help="what a summary's run NAME trained with, where its rows predate trained_set")
    args = parser.parse_args(argv)
    unrecorded = {}
    for item in args.unrecorded:
        name, _, numbers = item.partition("=")
        seed, _, value = numbers.partition(":")
        try:
            unrecorded[name] = (int(seed), float(value) if value else None)
        except ValueError:
            raise SystemExit(f"--unrecorded {item}: expected NAME=SEED or NAME=SEED:VALUE, e.g. seed1_10000=1:2.0")
    runs, skipped, names = collect(args.results, args.sweep, args.default, args.steps, args.teacher, unrecorded, args.seeds)
    unknown = sorted(set(unrecorded) - names)
    if unknown:
        raise SystemExit(f"--unrecorded names runs that no summary given holds: {', '.join(unknown)}")
    for line in skipped:
        print(line, file=sys.stderr)
    table = table_of(runs)
    if not table:
        raise SystemExit(f"no weak training at {args.steps} steps with a sibling of the same seed in the files given")
    print(f"| {args.sweep} | seed | weak runs | full runs | weak AUC@30 | full AUC@30 | weak / full AUC@30 "
          f"| weak depth tau | full depth tau | weak / full depth tau |")
    print("|---|---|---|---|---|---|---|---|---|---|")

    def spread(r, key):  # the mean rows' sd over seeds
        return f" (sd {r[f'sd_ratio_{key}']:.3f})" if r.get(f"sd_ratio_{key}") is not None else ""

    for r in table:
        seed = f"mean of {r['seeds']}" if r["seed"] == "mean" else r["seed"]
        print(f"| {r['value']:g} | {seed} | {r['weak_runs']} | {r['full_runs']} | {r['weak_pose_auc30']:.3f} | "
              f"{r['full_pose_auc30']:.3f} | {r['ratio_pose_auc30']:.3f}{spread(r, 'pose_auc30')} | {r['weak_depth_tau']:.3f} | "
              f"{r['full_depth_tau']:.3f} | {r['ratio_depth_tau']:.3f}{spread(r, 'depth_tau')} |")
    alone = sorted({(v, s) for variant, s, v, _, _ in runs if variant == "weak"} - {(r["value"], r["seed"]) for r in table})
    if alone:
        print("left out, no sibling of the same seed at this budget: " + "; ".join(f"seed {s} at {v:g}" for v, s in alone))
    print(f"wrote {plot(table, args.output, args.sweep, args.title)}")
    return table


if __name__ == "__main__":
    main()
