"""Weak vs full against the training budget, from the JSON files `reproduce_weak_vs_full.py --output` wrote.

Pairs each weak run with the supervised sibling of the same initialisation (``machine.seed``) and budget,
and draws held-out AUC@30, depth tau and the weak / full ratios against the steps, one colour per
initialisation, with the 0.9 target and the paper's 0.78 (AUC@30 on DL3DV). Prints the same pairs as a
table. Rows that did not record their settings (runs older than that) are left out unless
``--unrecorded FILE=SEED:STEPS`` says what their file ran with (no overrides, so the default, disparity,
teacher); a weak run's teacher space is the one it recorded (``settings.teacher_space``), else its
override, else that old default; runs with other overrides than the teacher's space and the seed
(ablations, tried changes) are left out and named, and so are scores of kept checkpoints (``--evaluate``
rows: a point on a training's history, drawn by ``plot_run_history.py``).

    python docs/tools/plot_weak_vs_full.py docs/results/weak_full_400scenes_*depth_teacher*.json \
        --teacher depth --output docs/weak_vs_full_budget.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

SPACE_KEY = "pipeline.datamanager.labels.simulated.space"
METRICS = [("pose_auc30", "AUC@30"), ("depth_tau", "depth tau")]
OLDER_ROWS_DEFAULT_SPACE = "disparity"  # SimulatedDepthTeacherConfig.space when settings lacked "teacher_space"
TARGET, PAPER_AUC_RATIO = 0.9, 49.4 / 63.3


def describe(row: dict, unrecorded: Optional[Tuple[int, int]] = None) -> Optional[Tuple[str, int, int, str, List[str]]]:
    """(variant, iterations, seed, teacher space, other overrides) or None where the settings were not recorded
    and ``unrecorded`` (seed, iterations) does not supply them."""
    settings = row.get("settings") or {}
    if not settings and unrecorded is not None:
        settings = {"seed": unrecorded[0], "iterations": unrecorded[1], "set": []}
    if settings.get("iterations") is None or settings.get("seed") is None:
        return None
    space, others = settings.get("teacher_space"), []
    for item in settings.get("set") or []:
        key, _, value = item.partition("=")
        if key == SPACE_KEY:
            space = space or value
        elif key != "machine.seed":
            others.append(item)
    # Rows written before runs recorded the resolved space ran with the default of that time.
    space = space or OLDER_ROWS_DEFAULT_SPACE
    return row["variant"], int(settings["iterations"]), int(settings["seed"]), space, others


def read_json(path: Path):
    """A results file as JSON, or an exit that names it (the plotting scripts read the same files)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"{path}: cannot read it as JSON ({error}); pass the files reproduce_weak_vs_full.py wrote")


def read_runs(path: Path, skipped: List[str]) -> List[dict]:
    """The runs a ``--output`` file lists; none (and a line in ``skipped``) for another file, e.g. a summary."""
    rows = read_json(path)
    if isinstance(rows, list):
        return rows
    skipped.append(f"{path}: not a list of runs (e.g. an --evaluate summary); left out")
    return []


def results_parser(doc: str, default_output: str, results_help: str = "JSON files written by reproduce_weak_vs_full.py --output"
                   ) -> argparse.ArgumentParser:
    """The arguments every plotting script takes: result files, the figure to write and its title."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help=results_help)
    parser.add_argument("--output", type=Path, default=Path(default_output))
    parser.add_argument("--title", default="")
    return parser


SEED_KEY = "machine.seed"  # already in the label as "seed N"


def run_seed(row: dict):
    """The seed a row trained from: its own, or (an --evaluate row) its checkpoint's; None if unrecorded."""
    settings = row.get("settings") or {}
    return settings.get("seed", settings.get("trained_from_seed"))


