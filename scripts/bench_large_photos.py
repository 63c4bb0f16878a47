"""Peak memory of reliev3r-process-data on a folder of large photos (default 100 of 24 MP).

The photos are made from a real video's frames (every frame of --video sampled evenly, cropped to
3:2 and enlarged to --width x --height, saved as JPEG, so they look like a camera's and overlap like
a walk-through), then ``reliev3r-process-data images`` runs on them in a child process, whose peak
resident memory (ru_maxrss) and wall time are printed. The target: under 4 GiB on a CPU.

    python scripts/bench_large_photos.py --video VIDEO.mp4 [--count 100] [--checkpoint ffrm.pt]

Without --checkpoint a randomly initialised tiny FFRM is used (memory and time do not depend on
its weights; its poses are not scored here).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_photos(video: Path, folder: Path, count: int, width: int, height: int) -> None:
    from PIL import Image

    from reliev3r_ns.process.video import extract_frames

    frames = extract_frames(video, folder / "frames", count)
    for k, frame in enumerate(frames):
        with Image.open(frame) as image:
            w, h = image.size
            crop_w, crop_h = (w, round(w * height / width)) if w * height / width <= h else (round(h * width / height), h)
            box = ((w - crop_w) // 2, (h - crop_h) // 2, (w - crop_w) // 2 + crop_w, (h - crop_h) // 2 + crop_h)
            image.convert("RGB").crop(box).resize((width, height), Image.Resampling.BICUBIC).save(folder / "photos" / f"IMG_{k:04d}.jpg", quality=92)
        frame.unlink()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, required=True, help="a real video whose frames become the photos")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reliev3r-large-") as root:
        root = Path(root)
        (root / "photos").mkdir()
        started = time.perf_counter()
        make_photos(args.video, root, args.count, args.width, args.height)
        print(f"made {args.count} photos of {args.width}x{args.height} ({args.width * args.height / 1e6:.0f} MP) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        checkpoint = args.checkpoint
        if checkpoint is None:
            import torch

            from reliev3r_ns.model import FFRM, ffrm_config

            torch.manual_seed(0)
            checkpoint = FFRM(ffrm_config("tiny")).save_checkpoint(root / "random_tiny.pt", {"image_size": [96, 128]})
        command = [sys.executable, "-m", "reliev3r_ns.cli.process_data", "images", "--data", str(root / "photos"),
                   "--output-dir", str(root / "out"), "--checkpoint", str(checkpoint)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:])
            raise SystemExit(f"reliev3r-process-data failed (exit {done.returncode})")
        meta = json.loads((root / "out" / "transforms.json").read_text())
        figures = {"photos": args.count, "size": [args.width, args.height], "frames_written": len(meta["frames"]),
                   "peak_rss_gib": round(peak_gib, 3), "seconds": round(seconds, 1), "target_gib": 4.0,
                   "timings_s": meta["reliev3r"]["timings_s"], "left_out": len(meta["reliev3r"]["left_out"])}
        print(f"reliev3r-process-data on {args.count} photos of {args.width * args.height / 1e6:.0f} MP: peak resident memory "
              f"{peak_gib:.2f} GiB (target < 4), {seconds:.0f} s, {len(meta['frames'])} frames written; stages {figures['timings_s']}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
