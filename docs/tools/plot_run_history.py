"""One training's metrics against its steps, from the checkpoints it kept along the way.

`reproduce_weak_vs_full.py --checkpoints DIR --keep-every STEPS` keeps the FFRM every STEPS steps as
``DIR/step_NNNNNN/VARIANT.pt``; ``--evaluate DIR/step_* DIR --output scores.json`` scores each on the
held-out clips (and with ``--train-clips N`` on training clips). Given those JSON files, and the
training's own ``--output`` for its last step, this draws held-out and training-clip AUC@30, depth tau
(median-scaled, the paper's column), depth tau after a per-view scale and shift and the predicted depth
/ baseline over the GT's (1 is right; large when the cameras bunch together) and each view's relative
depth spread over the GT's (1 is right; small when a large offset flattens the depth maps) against the step,
one colour per training, with the untrained network at step 0 where a file scored it. When the two
depth tau's part, the depth maps keep their shape while their per-view offset, which the
shift-invariant depth loss cannot see, goes wrong. Prints the same figures as a table, and with
``--mean-last N`` each training's mean (and sd) over its last N kept steps: one checkpoint's median-scaled
depth tau swings by 0.1-0.17 between neighbouring kept steps, so settings compare better on that mean.
Where the files hold a weak training and the full one of the same seed, it also prints weak / full on
held-out AUC@30 and depth tau from those means, per seed and averaged over the seeds of each weak setting
(the claim's reading). Trainings of different schedule lengths (a 10000- and a 20000-step run) are
told apart by their labels and each is paired with the sibling of its own length.

    python docs/tools/plot_run_history.py docs/results/l1_history_seed4/step_*.json docs/results/cauchy_history_seed4/scores_*.json \
        docs/results/l1_warmup_cauchy_seed4/scores_*.json \
        --output docs/history_l1_cauchy_warmup_seed4.png
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

_spec = importlib.util.spec_from_file_location("plot_weak_vs_full", Path(__file__).with_name("plot_weak_vs_full.py"))
_budget = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_budget)

METRICS = [("pose_auc30", "AUC@30"), ("depth_tau", "depth tau (median-scaled)"), ("depth_affine_tau", "depth tau (scale + shift)"),
           ("depth_to_baseline_vs_gt", "depth / baseline vs GT"), ("depth_spread_vs_gt", "depth spread vs GT")]
# 1 is right for both: a collapse to one camera centre is orders of magnitude off, and so is a depth map
# flattened by a large offset. (Rows scored before depth_spread_vs_gt existed leave its panel empty.)
LOG_SCALE = {"depth_to_baseline_vs_gt", "depth_spread_vs_gt"}
SPLITS = [("metrics", "held-out", "-"), ("training_clips", "training clips", "--")]

History = Dict[str, Dict[int, Dict[str, Optional[dict]]]]  # label -> step -> {"metrics": .., "training_clips": ..}
RATIO_METRICS = [("pose_auc30", "AUC@30"), ("depth_tau", "depth tau")]  # the claim's two columns


def schedule_steps(row: dict) -> Optional[int]:
    """The length of the schedule a row's training ran or was part of: a training's own row trained to it,
    a kept checkpoint records it (``schedule_steps``; None in checkpoints kept before it was recorded)."""
    settings = row.get("settings") or {}
    steps = settings.get("schedule_steps") if settings.get("checkpoint") else settings.get("iterations")
    return None if steps is None else int(steps)


def collect(paths: List[Path]) -> tuple:
    """({label: {step: {split: metrics or None}}}, what was left out, with why, {label: (variant, seed,
    the label without its seed, schedule length where the files hold several, else None)}). A row's step
    is the steps its checkpoint (or training) had; a row that scored the untrained network adds step 0.
    Where the files hold trainings of more than one schedule length (a 10000- and a 20000-step run of
    one seed), each label names its schedule, so their checkpoints at one step are two trainings', not
    one scored twice."""
    history: History = defaultdict(dict)
    skipped: List[str] = []
    identities: Dict[str, tuple] = {}
    rows = []
    for path in paths:
        for row in _budget.read_runs(path, skipped):
            if (row.get("settings") or {}).get("iterations") is None:
                label = _budget.run_label(row, path, False)
                skipped.append(f"{path}: {label} records no step count (a checkpoint older than the settings it keeps); left out")
                continue
            rows.append((path, row))
    # Checkpoints kept before schedule_steps was recorded (None) count as no schedule of their own.
    several_schedules = len({schedule_steps(row) for _, row in rows} - {None}) > 1
    for path, row in rows:
        settings = row["settings"]
        schedule = schedule_steps(row) if several_schedules else None  # what the pairing with a sibling must share
        suffix = ""
        if several_schedules:
            suffix = f", {schedule}-step schedule" if schedule is not None else ", schedule not recorded"
        label = _budget.run_label(row, path, False) + suffix  # a training's own row and its checkpoints' rows share it
        steps = int(settings["iterations"])
        if steps in history[label]:
            raise SystemExit(f"{path}: {label} at step {steps} is already in another file; pass each kept checkpoint's scores once")
        history[label][steps] = {split: row.get(split) for split, _, _ in SPLITS}
        if row.get("initial") is not None:
            history[label].setdefault(0, {"metrics": row["initial"], "training_clips": None})
        unseeded = {**row, "settings": {**settings, "seed": None}}
        identities[label] = (row.get("variant"), _budget.run_seed(row), _budget.run_label(unseeded, path, False) + suffix, schedule)
    return dict(history), skipped, identities


def table(history: History) -> List[dict]:
    rows = []
    for label, by_step in history.items():
        for step in sorted(by_step):
            row = {"run": label, "step": step}
            for split, _, _ in SPLITS:
                for key, _ in METRICS:
                    metrics = by_step[step].get(split)
                    row[f"{split}.{key}"] = metrics.get(key, math.nan) if metrics else math.nan
            rows.append(row)
    return rows


def _mean_sd(values: List[float]) -> tuple:
    """Mean and sample sd (nan for a single value)."""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else math.nan
    return mean, sd


def mean_last(history: History, count: int) -> List[dict]:
    """Per training, the mean and sample sd of each metric over its last ``count`` scored steps (the
    untrained step 0 never counts); the steps used are listed. A training with fewer than ``count``
    scored steps is refused, since its mean would read differently from the others'."""
    rows = []
    for label, by_step in history.items():
        steps = [s for s in sorted(by_step) if s > 0][-count:]
        if len(steps) < count:
            raise SystemExit(f"{label}: {len(steps)} scored step(s), fewer than --mean-last {count}")
        row = {"run": label, "steps": steps}
        for split, _, _ in SPLITS:
            for key, _ in METRICS:
                values = [(by_step[s].get(split) or {}).get(key) for s in steps]
                row[f"{split}.{key}"], row[f"{split}.{key}.sd"] = _mean_sd([math.nan if v is None else float(v) for v in values])
        rows.append(row)
    return rows