def run_label(row: dict, source: Path, several_files: bool) -> str:
    """'weak, seed 3, space=depth, reprojection_weight=2.0' (and the file where several are drawn); an
    --evaluate row is labelled by what its checkpoint trained with, or by the checkpoint's folder when
    the checkpoint is older than the settings it records."""
    settings = row.get("settings") or {}
    parts = [row.get("variant", "?")]
    seed = run_seed(row)
    if seed is not None:
        parts.append(f"seed {seed}")
    overrides = settings.get("set", settings.get("trained_set"))
    for item in overrides or []:
        key, _, value = item.partition("=")
        if key != SEED_KEY:
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    if overrides is None and settings.get("checkpoint"):
        parts.append(f"checkpoint {Path(settings['checkpoint']).parent.name}")
    if several_files:
        parts.append(source.stem)
    return ", ".join(parts)


def checkpoint_score(label: str, row: dict) -> Optional[str]:
    """Why an --evaluate row of a list file is left out, or None for a training's row. A kept checkpoint's
    score is a point on its training's history, not a training of that many steps (its learning rate had
    not decayed, or it is an average of several): plot_run_history.py draws those."""
    checkpoint = (row.get("settings") or {}).get("checkpoint")
    if not checkpoint:
        return None
    return (f"{label}: {row.get('variant')} scores checkpoint {checkpoint} "
            f"(an --evaluate row; docs/tools/plot_run_history.py draws kept checkpoints); left out")


def collect(paths: List[Path], teacher: str, unrecorded: Optional[Dict[Path, Tuple[int, int]]] = None
            ) -> Tuple[Dict[Tuple[int, int], Dict[str, dict]], List[str]]:
    """{(seed, iterations): {"weak": metrics, "full": metrics}} and what was left out, with why."""
    unrecorded = {p.resolve(): v for p, v in (unrecorded or {}).items()}
    runs: Dict[Tuple[int, int], Dict[str, dict]] = {}
    where: Dict[Tuple[int, int, str], Path] = {}
    skipped = []
    for path in paths:
        for row in read_runs(path, skipped):
            left_out = checkpoint_score(str(path), row)
            if left_out:
                skipped.append(left_out)
                continue
            described = describe(row, unrecorded.get(path.resolve()))
            if described is None:
                skipped.append(f"{path}: {row.get('variant')} has no recorded iterations / seed (an older run; "
                               f"--unrecorded {path}=SEED:STEPS says what it ran with); left out")
                continue
            variant, iterations, seed, space, others = described
            if variant not in ("weak", "full"):
                continue
            if others:
                skipped.append(f"{path}: {variant} seed {seed} {iterations} steps has other overrides {others}; left out")
                continue
            if variant == "weak" and space != teacher:  # the sibling reads no teacher, so its space does not matter
                continue
            key = (seed, iterations)
            if (seed, iterations, variant) in where:
                raise SystemExit(f"{path}: {variant} seed {seed} at {iterations} steps is also in "
                                 f"{where[(seed, iterations, variant)]}; pass each run once")
            where[(seed, iterations, variant)] = path
            runs.setdefault(key, {})[variant] = row["metrics"]
    return runs, skipped


def ratio(weak: float, full: float) -> float:
    """weak / full; NaN where the sibling scored 0 (no ratio to speak of)."""
    return weak / full if full > 0 else float("nan")


def ratios(runs: Dict[Tuple[int, int], Dict[str, dict]]) -> List[dict]:
    """One row per (seed, iterations) that has both variants, sorted by seed then steps."""
    table = []
    for (seed, iterations), pair in sorted(runs.items()):
        if "weak" not in pair or "full" not in pair:
            continue
        row = {"seed": seed, "iterations": iterations}
        for key, _ in METRICS:
            row[f"weak_{key}"], row[f"full_{key}"] = pair["weak"][key], pair["full"][key]
            row[f"ratio_{key}"] = ratio(pair["weak"][key], pair["full"][key])
        table.append(row)
    return table


