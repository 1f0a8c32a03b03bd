"""portanet draw: the server over HTTP in this process, the command, and the page in a real
browser (headless Chromium through Selenium; skipped where either is missing).

Two small models are trained once for the module on MNIST (a few seconds): an MLP that reads
rendered test digits correctly, and a CNN for the feature maps and the concurrency check.
Set PORTANET_DRAW_SCREENSHOT=path to keep the browser test's screenshot (docs/draw.png).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import portanet as pn
from portanet import data as datasets
from portanet.app import cli
from portanet.reader import digit as images

Image = pytest.importorskip("PIL.Image", reason="portanet draw needs Pillow")

from portanet.app.draw import server as draw  # noqa: E402  (after the Pillow skip)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    try:
        return datasets.load_mnist()
    except datasets.DatasetUnavailableError as exc:
        pytest.skip(f"MNIST is not available here: {exc}")


def _trained(layers: list[pn.Layer], shape: tuple[int, ...], mnist: Any, n: int,
             epochs: int, path: Path) -> Path:
    (x_train, y_train), _ = mnist
    X = (x_train[:n].reshape(n, *shape) / 255).astype(np.float32)
    model = pn.Sequential(layers, backend="numpy", seed=0, input_shape=shape)
    pn.fit(model, X, y_train[:n].astype(np.int64), optimizer=pn.optim.Adam(lr=2e-3),
           epochs=epochs, batch_size=128)
    return pn.save(model, path, dataset="mnist")


@pytest.fixture(scope="module")
def mlp_path(mnist: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained([pn.Dense(784, 128), pn.ReLU(), pn.Dense(128, 10)], (784,), mnist,
                    12000, 2, tmp_path_factory.mktemp("draw") / "mlp.npz")


@pytest.fixture(scope="module")
def cnn_path(mnist: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    layers = [pn.Conv2D(1, 8, 5), pn.MaxPool2D(2), pn.ReLU(), pn.Flatten(), pn.Dense(1152, 10)]
    return _trained(layers, (1, 28, 28), mnist, 3000, 1,
                    tmp_path_factory.mktemp("draw") / "cnn.npz")


def _serving(model_path: Path) -> Iterator[Any]:
    """A draw server for ``model_path`` on a free port in a thread, for a fixture to yield from:
    shut down and closed when the fixture is torn down."""
    srv = draw.make_server(str(model_path), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def mlp_server(mlp_path: Path) -> Iterator[Any]:
    yield from _serving(mlp_path)


@pytest.fixture(scope="module")
def cnn_server(cnn_path: Path) -> Iterator[Any]:
    yield from _serving(cnn_path)


def request(srv: Any, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Status and decoded JSON (or the bytes of the page) of one request."""
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(data) if kind == "application/json" else data


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def rendered(digit: np.ndarray) -> bytes:
    """An MNIST digit as a user's drawing: dark ink on white, 8x larger, smoothly scaled."""
    image = Image.fromarray(255 - digit).resize((224, 224), Image.Resampling.BILINEAR)
    return png(np.asarray(image))


# --- HTTP -------------------------------------------------------------------------------------


def test_rendered_mnist_digits_are_answered_correctly(mlp_server: Any, mlp_path: Path,
                                                      mnist: Any) -> None:
    """Each digit the model reads right as an MNIST array, it reads right as a drawing
    (test digit 8, a hard 5, it reads wrong either way)."""
    _, (x_test, y_test) = mnist
    y_test = y_test[:20]
    direct = pn.predict(pn.load(mlp_path), (x_test[:20].reshape(20, 784) / 255).astype("f4"))
    assert np.count_nonzero(direct == y_test) >= 18
    for i in np.flatnonzero(direct == y_test):
        status, answer = request(mlp_server, "POST", "/predict", rendered(x_test[i]))
        assert status == 200, answer
        assert answer["top"][0]["index"] == y_test[i], (i, answer["top"])
        assert answer["top"][0]["label"] == str(y_test[i])
        assert answer["labels"] == [str(k) for k in range(10)]
        assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert [t["probability"] for t in answer["top"]] == sorted(answer["probabilities"])[:-4:-1]
        first = answer["first_layer"]  # the input weights of the most active hidden units
        assert first["size"] == [28, 28] and len(first["images"]) == draw.MLP_UNITS
        assert all(len(p["pixels"]) == 784 and max(map(abs, p["pixels"])) == 100
                   for p in first["images"])


