"""The ``portanet draw`` server: the standard library's threaded HTTP server, two routes.

``GET /`` serves the page; ``POST /predict`` takes the bytes of one image (the page sends its
canvas as PNG, or a dropped file as it is) and answers JSON:

- 200: ``{"top": [{"index", "label", "probability"} x 3], "labels", "probabilities",
  "prepared": 784 grey levels 0..255 (row by row), "first_layer": {"title", "size",
  "images": [{"caption", "pixels": values -100..100 scaled to the image's largest}]} | null}``
- 422: ``{"refusal": why}``: an image, but no digit the reader accepts (too little ink,
  several marks, noise; whatever :mod:`portanet.reader.digit` refuses), so no guess;
- 400 (not an image, empty body), 411 (no length), 413 (over the cap, or an image declaring
  more than :data:`MAX_PIXELS` pixels, refused from its header), 403 (a foreign ``Host`` on a
  loopback server): ``{"error": why}``.

A client that goes away before its answer (a closed tab, a reset) costs nothing: no traceback.

Nothing in a request names a file: the body is written to a fresh temporary folder and read
with :func:`portanet.reader.digit.load_digit`, the code ``portanet predict`` runs on a file.
"""

from __future__ import annotations

import errno
import io
import json
import socket
import sys
import tempfile
import threading
import traceback
import warnings
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from portanet.inference import predict_proba
from portanet.layers import Conv2D, Dense, Ensemble
from portanet.model import Sequential

DEFAULT_PORT = 8028
#: Request bodies larger than this are refused (413) before they are read.
MAX_BODY = 10 * 2**20
#: Images declaring more pixels than this are refused (413) from their header, undecoded: a
#: small file may declare 100000x100000 pixels (a decompression bomb).
MAX_PIXELS = 40_000_000
#: An MLP's first layer is shown as the input weights of this many most active units.
MLP_UNITS = 12
#: A CNN's first layer shows at most this many feature maps.
MAX_MAPS = 32
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_PILLOW_HINT = 'portanet draw reads drawings with Pillow: pip install "portanet[draw]"'


class DrawError(ValueError):
    """A problem that stops ``portanet draw`` before it serves; the message names the fix."""


class NotAnImage(ValueError):
    """The request body is not an image (HTTP 400)."""


class TooLarge(ValueError):
    """An image whose declared size is over :data:`MAX_PIXELS` (HTTP 413), refused from its
    header before anything is decoded."""


class Refused(ValueError):
    """An image in which the digit reader finds no digit; the message says why (HTTP 422)."""


class Reader:
    """A loaded model that answers images the way ``portanet predict`` does; thread-safe.

    Args:
        model: a classifier of 28x28 images (input shape ``(784,)`` or ``(1, 28, 28)``).
        labels: the class names, one per output.
    """

    def __init__(self, model: Sequential, labels: list[str]) -> None:
        shape = tuple(model.input_shape or (784,))
        if int(np.prod(shape)) != 784:
            raise DrawError(f"the model takes inputs of shape {shape}, not 28x28 images; "
                            f"draw needs a model trained on MNIST-like images")
        self.model, self.labels, self.shape = model, labels, shape
        self._lock = threading.Lock()  # layers keep their last input for backward

    def answer(self, body: bytes) -> dict[str, Any]:
        """The page's JSON answer for the image in ``body``.

        Raises:
            NotAnImage: Pillow does not recognise ``body`` as an image.
            TooLarge: it declares more than :data:`MAX_PIXELS` pixels (nothing is decoded).
            Refused: the reader finds no digit in it (the reason is the message).
        """
        digit = read_digit(body)
        x = digit.reshape(1, *self.shape)
        with self._lock:
            proba = predict_proba(self.model, x)[0]  # host in, host out
            first = first_layer(self.model, x)
        top = np.argsort(proba)[::-1][:3]
        return {
            "top": [{"index": int(k), "label": self.labels[k],
                     "probability": round(float(proba[k]), 6)} for k in top],
            "labels": self.labels,
            "probabilities": [round(float(p), 6) for p in proba],
            "prepared": np.round(digit * 255).astype(int).ravel().tolist(),
            "first_layer": first,
        }