def plot(runs: Dict[Tuple[int, int], Dict[str, dict]], table: List[dict], output: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({seed for seed, _ in runs})
    colours = {seed: plt.get_cmap("tab10")(i % 10) for i, seed in enumerate(seeds)}
    fig, axs = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, name) in zip(axs[:2], METRICS):
        for seed in seeds:
            for variant, style in (("weak", "o-"), ("full", "s--")):
                points = sorted((it, pair[variant][key]) for (s, it), pair in runs.items() if s == seed and variant in pair)
                if points:
                    ax.plot(*zip(*points), style, color=colours[seed], ms=5, label=f"{variant}, seed {seed}")
        ax.set_xlabel("training steps")
        ax.set_title(f"held-out {name}")
        ax.grid(alpha=0.3)
    axs[0].legend(fontsize=7, ncol=2)
    ax = axs[2]
    for seed in seeds:
        rows = [r for r in table if r["seed"] == seed]
        for (key, name), style in zip(METRICS, ("o-", "^:")):
            if rows:
                ax.plot([r["iterations"] for r in rows], [r[f"ratio_{key}"] for r in rows], style, color=colours[seed],
                        ms=5, label=f"{name}, seed {seed}")
    ax.axhline(TARGET, color="black", lw=1, label=f"target {TARGET}")
    ax.axhline(PAPER_AUC_RATIO, color="grey", lw=1, ls="--", label=f"paper, AUC@30 ({PAPER_AUC_RATIO:.2f})")
    ax.set_xlabel("training steps")
    ax.set_title("weak / full (o AUC@30, ^ depth tau)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, output, title)


def save_figure(fig, output: Path, title: str, bottom: float = 0.0) -> Path:
    """``bottom``: the figure's fraction kept free below the panels (for a figure-wide legend)."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def main(argv=None) -> List[dict]:
    parser = results_parser(__doc__, "weak_vs_full_budget.png")
    parser.add_argument("--teacher", choices=["depth", "disparity"], default="depth",
                        help="the simulated teacher's space of the weak runs to draw (runs with the other are left out)")
    parser.add_argument("--unrecorded", nargs="*", default=[], metavar="FILE=SEED:STEPS",
                        help="the seed and steps of a results file written before runs recorded their settings")
    args = parser.parse_args(argv)
    unrecorded = {}
    for item in args.unrecorded:
        path, _, numbers = item.rpartition("=")
        try:
            seed, steps = (int(n) for n in numbers.split(":"))
        except ValueError:
            raise SystemExit(f"--unrecorded {item}: expected FILE=SEED:STEPS, e.g. r.json=42:3000")
        if Path(path) not in args.results:
            raise SystemExit(f"--unrecorded {item}: {path} is not among the results files given")
        unrecorded[Path(path)] = (seed, steps)
    runs, skipped = collect(args.results, args.teacher, unrecorded)
    for line in skipped:
        print(line, file=sys.stderr)
    table = ratios(runs)
    if not runs:
        raise SystemExit(f"no weak or full run with recorded settings and a {args.teacher}-space teacher in the files given")
    print("| seed | steps | weak AUC@30 | full AUC@30 | weak / full AUC@30 | weak depth tau | full depth tau | weak / full depth tau |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['seed']} | {r['iterations']} | {r['weak_pose_auc30']:.3f} | {r['full_pose_auc30']:.3f} | {r['ratio_pose_auc30']:.2f} "
              f"| {r['weak_depth_tau']:.3f} | {r['full_depth_tau']:.3f} | {r['ratio_depth_tau']:.2f} |")
    unpaired = sorted(f"seed {s} at {it} steps ({', '.join(pair)} only)" for (s, it), pair in runs.items() if len(pair) < 2)
    if unpaired:
        print("drawn without a ratio (no run of the other variant given): " + "; ".join(unpaired))
    print(f"wrote {plot(runs, table, args.output, args.title)}")
    return table


if __name__ == "__main__":
    main()
