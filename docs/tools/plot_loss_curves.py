"""The loss terms of trainings against the step, from the JSON files `reproduce_weak_vs_full.py --output`
wrote: each trained row keeps ``loss_curve``, its loss terms and median match error averaged over 100
windows of the run. One panel per term (a weak training draws its depth and reprojection terms, a
supervised sibling its point and camera terms; both draw the total), one line per training (a log
axis where a term spans a decade). Read beside the held-out table, it says whether a training that
scored badly failed to go down (e.g. stalled after its first steps) or went down to a worse place.
Rows without a curve (trainings recorded before rows kept one, ``--evaluate`` rows) are named and left
out.

    python docs/tools/plot_loss_curves.py docs/results/weak_full_400scenes_10000_seed4_cpu.json \
        --output docs/loss_curves_seed4.png
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import List, Tuple

_spec = importlib.util.spec_from_file_location("plot_weak_vs_full", Path(__file__).with_name("plot_weak_vs_full.py"))
_budget = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_budget)

MATCH_ERROR = "reprojection_median_error"  # reproduce_weak_vs_full.MATCH_ERROR_KEY (degrees, or pixels for the pixel residual)
RADIAL_ERROR = "reprojection_median_radial_error"  # reproduce_weak_vs_full.RADIAL_ERROR_KEY (with a radial residual only)
UNITS = {MATCH_ERROR: "degrees; pixels for the pixel residual", RADIAL_ERROR: "|log distance ratio|, ~ relative distance error"}


def collect(paths: List[Path]) -> Tuple[List[Tuple[str, List[dict]]], List[str]]:
    """[(label, curve)] for each row with a curve, and the rows left out, with why."""
    curves, skipped = [], []
    for path in paths:
        for row in _budget.read_runs(path, skipped):
            name = _budget.run_label(row, path, len(paths) > 1)
            if not row.get("loss_curve"):
                skipped.append(f"{path}: {name} has no loss_curve (trained before rows kept one, or an --evaluate row); left out")
                continue
            curves.append((name, row["loss_curve"]))
    return curves, skipped


def terms_of(curves: List[Tuple[str, List[dict]]]) -> List[str]:
    """The terms any curve has, total first, the median match errors (angle, then radial) last."""
    keys = {key for _, curve in curves for point in curve for key in point if key != "step"}
    order = lambda key: (key != "loss_total", key in UNITS, key == RADIAL_ERROR, key)
    return sorted(keys, key=order)


def plot(curves: List[Tuple[str, List[dict]]], output: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = terms_of(curves)
    columns = min(3, len(terms))
    rows = math.ceil(len(terms) / columns)
    fig, axs = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, (name, _) in enumerate(curves)}
    for ax, term in zip(axs.flat, terms):
        for name, curve in curves:
            points = [(p["step"], p[term]) for p in curve if term in p]
            if points:
                ax.plot(*zip(*points), color=colours[name], lw=1.2, label=name)
        # A positive term that spans a decade or more gets a log axis, so its late steps are readable too.
        values = [p[term] for _, curve in curves for p in curve if term in p and math.isfinite(p[term])]
        if values and min(values) > 0 and max(values) >= 10 * min(values):
            ax.set_yscale("log")
        ax.set_title(term + (f"\n({UNITS[term]})" if term in UNITS else ""))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in list(axs.flat)[len(terms):]:
        ax.axis("off")
    axs.flat[0].legend(fontsize=7)
    return _budget.save_figure(fig, output, title)


def main(argv=None) -> List[Tuple[str, List[dict]]]:
    args = _budget.results_parser(__doc__, "loss_curves.png").parse_args(argv)
    curves, skipped = collect(args.results)
    for line in skipped:
        print(line, file=sys.stderr)
    if not curves:
        raise SystemExit("no training with a loss_curve in the files given (rows recorded before reproduce_weak_vs_full.py "
                         "kept one have none; train again to draw it)")
    for name, curve in curves:
        last = curve[-1]
        figures = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step")
        print(f"{name}: {len(curve)} windows to step {last['step']}; last window: {figures}")
    print(f"wrote {plot(curves, args.output, args.title)}")
    return curves


if __name__ == "__main__":
    main()
