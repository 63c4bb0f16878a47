"""Held-out pose and depth per trajectory kind of the synthetic scenes (forward walk, orbit, look-at set),
from the JSON files `reproduce_weak_vs_full.py --output` wrote (rows keep ``by_trajectory`` since it
scores clips per kind; older rows are named and left out).

One panel per metric (AUC@30, mean pairwise rotation error, depth tau), one group of bars per kind, one
bar per training; on the rotation panel a black tick marks what a model scores that gives every view
of a clip one rotation (identity's): a bar below its tick has learnt rotations there. Printed: the same
figures as a table, and weak / full per kind for each seed with both a weak training and its sibling.

    python docs/tools/plot_by_trajectory.py docs/results/by_trajectory_40_heldout_scenes_cpu.json \
        --output docs/by_trajectory.png
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Dict, List, Tuple

_spec = importlib.util.spec_from_file_location("plot_weak_vs_full", Path(__file__).with_name("plot_weak_vs_full.py"))
_budget = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_budget)

METRICS = [("pose_auc30", "AUC@30"), ("rotation_error_deg", "rotation error (deg)"), ("depth_tau", "depth tau")]
IDENTITY = "identity_rotation_error_deg"
Entry = Tuple[str, dict, Dict[str, dict]]  # (label, row, {kind: held-out metrics})


def collect(paths: List[Path]) -> Tuple[List[Entry], List[str]]:
    """Each row with held-out metrics per trajectory kind, and the rows left out, with why."""
    entries, skipped = [], []
    for path in paths:
        for row in _budget.read_runs(path, skipped):
            name = _budget.run_label(row, path, len(paths) > 1)
            kinds = (row.get("by_trajectory") or {}).get("metrics")
            if not kinds:
                skipped.append(f"{path}: {name} has no metrics per trajectory kind (scored before rows kept them, "
                               f"or scenes without a trajectory in scene.json); left out")
                continue
            entries.append((name, row, kinds))
    return entries, skipped


def pairing_key(row: dict) -> tuple:
    """A weak training and its sibling pair up when trained from one seed and scored on one held-out set."""
    return _budget.run_seed(row), (row.get("settings") or {}).get("data")


def ratios(entries: List[Entry]) -> Tuple[List[Tuple[str, str, Dict[str, Dict[str, float]]]], List[str]]:
    """[(weak label, full label, {kind: {metric: weak / full}})] for every weak training whose seed has
    one supervised sibling among the entries scored on the same data (the kinds both were scored on),
    and the weak trainings left unpaired because their seed has several siblings there."""
    fulls: Dict[object, List[Entry]] = {}
    for entry in entries:
        if entry[1].get("variant") == "full":
            fulls.setdefault(pairing_key(entry[1]), []).append(entry)
    out, unpaired = [], []
    for name, row, kinds in entries:
        key = pairing_key(row)
        if row.get("variant") != "weak" or key[0] is None or key not in fulls:
            continue
        if len(fulls[key]) > 1:
            unpaired.append(f"{name}: seed {key[0]} has {len(fulls[key])} supervised siblings here; no ratio")
            continue
        full_name, _, full_kinds = fulls[key][0]
        out.append((name, full_name, {kind: {metric: kinds[kind][metric] / full_kinds[kind][metric] if full_kinds[kind][metric] > 0 else float("nan")
                                             for metric in ("pose_auc30", "depth_tau")}
                                      for kind in kinds if kind in full_kinds}))
    return out, unpaired


def plot(entries: List[Entry], output: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = sorted({kind for _, _, by_kind in entries for kind in by_kind})
    fig, axs = plt.subplots(1, len(METRICS), figsize=(5.2 * len(METRICS), 4.2), squeeze=False)
    width = 0.8 / len(entries)
    for ax, (key, name) in zip(axs[0], METRICS):
        for i, (label, _, by_kind) in enumerate(entries):
            xs = [k + (i - (len(entries) - 1) / 2) * width for k, kind in enumerate(kinds) if kind in by_kind]
            values = [by_kind[kind][key] for kind in kinds if kind in by_kind]
            ax.bar(xs, values, width, color=plt.get_cmap("tab10")(i % 10), label=label)
            if key == "rotation_error_deg":
                identity = [by_kind[kind][IDENTITY] for kind in kinds if kind in by_kind]
                tick = ax.scatter(xs, identity, marker="_", s=200, color="black", zorder=3)
        ax.set_xticks(np.arange(len(kinds)))
        ax.set_xticklabels([f"{kind}\n({max(e[2][kind]['clips'] for e in entries if kind in e[2])} clips)" for kind in kinds])
        ax.set_title(name)
        ax.grid(axis="y", alpha=0.3)
    axs[0][0].legend(fontsize=7, loc="upper right")  # AUC@30 is low away from the forward walks
    axs[0][1].legend([tick], ["one rotation for every view"], fontsize=7)
    return _budget.save_figure(fig, output, title)


def main(argv=None) -> List[Entry]:
    args = _budget.results_parser(__doc__, "by_trajectory.png").parse_args(argv)
    entries, skipped = collect(args.results)
    for line in skipped:
        print(line, file=sys.stderr)
    if not entries:
        raise SystemExit("no row with metrics per trajectory kind in the files given (score checkpoints again with "
                         "reproduce_weak_vs_full.py --evaluate to get them)")
    print("| training | trajectory | clips | AUC@30 | rotation err (deg) | identity's (deg) | depth tau |")
    print("|---|---|---|---|---|---|---|")
    for name, _, by_kind in entries:
        for kind, m in by_kind.items():
            print(f"| {name} | {kind} | {m['clips']} | {m['pose_auc30']:.3f} | {m['rotation_error_deg']:.1f} | {m[IDENTITY]:.1f} | {m['depth_tau']:.3f} |")
    paired, unpaired = ratios(entries)
    for line in unpaired:
        print(line, file=sys.stderr)
    for weak, full, by_kind in paired:
        figures = "; ".join(f"{kind} AUC@30 {r['pose_auc30']:.2f}, depth tau {r['depth_tau']:.2f}" for kind, r in by_kind.items())
        print(f"{weak} / {full}: {figures}")
    print(f"wrote {plot(entries, args.output, args.title)}")
    return entries


if __name__ == "__main__":
    main()