def read_digit(body: bytes) -> np.ndarray:
    """The 28x28 digit in the image ``body``, prepared by :func:`portanet.reader.digit.load_digit`.

    Raises:
        NotAnImage, TooLarge, Refused: as :meth:`Reader.answer`.
    """
    from PIL import Image, UnidentifiedImageError

    from portanet.reader.digit import load_digit
    if not body:
        raise NotAnImage("the request has no body: POST the bytes of a PNG or JPEG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as image:  # reads the header only
                width, height = image.size
        declared = f"{width:,} x {height:,} pixels"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        width, height, declared = MAX_PIXELS, 2, "a size over Pillow's own limit"
    except (UnidentifiedImageError, OSError) as exc:
        raise NotAnImage("the body is not an image Pillow recognises (send PNG, JPEG or "
                         "another common image format)") from exc
    if width * height > MAX_PIXELS:
        raise TooLarge(f"the image declares {declared}, over the limit of {MAX_PIXELS:,} "
                       f"pixels; scale it down or crop it to the digit first")
    with tempfile.TemporaryDirectory(prefix="portanet-draw-") as folder:
        path = Path(folder) / "drawing"
        path.write_bytes(body)
        try:
            return load_digit(path)
        except ValueError as exc:
            why = str(exc).replace(str(path), "the drawing")
            # A decoding failure (corrupt, truncated, too large) chains Pillow's error.
            raise (NotAnImage if exc.__cause__ is not None else Refused)(why) from None


def first_layer(model: Sequential, x: np.ndarray) -> dict[str, Any] | None:
    """What the first Conv2D or Dense layer makes of the input ``x`` (one sample, host):
    a CNN's feature maps, or an MLP's input weights of its most active units, as images
    scaled to -100..100 (an ensemble: its first member's). None if the first such layer does
    not see the 28x28 image."""
    backend = model.backend
    layers = model.layers
    if isinstance(layers[0], Ensemble):  # an ensemble shows its first member's
        layers = layers[0].members[0]
    with backend.activate():
        h = backend.asarray(x)
        for i, layer in enumerate(layers):
            layer.training = False
            h = layer.forward(h)
            if isinstance(layer, Conv2D):
                if layer.in_channels != 1:
                    return None
                maps = backend.to_numpy(h)[0][:MAX_MAPS]
                more = layer.out_channels > MAX_MAPS
                return {
                    "title": f"layer {i}, {layer!r}: the image filtered by each of its "
                             f"{layer.out_channels} kernels"
                             + (f", the first {MAX_MAPS} shown" if more else "")
                             + " (under each, its largest value)",
                    "size": list(maps.shape[1:]),
                    "images": [_picture(m, f"map {c}: {m.max():.2f}")
                               for c, m in enumerate(maps)],
                }
            if isinstance(layer, Dense):
                if layer.in_features != 784:
                    return None
                z = backend.to_numpy(h)[0]
                weights = backend.to_numpy(layer.params["W"])  # (784, units)
                units = np.argsort(z)[::-1][:MLP_UNITS]
                return {
                    "title": f"layer {i}, {layer!r}: the input weights of the {len(units)} "
                             f"most active of its {layer.out_features} units (under each, "
                             f"its output for this image)",
                    "size": [28, 28],
                    "images": [_picture(weights[:, k].reshape(28, 28),
                                        f"unit {k}: {z[k]:.2f}") for k in units],
                }
    return None


def _picture(values: np.ndarray, caption: str) -> dict[str, Any]:
    scale = float(np.abs(values).max()) or 1.0
    pixels = np.round(values / scale * 100).astype(int).ravel().tolist()
    return {"caption": caption, "pixels": pixels}


class _Handler(BaseHTTPRequestHandler):
    server: DrawServer
    server_version = "portanet-draw"
    timeout = 60  # seconds a connection may sit idle (a stalled upload is dropped)

    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/", "/index.html"):
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found: the page is at /"})
        elif self._host_ok():
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found: POST images to /predict"})
            return
        if not self._host_ok():
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._json(HTTPStatus.LENGTH_REQUIRED,
                       {"error": "send the image with a Content-Length header"})
            return
        if int(length) > self.server.max_body:
            self.close_connection = True  # the body stays unread
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       {"error": f"the image is {int(length):,} bytes, over the limit of "
                                 f"{self.server.max_body:,}; scale it down first"})
            return
        body = self.rfile.read(int(length))
        try:
            answer = self.server.reader.answer(body)
        except NotAnImage as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except TooLarge as exc:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": str(exc)})
        except Refused as exc:
            self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"refusal": str(exc)})
        except Exception as exc:  # the server keeps serving; the page shows the message
            traceback.print_exc()
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                       {"error": f"the server failed on this image: {exc!r}"})
        else:
            self._json(HTTPStatus.OK, answer)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):  # the client went away: nobody to answer
            self.close_connection = True

    def _host_ok(self) -> bool:
        """On a loopback address, answer only requests addressed to one (DNS rebinding)."""
        if self.server.host not in LOOPBACK:
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host in LOOPBACK:
            return True
        self._json(HTTPStatus.FORBIDDEN, {"error": f"this server answers only requests for "
                                                   f"localhost, not for {host!r}"})
        return False

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; script-src 'unsafe-inline'; style-src "
                         "'unsafe-inline'; img-src blob: data:; connect-src 'self'")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The page asks often and a refusal (422) is an answer: log only trouble.
        if isinstance(code, int) and code >= 400 and code != HTTPStatus.UNPROCESSABLE_ENTITY:
            super().log_request(code, size)