def test_the_prepared_image_and_answer_are_portanet_predicts(
        mlp_server: Any, mlp_path: Path, mnist: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, (x_test, _) = mnist
    body = rendered(x_test[1])
    (tmp_path / "digit.png").write_bytes(body)
    status, answer = request(mlp_server, "POST", "/predict", body)
    assert status == 200
    expected = images.load_digit(tmp_path / "digit.png")
    got = np.array(answer["prepared"], dtype=np.float64).reshape(28, 28) / 255
    np.testing.assert_allclose(got, expected, atol=0.5 / 255 + 1e-6)
    assert cli.main(["predict", str(mlp_path), str(tmp_path / "digit.png"), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)["top3"]
    assert [(t["digit"], t["probability"]) for t in predicted] == [
        (t["index"], pytest.approx(t["probability"], abs=1e-5)) for t in answer["top"]]


def test_a_cnn_shows_its_feature_maps(cnn_server: Any, cnn_path: Path, mnist: Any) -> None:
    _, (x_test, _) = mnist
    status, answer = request(cnn_server, "POST", "/predict", rendered(x_test[0]))
    assert status == 200, answer
    first = answer["first_layer"]
    assert first["title"].startswith("layer 0, Conv2D")
    assert first["size"] == [24, 24] and len(first["images"]) == 8
    assert all(len(p["pixels"]) == 24 * 24 for p in first["images"])
    digit = np.array(answer["prepared"], dtype=np.float32).reshape(1, 1, 28, 28) / 255
    proba = pn.predict_proba(pn.load(cnn_path), digit)[0]
    np.testing.assert_allclose(answer["probabilities"], proba, atol=2e-3)


@pytest.mark.parametrize(("body", "status", "key", "words"), [
    (b"", 400, "error", "no body"),
    (b"GIF89a? not really", 400, "error", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400, "error", "not an image"),
    (png(np.random.default_rng(0).integers(0, 256, (99, 99), np.uint8))[:5000], 400, "error",
     "corrupt or truncated"),
    (png(np.full((100, 100), 255, np.uint8)), 422, "refusal", "blank"),
    (png(np.pad(np.zeros((3, 3), np.uint8), 98, constant_values=255)), 422, "refusal",
     "too little ink"),
])
def test_bodies_without_a_digit_get_the_reason(mlp_server: Any, body: bytes, status: int,
                                               key: str, words: str) -> None:
    got, answer = request(mlp_server, "POST", "/predict", body)
    assert (got, list(answer)) == (status, [key])
    assert words in answer[key]
    assert "portanet-draw-" not in answer[key]  # the temporary file is not named


def test_oversized_and_unsized_bodies_are_not_read(mlp_server: Any) -> None:
    host, port = mlp_server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", str(draw.MAX_BODY + 1))
    conn.endheaders()  # the body is never sent: the answer comes from the header alone
    response = conn.getresponse()
    assert response.status == 413
    assert "over the limit" in json.loads(response.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_the_page_and_the_routes(mlp_server: Any) -> None:
    status, page = request(mlp_server, "GET", "/")
    assert status == 200
    text = page.decode()
    assert '<canvas id="pad"' in text and f"const MAX_BODY = {draw.MAX_BODY};" in text
    assert "src=" not in text and "href=" not in text  # self-contained: nothing to fetch
    assert request(mlp_server, "GET", "/etc/passwd")[0] == 404
    assert request(mlp_server, "POST", "/", b"x")[0] == 404
    status, answer = request(mlp_server, "GET", "/", headers={"Host": "evil.example:8028"})
    assert status == 403 and "localhost" in answer["error"]


def test_concurrent_requests_each_get_their_own_answer(cnn_server: Any, mnist: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Conv2D keeps its input's columns between writing and reading them (for backward), so
    concurrent requests would mix their answers without the model's lock. The window between
    the two is widened here so that this fails reliably without the lock."""
    _, (x_test, _) = mnist
    bodies = [rendered(x_test[i]) for i in range(4)]
    alone = [request(cnn_server, "POST", "/predict", b)[1]["probabilities"] for b in bodies]
    conv = cnn_server.reader.model.layers[0]
    weight_matrix = conv._weight_matrix  # called between storing the columns and using them

    def slowly() -> Any:
        time.sleep(0.01)
        return weight_matrix()

    monkeypatch.setattr(conv, "_weight_matrix", slowly)
    results: dict[int, Any] = {}
    start = threading.Barrier(8)

    def ask(k: int) -> None:
        start.wait()
        results[k] = request(cnn_server, "POST", "/predict", bodies[k % 4])

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(8):
        assert results[k][0] == 200, results[k]
        assert results[k][1]["probabilities"] == alone[k % 4], k


# --- the command ------------------------------------------------------------------------------


def test_problems_stop_it_before_serving(mlp_path: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*args: str) -> str:
        assert cli.main(["draw", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("portanet draw: "), err
        return err

    (tmp_path / "model.npz").write_bytes(b"not a model")
    assert "not a readable portanet model" in fails(str(tmp_path / "model.npz"))
    assert "does not exist" in fails(str(tmp_path / "none.npz"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        err = fails(str(mlp_path), "--port", str(taken.getsockname()[1]))
        assert "is in use" in err and "--port" in err
    assert "--port 70000 is not a port" in fails(str(mlp_path), "--port", "70000")
    pn.save(pn.Sequential([pn.Dense(20, 3)], backend="numpy", seed=0), tmp_path / "small.npz")
    assert "not 28x28 images" in fails(str(tmp_path / "small.npz"))
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    assert 'pip install "portanet[draw]"' in fails(str(mlp_path))


def test_another_host_warns_and_ctrl_c_stops(mlp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(self: Any, *args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(draw.DrawServer, "serve_forever", interrupted)
    opened: list[str] = []
    monkeypatch.setattr(draw.webbrowser, "open", opened.append)
    assert cli.main(["draw", str(mlp_path), "--host", "0.0.0.0", "--port", "0", "--open"]) == 0
    out = capsys.readouterr().out
    assert "warning: listening on 0.0.0.0" in out and "reachable from the network" in out
    assert "stopped" in out.splitlines()[-1]
    assert len(opened) == 1 and opened[0] in out
    assert cli.main(["draw", str(mlp_path), "--port", "0"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_the_command_serves_until_sigint(mlp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "portanet", "draw", str(mlp_path),
                             "--port", "0", "--backend", "numpy"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = line.split(" at ")[-1].strip()
        assert url.startswith("http://127.0.0.1:"), line + proc.stderr.read()
        import urllib.request

        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


# --- the page in a browser --------------------------------------------------------------------


def chromium() -> Any:
    """Headless Chromium driven through the system's chromedriver, or a skip saying why."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium or chromedriver is missing (Debian: apt-get install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1200,940", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def strokes(digit: np.ndarray, size: float) -> list[list[tuple[int, int]]]:
    """Pen strokes along the ink of a 28x28 digit: one per run of ink in each row, in pixels
    from the centre of a canvas ``size`` pixels wide (how Selenium places the pointer)."""
    cell = size / 28

    def at(row: float, col: float) -> tuple[int, int]:
        return round((col + 0.5) * cell - size / 2), round((row + 0.5) * cell - size / 2)

    out = []
    for r, row in enumerate(digit > 127):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        out += [[at(r, a), at(r, b - 1)] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return out


def draw_on(driver: Any, canvas: Any, lines: list[list[tuple[int, int]]],
            move_ms: int = 0, kind: str = "mouse") -> None:
    """Draw ``lines`` (from :func:`strokes`) with a pointer of ``kind`` (mouse, pen, touch),
    each move taking ``move_ms``."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    actions = ActionBuilder(driver, mouse=PointerInput(kind, kind), duration=move_ms)
    pointer = actions.pointer_action
    for line in lines:
        pointer.move_to(canvas, *line[0]).pointer_down()
        for point in line[1:]:
            pointer.move_to(canvas, *point)
        pointer.pointer_up()
    actions.perform()


SLOW_FETCH = """
window.asked = 0; window.inFlight = 0; window.mostInFlight = 0;
const fetchNow = window.fetch;
window.fetch = async (...args) => {
  window.asked += 1; window.inFlight += 1;
  window.mostInFlight = Math.max(window.mostInFlight, window.inFlight);
  try {
    await new Promise((done) => setTimeout(done, 300));
    return await fetchNow(...args);
  } finally { window.inFlight -= 1; }
};
"""


def settled(driver: Any) -> str:
    """The page's state once it has answered its latest drawing."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = ("const d = document.body.dataset; return d.busy === '0' && "
              "d.answered === d.version ? d.state : null")
    return WebDriverWait(driver, 30).until(lambda d: d.execute_script(script))


def test_drawing_a_digit_in_chromium(mlp_server: Any, mnist: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _, (x_test, y_test) = mnist
    index = 0
    digit, label = x_test[index], str(y_test[index])
    driver = chromium()
    try:
        driver.get(mlp_server.url)
        canvas = driver.find_element(By.ID, "pad")
        # Answers come slowly here, so that the page asks while a request is in flight.
        driver.execute_script(SLOW_FETCH)
        lines = strokes(digit, canvas.size["width"])
        draw_on(driver, canvas, lines, move_ms=40)
        assert settled(driver) == "answered"
        asked, most = driver.execute_script("return [window.asked, window.mostInFlight]")
        assert most == 1 and 2 <= asked < len(lines), (asked, most)
        assert driver.find_element(By.ID, "top-label").text == label
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 10
        assert len(driver.find_elements(By.CSS_SELECTOR, "#first figure")) == draw.MLP_UNITS
        # The enlarged 28x28 image is the server's preparation of what was drawn.
        shown = np.array(driver.execute_script(
            "return Array.from(document.getElementById('prepared').getContext('2d')"
            ".getImageData(0, 0, 28, 28).data)"), dtype=np.uint8).reshape(28, 28, 4)[:, :, 0]
        drawing = driver.execute_script("return document.getElementById('pad').toDataURL()")
        import base64

        (tmp_path / "drawing.png").write_bytes(base64.b64decode(drawing.split(",")[1]))
        expected = images.load_digit(tmp_path / "drawing.png")
        np.testing.assert_allclose(shown / 255, expected, atol=1 / 255 + 1e-6)
        # ... and it is the digit traced: about 0.93 correlated (0.5 when the pointer's moves
        # are lost and only the dots where strokes begin are drawn, still read as a 7).
        assert np.corrcoef(expected.ravel(), digit.ravel())[0, 1] > 0.8
        screenshot = tmp_path / "draw.png"
        driver.save_screenshot(str(screenshot))
        if os.environ.get("PORTANET_DRAW_SCREENSHOT"):
            shutil.copy(screenshot, os.environ["PORTANET_DRAW_SCREENSHOT"])

        # A speck (a tap of a finger) is refused with the reason, and no guess is shown.
        driver.find_element(By.ID, "clear").click()
        assert settled(driver) == "idle"
        draw_on(driver, canvas, [[(0, 0)]], kind="touch")
        assert settled(driver) == "refused"
        assert driver.find_element(By.ID, "message").text.startswith("No guess: ")
        assert "too little ink" in driver.find_element(By.ID, "message").text
        assert driver.find_element(By.ID, "top-label").text == ""

        # An image file goes through the same path as a drawing.
        (tmp_path / "four.png").write_bytes(rendered(x_test[4]))
        driver.find_element(By.ID, "file").send_keys(str(tmp_path / "four.png"))
        assert settled(driver) == "answered"
        assert driver.find_element(By.ID, "top-label").text == str(y_test[4])
    finally:
        driver.quit()


def test_strokes_trace_the_digit() -> None:
    digit = np.zeros((28, 28), np.uint8)
    digit[5, 3:7] = 255
    digit[5, 10] = 200
    cell = 280 / 28
    assert strokes(digit, 280) == [[(round(3.5 * cell - 140), round(5.5 * cell - 140)),
                                    (round(6.5 * cell - 140), round(5.5 * cell - 140))],
                                   [(round(10.5 * cell - 140), round(5.5 * cell - 140))] * 2]


def declared_png(width: int, height: int) -> bytes:
    """A small PNG file whose header declares ``width`` x ``height`` grey pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("width", "height", "declared"), [
    (100_000, 100_000, "a size over Pillow's own limit"),
    (7_000, 7_000, "7,000 x 7,000 pixels"),
])
def test_an_image_declaring_a_huge_size_is_refused_undecoded(
        mlp_server: Any, width: int, height: int, declared: str) -> None:
    status, answer = request(mlp_server, "POST", "/predict", declared_png(width, height))
    assert status == 413, answer
    assert answer == {"error": f"the image declares {declared}, over the limit of "
                               f"{draw.MAX_PIXELS:,} pixels; scale it down or crop it to the "
                               f"digit first"}


def test_a_client_that_goes_away_mid_answer_costs_no_traceback(
        mlp_server: Any, mnist: Any, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """The client resets the connection while the answer is computed: the server's write
    fails, and it says nothing (it printed two tracebacks)."""
    gone, done = threading.Event(), threading.Event()
    real_answer, real_finish = mlp_server.reader.answer, draw._Handler.finish

    def answer_later(body: bytes) -> Any:
        gone.wait(30)
        return real_answer(body)

    def finish(handler: Any) -> None:
        try:
            real_finish(handler)
        finally:
            done.set()

    monkeypatch.setattr(mlp_server.reader, "answer", answer_later)
    monkeypatch.setattr(draw._Handler, "finish", finish)
    body = rendered(mnist[1][0][0])
    client = socket.create_connection(mlp_server.server_address[:2], timeout=30)
    client.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct_linger_reset())
    client.close()  # a reset, as a closed tab or a dropped network gives
    gone.set()
    assert done.wait(30)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception" not in err, err
    assert request(mlp_server, "GET", "/")[0] == 200  # still serving


def struct_linger_reset() -> bytes:
    """SO_LINGER on with a zero timeout: close() sends a reset."""
    import struct

    return struct.pack("ii", 1, 0)
