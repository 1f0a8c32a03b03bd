"""Your own digit, the hard cases: frames round a scan, dust, transparency, and images that
hold no digit at all (a speck, noise, a blob, a 1x2 image), refused with the reason."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

PIL_Image = pytest.importorskip("PIL.Image", reason="Pillow not installed")

from portanet.reader.digit import is_dark_on_light, load_digit, prepare_digit  # noqa: E402
from tests.helpers import seven, shifted_diff  # noqa: E402


def scan(digit, paper=0.92, ink=0.12, noise=0.02, seed=0):
    """Dark ink on light, slightly grainy paper."""
    grain = np.random.default_rng(seed).normal(0.0, noise, digit.shape)
    return np.clip(paper - (paper - ink) * digit + grain, 0.0, 1.0)


def centre_of_mass(img):
    total = img.sum()
    rows, cols = np.indices(img.shape)
    return (rows * img).sum() / total, (cols * img).sum() / total


CLEAN = prepare_digit(seven())


def assert_is_the_seven(out):
    """Bright ink on black, centred, and the same picture as the clean 7."""
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.max() > 0.99
    assert np.median(out) < 0.02  # black background
    r, c = centre_of_mass(out)
    assert abs(r - 14) <= 1 and abs(c - 14) <= 1, (r, c)
    assert shifted_diff(out, CLEAN) < 0.02, shifted_diff(out, CLEAN)


def framed(image, value, sides=("top", "bottom", "left", "right"), widths=(14, 10, 12, 16)):
    out = image.copy()
    for side, w in zip(("top", "bottom", "left", "right"), widths, strict=True):
        if side in sides:
            out[{"top": np.s_[:w], "bottom": np.s_[-w:], "left": np.s_[:, :w],
                 "right": np.s_[:, -w:]}[side]] = value
    return out


def on_table(image, table=0.08, size=(400, 400), at=(100, 120)):
    """A page photographed on a dark table that takes up most of the picture."""
    out = np.full(size, table)
    out[at[0] : at[0] + image.shape[0], at[1] : at[1] + image.shape[1]] = image
    return out


def soft_frame(image, inner=12, outer=20, value=0.05):
    """A frame whose inner edge fades over a few pixels, as a blurred photo of a page has."""
    h, w = image.shape
    rows, cols = np.indices(image.shape)
    d = np.minimum.reduce([rows, cols, h - 1 - rows, w - 1 - cols]).astype(np.float64)
    t = np.clip((d - inner) / (outer - inner), 0.0, 1.0)
    return value + t * (image - value)


PAGE = scan(seven())


@pytest.mark.parametrize(
    "image",
    [
        PAGE,
        framed(PAGE, 0.05),  # the scanner's black margin all round
        soft_frame(PAGE),
        framed(PAGE, 0.05, widths=(33, 10, 12, 16)),  # 2 px above the 7's bar
        framed(PAGE, 0.10, sides=("top", "left"), widths=(20, 10, 25, 10)),  # lid shadow
        framed(scan(seven((260, 230), top=70, left=70)), 0.02, widths=(60, 60, 60, 50)),  # wide
        on_table(PAGE),  # the table is most of the picture
    ],
    ids=["page", "dark-frame", "soft-frame", "frame-close-to-the-digit", "two-sided-shadow",
         "wide-frame-most-of-it", "page-on-table"],
)
def test_dark_frame_does_not_flip_the_polarity(image):
    assert is_dark_on_light(image)
    assert_is_the_seven(prepare_digit(image))


def test_framed_scan_from_a_file(tmp_path: Path):
    path = tmp_path / "scan.png"
    PIL_Image.fromarray((framed(PAGE, 0.05) * 255).astype(np.uint8)).save(path)
    assert_is_the_seven(load_digit(path))
    PIL_Image.fromarray((framed(PAGE, 0.05) * 255).astype(np.uint8)).save(
        tmp_path / "scan.jpg", quality=80)
    assert_is_the_seven(load_digit(tmp_path / "scan.jpg"))


def test_light_frame_round_a_blackboard():
    chalk = 0.1 + 0.75 * seven()  # light chalk on a dark board, a white wall round it
    image = framed(chalk, 0.95, widths=(30, 20, 25, 25))
    assert not is_dark_on_light(image)
    assert_is_the_seven(prepare_digit(image))


def test_dust_far_from_the_digit_is_ignored():
    page = PAGE.copy()
    page[185:189, 5:9] = 0.1  # a speck of dust in a corner
    page[3:5, 150:153] = 0.1
    assert_is_the_seven(prepare_digit(page))


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.pad(np.zeros((3, 3)), 50, constant_values=1.0),
         r"too little ink: the only marks span about 3x3 px of the 103x103 image \(a speck"),
        (np.pad(np.zeros((4, 4)), ((300, 200), (100, 500)), constant_values=200).astype(np.uint8),
         r"too little ink: .* of the 504x604 image"),
        (np.random.default_rng(0).uniform(size=(100, 100)),
         r"no stroke-like content: the ink is scattered over \d+ specks \(noise"),
        (np.random.default_rng(1).integers(0, 256, (300, 400)).astype(np.uint8),
         r"no stroke-like content: the ink is scattered over \d+ specks \(noise"),
        (np.array([[0, 255]], dtype=np.uint8),
         r"the image is only 2x1 pixels, too small to hold a digit \(at least 8x8\)"),
        (np.eye(5, 40), r"the image is only 40x5 pixels"),
        ((np.hypot(*np.mgrid[-50:50, -50:50]) < 30).astype(np.float64),
         r"no stroke-like content: the ink is a solid area about \d+ px thick"),
        (on_table(np.full((200, 160), 0.9)),
         r"no stroke-like content: the ink is a solid area"),  # an empty page on a table
        (np.full((50, 50), 0.5), r"the image is blank"),
    ],
    ids=["speck", "speck-uint8", "noise", "noise-uint8", "1x2", "5x40", "solid-disc",
         "empty-page", "blank"],
)
def test_images_without_a_digit_are_refused_with_the_reason(image, reason):
    with pytest.raises(ValueError, match="no digit found in the image: " + reason):
        prepare_digit(image)


def test_refusal_names_the_file(tmp_path: Path):
    path = tmp_path / "speck.png"
    PIL_Image.fromarray(np.pad(np.zeros((3, 3), np.uint8), 60, constant_values=255)).save(path)
    with pytest.raises(ValueError, match=r"no digit found in .*speck\.png: too little ink"):
        load_digit(path)


def rgba(digit, rgb, background_rgb=None):
    """A drawing canvas: ink of colour ``rgb`` where ``digit`` is, transparent elsewhere."""
    out = np.zeros(digit.shape + (4,), dtype=np.uint8)
    out[:, :, :3] = rgb if background_rgb is None else background_rgb
    out[digit > 0, :3] = rgb
    out[:, :, 3] = np.round(digit * 255).astype(np.uint8)
    return out


@pytest.mark.parametrize(
    ("canvas", "dark_ink"),
    [
        (rgba(seven(), (255, 255, 255)), False),  # white ink, transparent white
        (rgba(seven(), (255, 255, 255), (0, 0, 0)), False),  # white ink, transparent black
        (rgba(seven(), (0, 0, 0)), True),  # black ink
        (rgba(seven(), (0, 0, 0), (255, 255, 255)), True),
        (rgba(seven(), (220, 30, 30)), True),  # red pen: darker than white paper
        (rgba(seven(), (255, 230, 80), (0, 0, 0)), False),  # yellow: brighter than black
    ],
    ids=["white", "white-on-black-rgb", "black", "black-on-white-rgb", "red", "yellow"],
)
def test_transparent_canvas_is_read_by_the_ink_colour(canvas, dark_ink, tmp_path: Path):
    assert is_dark_on_light(canvas) == dark_ink
    assert_is_the_seven(prepare_digit(canvas))
    path = tmp_path / "canvas.png"
    PIL_Image.fromarray(canvas).save(path)
    assert_is_the_seven(load_digit(path))


def test_white_ink_grey_alpha_png(tmp_path: Path):
    la = np.stack([np.full(seven().shape, 255, np.uint8),
                   np.round(seven() * 255).astype(np.uint8)], axis=2)
    PIL_Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert_is_the_seven(load_digit(tmp_path / "la.png"))


def test_fully_transparent_canvas_is_blank():
    with pytest.raises(ValueError, match="the image is blank"):
        prepare_digit(np.zeros((40, 40, 4), dtype=np.uint8))


def _mnist_test_images(n: int) -> np.ndarray:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "portanet" / "mnist"
    path = cache / "t10k-images-idx3-ubyte"
    if not path.is_file():
        pytest.skip(f"MNIST is not cached at {path}")
    raw = path.read_bytes()
    return np.frombuffer(raw, np.uint8, offset=16, count=n * 784).reshape(n, 28, 28)


def test_real_mnist_digits_are_accepted_and_kept():
    """No real digit is refused by the checks above, in either polarity, and MNIST digits come
    back nearly as they are (they were made this way)."""
    digits = _mnist_test_images(200)
    for i, digit in enumerate(digits):
        for image in (digit, 255 - digit):
            out = prepare_digit(image)
            assert shifted_diff(out, digit / 255.0) < 0.08, i