class DrawServer(ThreadingHTTPServer):
    """The threaded HTTP server with the page and the :class:`Reader` it answers with."""

    daemon_threads = True  # Ctrl-C does not wait for open connections
    request_queue_size = 64  # the listen backlog: 5 by default resets a burst of requests

    def __init__(self, reader: Reader, host: str, port: int, max_body: int = MAX_BODY) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.reader, self.host, self.max_body = reader, host, max_body
        page = resources.files("portanet.app.draw").joinpath("page.html").read_text("utf-8")
        self.page = page.replace("__MAX_BODY__", str(max_body)).encode()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}/"


def make_server(model_path: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                backend: str | None = None, max_body: int = MAX_BODY) -> DrawServer:
    """Load the model and bind the server (not yet serving).

    Raises:
        DrawError: Pillow is missing, the port is taken, or the model takes no 28x28 images;
            ValueError / FileNotFoundError from :func:`portanet.load` for a bad model file.
    """
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DrawError(_PILLOW_HINT) from None
    from portanet.app.run_data import saved_labels
    from portanet.saving import npz

    if not 0 <= port <= 65535:
        raise DrawError(f"--port {port} is not a port; choose one from 1 to 65535 "
                        f"(0: any free one)")
    model = npz.load(model_path, backend=backend)
    extra = npz.load_metadata(model_path)["extra"]
    reader = Reader(model, saved_labels(model, model_path, extra))
    try:
        return DrawServer(reader, host, port, max_body)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DrawError(f"port {port} on {host} is in use; choose another with --port N "
                            f"(--port 0 picks a free one)") from None
        raise DrawError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host "
                        f"and --port") from None


def serve(model_path: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          backend: str | None = None, open_browser: bool = False,
          out: TextIO | None = None) -> int:
    """Serve the page for the model at ``model_path`` until Ctrl-C, printing to ``out``
    (default: standard output); the exit status (0).

    Raises:
        DrawError, ValueError, FileNotFoundError: as :func:`make_server`, before serving.
    """
    out = out or sys.stdout
    server = make_server(model_path, host=host, port=port, backend=backend)
    model = server.reader.model
    if host not in LOOPBACK:
        print(f"warning: listening on {host}: the page and the model are reachable from the "
              f"network; use the default --host 127.0.0.1 to keep them on this machine",
              file=out)
    print(f"portanet draw: {model_path} ({len(model.layers)} layers, "
          f"{model.num_parameters():,} parameters, on {model.backend.name}) at {server.url}",
          file=out)
    print("Ctrl-C stops the server", file=out, flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("portanet draw: stopped", file=out, flush=True)
    finally:
        server.server_close()
    return 0
