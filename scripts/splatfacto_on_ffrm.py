"""splatfacto on the FFRM's output, on a GPU: the end of the COLMAP-free pipeline, measured.

For one scene folder (``images/``, optionally a ground-truth ``transforms.json`` beside them, as the
synthetic scenes have) this trains nerfstudio's splatfacto on

- ``<name>``: the dataset ``reliev3r-process-data images`` writes with each ``--checkpoint NAME=PATH``
  (FFRM poses and intrinsics, initial points from ``sparse_pc.ply``), read as
  ``ns-train splatfacto reliev3r-dataset --data OUT`` reads it (no open3d needed);
- ``<name>-inline``: the ``reliev3r-data`` dataparser (the FFRM run inside ns-train) with nerfstudio's
  camera optimiser refining the poses (``SO3xR3``), for the first checkpoint;
- ``gt-poses``: the scene's own transforms.json when it has one (exact poses; splatfacto's random
  initial points, since the scene ships no point cloud): the ceiling for the same images.

Each run uses nerfstudio's split (every 10th image held out) and its held-out metrics, each with its
own poses for the held-out views, as ``ns-eval`` reports them. It prints a table, writes JSON and a
figure (one held-out view as each run renders it).

    python scripts/splatfacto_on_ffrm.py --scene SCENE --checkpoint weak=weak.pt full=full.pt \
        --iterations 3000 --output splat.json --figure splat.png [--lpips-stand-in]

splatfacto builds LPIPS at start-up, and LPIPS downloads AlexNet weights; on a machine without network
access pass ``--lpips-stand-in``: LPIPS is replaced by a constant and no LPIPS figure is reported (PSNR
and SSIM do not depend on it). Needs CUDA (gsplat's kernels).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce_weak_vs_full import release_event_writers, setup_trainer  # noqa: E402


def install_lpips_stand_in() -> None:
    import torchmetrics.image.lpip as lpip_module

    class LPIPSStandIn(torch.nn.Module):
        """A constant: lets splatfacto start offline. Nothing reported comes from it."""

        def forward(self, a, b):
            return torch.zeros((), device=a.device)

    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda *args, **kwargs: LPIPSStandIn()


def splatfacto_config(name: str, output: Path, iterations: int):
    from nerfstudio.configs.method_configs import method_configs

    config = copy.deepcopy(method_configs["splatfacto"])
    config.experiment_name = name
    config.output_dir = output / "outputs"
    config.max_num_iterations = iterations
    config.steps_per_save = iterations
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.set_timestamp()
    return config


def train_and_evaluate(config, render_index: int = 0) -> tuple:
    trainer = setup_trainer(config)
    torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    pipeline = trainer.pipeline
    metrics = pipeline.get_average_eval_image_metrics()
    datamanager = pipeline.datamanager
    pipeline.eval()  # get_average_eval_image_metrics leaves it in training mode, where splatfacto densifies
    with torch.no_grad():
        camera = datamanager.eval_dataset.cameras[render_index : render_index + 1].to(pipeline.device)
        rgb = pipeline.model.get_outputs_for_camera(camera)["rgb"].clamp(0, 1).cpu().numpy()
        image = datamanager.cached_eval[render_index]["image"][..., :3]
        reference = (image.float() / (255.0 if image.dtype == torch.uint8 else 1.0)).cpu().numpy()
    result = {"psnr": float(metrics["psnr"]), "ssim": float(metrics["ssim"]),
              "train_seconds": seconds, "ms_per_step": 1000.0 * seconds / config.max_num_iterations,
              "gaussians": int(pipeline.model.num_points), "train_images": len(datamanager.train_dataset),
              "eval_images": len(datamanager.eval_dataset)}
    release_event_writers()
    del trainer
    torch.cuda.empty_cache()
    return result, rgb, reference


def process(images: Path, checkpoint: Path, out: Path) -> Path:
    from reliev3r_ns.cli.process_data import ProcessImages

    return ProcessImages(data=images, output_dir=out, checkpoint=checkpoint).main()


def draw(figure: Path, reference: np.ndarray, renders: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("held-out image", reference, None)] + [(name, rgb, row) for name, (rgb, row) in renders.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0))
    for axis, (title, image, row) in zip(np.atleast_1d(axes), panels):
        axis.imshow(np.clip(image, 0, 1))
        axis.set_title(title if row is None else f"{title}\nPSNR {row['psnr']:.1f} (mean held-out)", fontsize=9)
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="a folder with images/ (and optionally a GT transforms.json)")
    parser.add_argument("--checkpoint", nargs="+", required=True, metavar="NAME=PATH", help="FFRM checkpoints (reliev3r-export-ffrm)")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--inline-iterations", type=int, default=None, help="for the reliev3r-data run (default: --iterations; 0 skips it)")
    parser.add_argument("--workdir", type=Path, default=Path("splatfacto_on_ffrm"))
    parser.add_argument("--output", type=Path, default=None, help="JSON results")
    parser.add_argument("--figure", type=Path, default=None, help="PNG: one held-out view as each run renders it")
    parser.add_argument("--lpips-stand-in", action="store_true", help="replace LPIPS (AlexNet download) by a constant; no LPIPS is reported")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("splatfacto needs CUDA (gsplat's kernels); run this on a machine with an NVIDIA GPU")
    images = args.scene / "images"
    if not images.is_dir():
        raise SystemExit(f"{args.scene}: no images/ folder")
    from reliev3r_ns.cli import named_checkpoints

    checkpoints = named_checkpoints(args.checkpoint)
    if args.lpips_stand_in:
        install_lpips_stand_in()
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from reliev3r_ns.process.dataparser import PlyfileNerfstudioDataParserConfig, Reliev3rDataParserConfig

    # A rerun starts clean, but only what this script writes is removed: --workdir may be a folder
    # that holds other things.
    for part in ("datasets", "outputs", "processed"):
        shutil.rmtree(args.workdir / part, ignore_errors=True)
    runs = {}
    for name, checkpoint in checkpoints.items():
        dataset = process(images, checkpoint, args.workdir / "datasets" / name)
        config = splatfacto_config(name, args.workdir, args.iterations)
        # `ns-train splatfacto reliev3r-dataset --data OUT`: nerfstudio-data reading sparse_pc.ply without open3d
        config.pipeline.datamanager.dataparser = PlyfileNerfstudioDataParserConfig()
        config.data = config.pipeline.datamanager.data = dataset
        runs[name] = config
    inline_iterations = args.iterations if args.inline_iterations is None else args.inline_iterations
    if inline_iterations:
        name, checkpoint = next(iter(checkpoints.items()))
        config = splatfacto_config(f"{name}-inline", args.workdir, inline_iterations)
        config.pipeline.datamanager.dataparser = Reliev3rDataParserConfig(
            data=images, checkpoint=checkpoint, processed_cache=args.workdir / "processed")
        config.pipeline.datamanager.data = images
        config.pipeline.model.camera_optimizer.mode = "SO3xR3"
        runs[f"{name}-inline"] = config
    if (args.scene / "transforms.json").is_file():
        config = splatfacto_config("gt-poses", args.workdir, args.iterations)
        config.pipeline.datamanager.dataparser = NerfstudioDataParserConfig()
        config.data = config.pipeline.datamanager.data = args.scene
        runs["gt-poses"] = config

    rows, renders, reference = {}, {}, None
    for name, config in runs.items():
        print(f"== splatfacto on {name}: {config.max_num_iterations} steps", flush=True)
        try:
            rows[name], rgb, reference = train_and_evaluate(config)
        except Exception as error:  # one failed run is reported, and the others still run
            traceback.print_exc()
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
            release_event_writers()
            continue
        renders[name] = (rgb, rows[name])
    print(f"\nsplatfacto, held-out views of {args.scene} ({torch.cuda.get_device_name()}); LPIPS "
          f"{'replaced by a constant, not reported' if args.lpips_stand_in else 'not reported here'}")
    print(f"{'run':<16}{'steps':>7}{'PSNR':>8}{'SSIM':>8}{'Gaussians':>11}{'ms/step':>9}")
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:<16}{runs[name].max_num_iterations:>7}  failed: {row['error']}")
            continue
        print(f"{name:<16}{runs[name].max_num_iterations:>7}{row['psnr']:>8.2f}{row['ssim']:>8.3f}"
              f"{row['gaussians']:>11}{row['ms_per_step']:>9.1f}")
    result = {"scene": str(args.scene), "device": torch.cuda.get_device_name(), "iterations": args.iterations,
              "lpips_stand_in": args.lpips_stand_in, "runs": rows}
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    if args.figure and reference is not None:
        draw(args.figure, reference, renders)
    if any("error" in row for row in rows.values()):
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