def sibling_ratios(means: List[dict], identities: Dict[str, tuple]) -> tuple:
    """Weak / full of the held-out means, each weak training against the full training of its seed and
    schedule length (rows: weak, full, seed, ratio_<metric>), and per weak setting the mean of those
    ratios over its seeds (rows: setting, seeds, ratio_<metric>, sd_ratio_<metric>). A weak training
    with no sibling is left out; two full trainings of one seed and schedule are refused, since the
    pairing would be a guess."""
    by_label = {m["run"]: m for m in means}
    fulls: Dict[object, str] = {}
    for label in by_label:
        variant, seed, _, schedule = identities[label]
        if variant == "full" and seed is not None:
            if (seed, schedule) in fulls:
                raise SystemExit(f"two full trainings of seed {seed} ({fulls[seed, schedule]}; {label}): pass one sibling per seed")
            fulls[seed, schedule] = label
    pairs, by_setting = [], defaultdict(list)
    for label, mean in by_label.items():
        variant, seed, setting, schedule = identities[label]
        if variant != "weak" or (seed, schedule) not in fulls:
            continue
        full = by_label[fulls[seed, schedule]]
        pair = {"weak": label, "full": fulls[seed, schedule], "seed": seed}
        for key, _ in RATIO_METRICS:
            pair[f"ratio_{key}"] = _budget.ratio(mean[f"metrics.{key}"], full[f"metrics.{key}"])
        pairs.append(pair)
        by_setting[setting].append(pair)
    summary = []
    for setting, rows in by_setting.items():
        row = {"setting": setting, "seeds": [r["seed"] for r in rows]}
        for key, _ in RATIO_METRICS:
            row[f"ratio_{key}"], row[f"sd_ratio_{key}"] = _mean_sd([r[f"ratio_{key}"] for r in rows])
        summary.append(row)
    return pairs, summary


