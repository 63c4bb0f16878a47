"""Train ``reliev3r`` with the viser viewer on and save what a browser would have seen, as a PNG.

A headless client connects to the viewer like a browser tab, parks its camera at the shown clip's
first predicted camera and records everything the viewer sends. The PNG has one overview panel per
refresh (the predicted cloud, predicted frustums in orange, GT frustums in green, drawn off-screen
from the recorded messages), then the clip's first input view next to the viewer's own render from
that camera (``get_outputs_for_camera``).

    python scripts/viewer_snapshot.py                                  # bundled synthetic data, 300 steps
    python scripts/viewer_snapshot.py --data DIR --iterations 1000 --output snapshot.png

With ``--browser`` it opens nerfstudio's viewer page in headless Chromium instead (Debian's
``chromium``; WebGL in software), screenshots the page when the scene first arrives and after the
last refresh, checks each (predicted cameras drawn, the scene framed: neither an empty canvas nor a
view from inside a frustum, clear of the canvas's edges) and saves the last as the PNG; it exits
with an error naming what it saw when a screenshot fails the check.

    python scripts/viewer_snapshot.py --browser --iterations 200 --output docs/viewer_browser.png
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_trainer(args, port: int):
    import torch

    from reliev3r_ns.method_configs.reliev3r import reliev3r_method

    config = copy.deepcopy(reliev3r_method.config)
    config.vis = "viewer"
    config.viewer.websocket_port = port
    config.viewer.quit_on_train_completion = True
    config.output_dir = args.output_dir
    config.max_num_iterations = args.iterations
    config.steps_per_save = args.iterations
    config.machine.device_type = "cuda" if torch.cuda.is_available() else "cpu"
    config.pipeline.viewer_refresh_every = max(1, args.iterations // (args.panels - 1)) if args.panels > 1 else args.iterations
    dm = config.pipeline.datamanager
    if args.data is not None:
        dm.data = args.data
    config.optimizers["ffrm"]["scheduler"].max_steps = args.iterations
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a folder of scenes (default: the bundled synthetic dataset)")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--panels", type=int, default=4, help="overview panels (refreshes spread over the run)")
    parser.add_argument("--output", type=Path, default=Path("viewer_snapshot.png"))
    parser.add_argument("--output-dir", type=Path, default=Path("outputs"), help="where the nerfstudio run is written")
    parser.add_argument("--browser", action="store_true", help="screenshot nerfstudio's page in headless Chromium")
    args = parser.parse_args(argv)
    if args.browser:
        return browser_snapshot(args)

    from reliev3r_ns.geometry import rotation_to_quaternion
    from reliev3r_ns.viewer.client import HeadlessViserClient, free_port
    from reliev3r_ns.viewer.live import VISER_SCALE
    from reliev3r_ns.viewer.snapshot import draw_scene, frusta_from_messages

    port = free_port()
    trainer = make_trainer(args, port)
    with HeadlessViserClient(port) as client:
        client.wait_for(lambda: client.received("GuiAddDropdownMessage"), what="the viewer's controls")
        start = len(client.messages)
        trainer.train()  # the viewer stays up after the last step (its server runs in its own thread)
        messages = client.messages[start:]
        # Park the client's camera at the shown clip's view 0 as last predicted: the render is the
        # predicted cloud seen from there, to compare with the input view.
        cloud = trainer.pipeline.live_view.cloud
        H, W = cloud.image_size
        pose = cloud.cam_to_world[0].double()
        client.send_camera(pose[:3, 3].numpy() * VISER_SCALE, rotation_to_quaternion(pose[:3, :3]).numpy(), 2 * np.arctan(0.5 * H / float(cloud.intrinsics[0, 1, 1])), W / H)
        client.wait_for(lambda: client.received("BackgroundImageMessage"), what="a render", timeout=120)
        time.sleep(2.0)  # the viewer sends a low-resolution render first, then a sharper one

    clouds = [i for i, m in enumerate(messages) if m.get("type") == "PointCloudMessage" and m.get("name") == "/reliev3r/points"]
    if not clouds:
        sys.exit("the viewer sent no point cloud during training")
    picks = sorted(set(np.linspace(0, len(clouds) - 1, min(args.panels, len(clouds))).round().astype(int)))
    panels = []
    for k, index in enumerate(picks):
        # Frustum messages of a refresh follow its cloud; take the state up to the next cloud.
        end = clouds[picks[k] + 1] if picks[k] + 1 < len(clouds) else len(messages)
        m = messages[clouds[index]]
        title = "step 0" if index == 0 else f"refresh {index} of {len(clouds) - 1}"
        panels.append(draw_scene(HeadlessViserClient.points(m), HeadlessViserClient.colours(m), frusta_from_messages(messages[:end]), title=title))
    render = Image.open(io.BytesIO(client.received("BackgroundImageMessage")[-1]["rgb_bytes"])).convert("RGB")
    view = Image.fromarray((trainer.pipeline.live_view.cloud.colours[0].numpy() * 255).astype(np.uint8))
    size = panels[0].size
    pair = Image.new("RGB", size, (28, 28, 28))
    half = (size[0] // 2 - 4, size[1] - 40)
    for x, (image, caption) in enumerate([(view, "input view 0"), (render, "viewer render from camera 0")]):
        scale = min(half[0] / image.width, half[1] / image.height)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
        pair.paste(image, (x * (size[0] // 2) + 2, 30))
        ImageDraw.Draw(pair).text((x * (size[0] // 2) + 8, 8), caption, fill=(255, 255, 255))
    sheet = Image.new("RGB", (size[0] * (len(panels) + 1), size[1]))
    for i, panel in enumerate(panels + [pair]):
        sheet.paste(panel, (i * size[0], 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output)
    print(f"wrote {args.output} ({len(clouds)} refreshes seen by the client)")
    return args.output


def browser_snapshot(args) -> Path:
    """Train with the viewer on while headless Chromium shows nerfstudio's page; check and save screenshots."""
    import threading

    from reliev3r_ns.viewer.browser import HeadlessChromium, find_chromium, scene_coverage
    from reliev3r_ns.viewer.client import free_port
    from reliev3r_ns.viewer.live import GT_COLOUR, PREDICTED_COLOUR

    if find_chromium() is None:
        sys.exit("no Chromium found: apt-get install chromium (or set $CHROMIUM to a Chrome / Chromium binary)")
    port = free_port()
    trainer = make_trainer(args, port)
    failures = []
    training = threading.Thread(target=trainer.train, name="training", daemon=True)
    with HeadlessChromium() as browser:
        training.start()
        browser.open(f"http://127.0.0.1:{port}")

        def settle(what: str, timeout: float = 180.0):
            """Screenshots until two in a row read the same (the render has caught up), then the check."""
            deadline, last = time.time() + timeout, None
            while True:
                time.sleep(3.0)
                image = browser.screenshot()
                coverage = scene_coverage(image, PREDICTED_COLOUR, GT_COLOUR)
                steady = last is not None and abs(coverage.content - last.content) < 0.005 and coverage.predicted > 0
                if steady or time.time() > deadline:
                    ok, why = coverage.framed()
                    print(f"{what}: {why}; predicted cameras {coverage.predicted:.2%}, GT cameras {coverage.gt:.2%}, "
                          f"content {coverage.content:.1%} of the canvas, box {tuple(round(b, 2) for b in coverage.box)}")
                    if not ok:
                        failures.append(f"{what}: {why}")
                    return image
                last = coverage

        first = settle("when the scene arrived")
        training.join()  # the viewer stays up after the last step (quit_on_train_completion only ends train())
        last = settle("after the last refresh")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    last.save(args.output)
    first.save(args.output.with_name(args.output.stem + "_first.png"))
    print(f"wrote {args.output} and {args.output.with_name(args.output.stem + '_first.png')}")
    if failures:
        sys.exit("the viewer page did not show a framed scene: " + "; ".join(failures))
    return args.output


if __name__ == "__main__":
    main()
