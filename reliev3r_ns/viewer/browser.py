"""The viewer as a user sees it: nerfstudio's web page in headless Chromium, and what its picture shows.

:class:`HeadlessChromium` starts Debian's ``chromium`` (WebGL through SwiftShader, no GPU needed),
opens a page and takes screenshots over the DevTools protocol (plain JSON over a websocket; no
browser-automation package needed). :func:`scene_coverage` reads a screenshot of the viewer: where
the predicted cameras (orange), the GT cameras (green) and the cloud (anything neither background
nor the side panel) are, so a test can tell a framed scene from an empty canvas or a view from
inside a frustum.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple
from urllib.request import urlopen

import numpy as np
from PIL import Image
from websockets.sync.client import connect

from reliev3r_ns.viewer.client import free_port

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> Optional[str]:
    """The first Chromium-like browser on PATH (``$CHROMIUM`` first), or None."""
    candidates = ([os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else []) + list(CHROMIUM_NAMES)
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, width: int = 1280, height: int = 800, executable: Optional[str] = None, timeout: float = 60.0) -> None:
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("no Chromium found (apt-get install chromium, or set $CHROMIUM)")
        self.port = free_port()
        self._profile = tempfile.mkdtemp(prefix="reliev3r-chromium-")
        self._process = subprocess.Popen(
            [executable, "--headless=new", f"--remote-debugging-port={self.port}", f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "--no-sandbox", "--no-first-run", "--disable-gpu-sandbox",
             # WebGL in software: SwiftShader through ANGLE (the viewer is three.js)
             "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        target = None
        while target is None:
            if self._process.poll() is not None:
                raise RuntimeError(f"{executable} exited with code {self._process.returncode} before it could be driven")
            try:
                with urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                    target = next((t for t in json.load(response) if t.get("type") == "page"), None)
            except OSError:
                pass
            if target is None:
                if time.time() > deadline:
                    self.close()
                    raise TimeoutError(f"{executable} did not open its DevTools port within {timeout:.0f} s")
                time.sleep(0.2)
        self._socket = connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        self._next_id = 0
        self.command("Page.enable")
        self.command("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def command(self, method: str, timeout: float = 60.0, **params) -> dict:
        """Send one DevTools command and return its result (events in between are skipped)."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.time())))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.command("Page.navigate", url=url)

    def screenshot(self) -> Image.Image:
        data = self.command("Page.captureScreenshot", format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessChromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Coverage:
    """What a viewer screenshot shows in its 3D canvas (fractions of the canvas's pixels)."""

    predicted: float  # orange: the predicted frustums
    gt: float  # green: the GT frustums
    content: float  # anything not background: cloud, frustums, the render of the cloud
    box: Tuple[float, float, float, float]  # the content's bounding box (x0, y0, x1, y1), in canvas fractions
    canvas: Tuple[int, int, int, int]  # the canvas in screenshot pixels (x0, y0, x1, y1)

    def framed(self) -> Tuple[bool, str]:
        """Whether this looks like a framed scene, and why not: predicted cameras drawn, content neither
        a speck nor the whole canvas, its box around the canvas's centre and clear of its edges."""
        cx, cy = 0.5 * (self.box[0] + self.box[2]), 0.5 * (self.box[1] + self.box[3])
        if self.predicted < 2e-4:
            return False, f"no predicted (orange) cameras drawn ({self.predicted:.2%} of the canvas)"
        if self.content < 0.01:
            return False, f"an almost empty canvas ({self.content:.1%} not background)"
        if self.content > 0.9:
            return False, f"the canvas is full ({self.content:.0%}): a view from inside the scene or a frustum"
        if not (0.25 < cx < 0.75 and 0.25 < cy < 0.75):
            return False, f"the scene is off centre (its box's centre at {cx:.2f}, {cy:.2f} of the canvas)"
        if min(self.box[0], self.box[1]) < 0.02 or max(self.box[2], self.box[3]) > 0.98:
            return False, f"the scene runs off the canvas (its box {tuple(round(b, 2) for b in self.box)})"
        if max(self.box[2] - self.box[0], self.box[3] - self.box[1]) < 0.2:
            return False, "the scene is a speck (its box spans under a fifth of the canvas)"
        return True, "framed"


def _like(pixels: np.ndarray, colour) -> np.ndarray:
    """Pixels of ``colour``'s hue, however dimmed or blended with a dark background (three.js shades
    and antialiases lines): same ordering of channels, similar ratios, bright enough to be a line."""
    p = pixels.astype(np.float32)
    c = np.asarray(colour, np.float32)
    peak = p.max(-1, keepdims=True)
    bright = peak[..., 0] >= 0.45 * c.max()
    chroma = np.abs(p / np.maximum(peak, 1.0) - c / c.max()).max(-1) < 0.3
    return bright & chroma


def scene_coverage(image: Image.Image, predicted_colour, gt_colour, panel_fraction: float = 0.25, header: int = 52) -> Coverage:
    """Read a viewer screenshot. The canvas is the screenshot minus nerfstudio's title bar (``header``
    pixels) and its control panel on the right (``panel_fraction`` of the width, 320 px of 1280).
    Background is the canvas's most common colour (viser's clear colour, or the black of an empty
    render); content is whatever differs from it by more than 24 levels."""
    pixels = np.asarray(image.convert("RGB"))
    H, W = pixels.shape[:2]
    x1 = W - int(round(panel_fraction * W))
    canvas = pixels[header:, :x1]
    flat = canvas.reshape(-1, 3)
    colours, counts = np.unique((flat // 8).astype(np.int32) @ np.array([1024, 32, 1]), return_counts=True)
    code = colours[counts.argmax()]
    background = np.array([(code // 1024) % 32, (code // 32) % 32, code % 32]) * 8 + 4
    content = np.abs(canvas.astype(np.int16) - background).max(-1) > 24
    predicted = _like(canvas, predicted_colour)
    gt = _like(canvas, gt_colour)
    ys, xs = np.nonzero(content)
    h, w = canvas.shape[:2]
    if len(xs):
        # robust box: 1st-99th percentile of the content pixels, so a stray grid line does not count
        box = (np.percentile(xs, 1) / w, np.percentile(ys, 1) / h, np.percentile(xs, 99) / w, np.percentile(ys, 99) / h)
    else:
        box = (0.0, 0.0, 0.0, 0.0)
    return Coverage(float(predicted.mean()), float(gt.mean()), float(content.mean()), tuple(float(b) for b in box), (0, header, x1, H))