def plot(history: History, output: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4), squeeze=False)
    for i, (label, by_step) in enumerate(history.items()):
        colour = plt.get_cmap("tab10")(i % 10)
        steps = sorted(by_step)
        for ax, (key, name) in zip(axs[0], METRICS):
            for split, split_name, style in SPLITS:
                points = [(s, by_step[s][split].get(key)) for s in steps if by_step[s].get(split) and by_step[s][split].get(key) is not None]
                if points:
                    ax.plot(*zip(*points), style, marker="o", ms=3, color=colour, label=f"{label}, {split_name}")
            ax.set_title(name)
            if key in LOG_SCALE:
                ax.set_yscale("log")
            ax.set_xlabel("training steps")
            ax.grid(alpha=0.3)
    # One legend below all panels: labels carry each training's settings, too long for inside a panel.
    handles, labels = axs[0][0].get_legend_handles_labels()
    rows = -(-len(labels) // 2)
    legend_inches = 0.2 * rows + 0.1
    fig.set_figheight(fig.get_figheight() + legend_inches)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    return _budget.save_figure(fig, output, title, bottom=legend_inches / fig.get_figheight())


def main(argv=None) -> List[dict]:
    parser = _budget.results_parser(__doc__, "run_history.png",
                                    "JSON files of one or more trainings' kept checkpoints (--evaluate ... --output) "
                                    "and of the trainings themselves (--output)")
    parser.add_argument("--mean-last", type=int, default=0, metavar="N",
                        help="also print each training's mean (sd) over its last N scored steps")
    args = parser.parse_args(argv)
    if args.mean_last < 0 or args.mean_last == 1:
        raise SystemExit("--mean-last takes 2 or more steps (0: none)")
    history, skipped, identities = collect(args.results)
    for line in skipped:
        print(line, file=sys.stderr)
    if not history:
        raise SystemExit("no row with a recorded step count in the files given")
    rows = table(history)
    header = [f"{split_name} {name}" for _, split_name, _ in SPLITS for _, name in METRICS]
    print("| run | step | " + " | ".join(header) + " |")
    print("|---|---|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['run']} | {r['step']} | " + " | ".join(f"{r[f'{split}.{key}']:.3f}" for split, _, _ in SPLITS for key, _ in METRICS) + " |")
    if args.mean_last:
        print(f"\nmean (sd) over each training's last {args.mean_last} scored steps")
        print("| run | steps | " + " | ".join(header) + " |")
        print("|---|---|" + "---|" * len(header))
        means = mean_last(history, args.mean_last)
        for r in means:
            print(f"| {r['run']} | {', '.join(map(str, r['steps']))} | "
                  + " | ".join(f"{r[f'{split}.{key}']:.3f} ({r[f'{split}.{key}.sd']:.3f})" for split, _, _ in SPLITS for key, _ in METRICS) + " |")
        pairs, summary = sibling_ratios(means, identities)
        if pairs:
            names = [name for _, name in RATIO_METRICS]
            print("\nweak / full on held-out clips, from those means (the full training of the same seed)")
            print("| weak | full | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
            for r in pairs:
                print(f"| {r['weak']} | {r['full']} | " + " | ".join(f"{r[f'ratio_{key}']:.2f}" for key, _ in RATIO_METRICS) + " |")
            print("\nmean (sd) over seeds")
            print("| weak setting | seeds | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names))
            for r in summary:
                print(f"| {r['setting']} | {', '.join(map(str, r['seeds']))} | "
                      + " | ".join(f"{r[f'ratio_{key}']:.2f}" + ("" if math.isnan(r[f'sd_ratio_{key}']) else f" ({r[f'sd_ratio_{key}']:.2f})")
                                   for key, _ in RATIO_METRICS) + " |")
    print(f"wrote {plot(history, args.output, args.title)}")
    return rows


if __name__ == "__main__":
    main()
