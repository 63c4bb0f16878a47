"""A headless viser client: connects to a viewer like a browser tab does and records what it is sent.

Used by the tests and by ``scripts/viewer_snapshot.py``. It speaks viser's wire format (msgpack
windows of messages, each a dict with a ``type``), so it sees exactly what a browser would: scene
nodes by name, GUI elements, and the background images the viewer renders for the client's camera.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

import msgspec
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def free_port() -> int:
    """A TCP port free on this machine right now (for a viewer the client will connect to)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HeadlessViserClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self._exit_stack = contextlib.ExitStack()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._socket = self._exit_stack.enter_context(connect(f"ws://{host}:{port}", max_size=None, open_timeout=5))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.messages: List[Dict] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                window = msgspec.msgpack.decode(self._socket.recv())
                with self._lock:
                    self.messages.extend(window if isinstance(window, list) else [window])
        except (ConnectionClosed, OSError):
            pass

    # ---------------------------------------------------------------------------------- queries
    def received(self, type_name: Optional[str] = None, name_prefix: str = "") -> List[Dict]:
        """Messages so far, optionally only of one type and with names starting with a prefix."""
        with self._lock:
            return [
                m for m in self.messages
                if (type_name is None or m.get("type") == type_name) and str(m.get("name", "")).startswith(name_prefix)
            ]

    def latest(self, type_name: str, name_prefix: str = "") -> Dict[str, Dict]:
        """The most recent message of a type per node name."""
        return {m["name"]: m for m in self.received(type_name, name_prefix)}

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0, what: str = "the viewer") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.05)

    @staticmethod
    def points(message: Dict) -> np.ndarray:
        """(N, 3) float32 positions of a PointCloudMessage."""
        return np.frombuffer(message["points"], dtype=np.float32).reshape(-1, 3)

    @staticmethod
    def colours(message: Dict) -> np.ndarray:
        return np.frombuffer(message["colors"], dtype=np.uint8).reshape(-1, 3)

    # ----------------------------------------------------------------------------------- actions
    def send_camera(self, position: Sequence[float], wxyz: Sequence[float], fov_y: float, aspect: float) -> None:
        """Move this client's camera (viser coordinates; OpenCV camera, wxyz quaternion), as dragging would."""
        position = [float(x) for x in position]
        message = {
            "type": "ViewerCameraMessage",
            "wxyz": [float(x) for x in wxyz],
            "position": position,
            "fov": float(fov_y),
            "aspect": float(aspect),
            "look_at": [0.0, 0.0, 0.0],
            "up_direction": [0.0, 0.0, 1.0],
        }
        self._socket.send(msgspec.msgpack.encode(message))

    def gui_element(self, label: str) -> Dict:
        """The latest GuiAdd...Message of the element with this label."""
        matches = [m for m in self.received() if m.get("type", "").startswith("GuiAdd") and m.get("label") == label]
        if not matches:
            raise KeyError(f"no GUI element labelled {label!r}")
        return matches[-1]

    def set_gui_value(self, label: str, value) -> None:
        """Change a GUI input as a user would (the server runs its callbacks)."""
        element = self.gui_element(label)
        self._socket.send(msgspec.msgpack.encode({"type": "GuiUpdateMessage", "id": element["id"], "updates": {"value": value}}))

    def close(self) -> None:
        self._exit_stack.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> "HeadlessViserClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
