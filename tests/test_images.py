import sys

import numpy as np
import pytest

PIL_Image = pytest.importorskip("PIL.Image", reason="Pillow not installed")

from portanet.reader import digit as images  # noqa: E402
from portanet.reader.digit import is_dark_on_light, load_digit, prepare_digit  # noqa: E402


def ring(canvas=(60, 50), centre=(30, 25), radii=(18, 12), thickness=0.3):
    """A thick elliptical ring, like a '0': bright (1.0) ink on black (0.0)."""
    yy, xx = np.mgrid[: canvas[0], : canvas[1]]
    d = np.hypot((yy - centre[0]) / radii[0], (xx - centre[1]) / radii[1])
    return ((d > 1 - thickness) & (d <= 1)).astype(np.float64)


def ell(canvas=(60, 50), top_left=(5, 5), height=40, width=24, stroke=6):
    """An 'L' shape: a vertical bar with a foot. Asymmetric, so rotations are visible."""
    img = np.zeros(canvas)
    r, c = top_left
    img[r : r + height, c : c + stroke] = 1.0
    img[r + height - stroke : r + height, c : c + width] = 1.0
    return img


def bar(canvas=(60, 50), top_left=(10, 20), height=36, width=5):
    """A '1': one upright bar."""
    img = np.zeros(canvas)
    img[top_left[0] : top_left[0] + height, top_left[1] : top_left[1] + width] = 1.0
    return img


def centre_of_mass(img):
    total = img.sum()
    i = np.arange(img.shape[0])
    j = np.arange(img.shape[1])
    return (i @ img.sum(axis=1)) / total, (j @ img.sum(axis=0)) / total


def mean_diff_up_to_one_pixel(a, b):
    """Mean |a - b| after the best shift of b by at most one pixel each way.

    Centring rounds the centre of mass to whole pixels, so a digit whose centre sits near a
    half pixel may land one pixel either way after resampling or JPEG noise.
    """
    return min(
        np.abs(a - np.roll(b, (dy, dx), axis=(0, 1))).mean()
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def assert_mnist_like(out):
    assert out.shape == (28, 28)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.99  # the ink is bright
    r, c = centre_of_mass(out)
    assert abs(r - 14) <= 1 and abs(c - 14) <= 1, (r, c)
    rows = np.flatnonzero(out.max(axis=1) > 0.1)
    cols = np.flatnonzero(out.max(axis=0) > 0.1)
    longer = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    assert 19 <= longer <= 21, longer
    # Outside the ink's bounding box the background is black.
    outside = np.ones_like(out, dtype=bool)
    outside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = False
    assert out[outside].max(initial=0.0) < 0.02
    assert np.median(out) < 0.02


@pytest.mark.parametrize(
    "digit",
    [
        ring(),
        ring(canvas=(200, 300), centre=(150, 60), radii=(45, 30)),  # large, near a corner
        ring(canvas=(28, 28), centre=(8, 8), radii=(6, 5), thickness=0.45),  # small, in a corner
        ell(),
        ell(canvas=(300, 200), top_left=(200, 140), height=90, width=50, stroke=14),
        bar(),
        bar(canvas=(300, 200), top_left=(3, 3), height=250, width=30),
        ell(canvas=(40, 120), top_left=(10, 10), height=20, width=100, stroke=5),  # wide
    ],
    ids=["ring", "ring-large-corner", "ring-tiny", "L", "L-large", "bar", "bar-corner", "L-wide"],
)
def test_prepared_digit_looks_like_mnist(digit):
    assert_mnist_like(prepare_digit(digit))


def test_bar_keeps_its_aspect_ratio():
    out = prepare_digit(bar(height=40, width=8))  # 5:1 -> 20 x 4
    cols = np.flatnonzero(out.max(axis=0) > 0.1)
    assert 3 <= cols[-1] - cols[0] + 1 <= 5


def test_fine_pen_strokes_are_widened_to_mnist_width(monkeypatch):
    # A 3 px pen on a 300 px tall digit would be 0.2 px wide at 20 px scale.
    thin = prepare_digit(bar(canvas=(400, 300), top_left=(50, 100), height=300, width=3))
    assert_mnist_like(thin)
    widths = (thin > 0.5).sum(axis=1)
    assert np.median(widths[widths > 0]) >= 2
    # Strokes that are already wide enough (6 px of 40 -> 3 px at 20) are left alone.
    digit = ell(canvas=(60, 50), top_left=(5, 5), height=40, stroke=6)
    a = prepare_digit(digit)
    monkeypatch.setattr(images, "MIN_STROKE", 0.0)
    np.testing.assert_array_equal(prepare_digit(digit), a)
    assert (prepare_digit(bar(canvas=(400, 300), height=300, width=3)) > 0.5).sum() < 40


def test_position_in_canvas_does_not_matter():
    a = prepare_digit(ell(canvas=(200, 300), top_left=(5, 5), height=80, width=45, stroke=12))
    b = prepare_digit(ell(canvas=(200, 300), top_left=(110, 240), height=80, width=45, stroke=12))
    np.testing.assert_allclose(a, b, atol=1e-6)
    # Twice the size, drawn elsewhere: the same digit up to resampling differences.
    c = prepare_digit(ell(canvas=(400, 300), top_left=(150, 60), height=160, width=90, stroke=24))
    assert mean_diff_up_to_one_pixel(a, c) < 0.03


def test_dark_on_light_is_inverted():
    digit = ring(canvas=(80, 70), centre=(40, 30))
    paper = 1.0 - digit
    assert is_dark_on_light(paper) and not is_dark_on_light(digit)
    np.testing.assert_allclose(prepare_digit(paper), prepare_digit(digit), atol=1e-6)
    u8 = (paper * 255).astype(np.uint8)
    np.testing.assert_allclose(prepare_digit(u8), prepare_digit(digit), atol=1e-6)


def test_grey_noisy_paper_and_faint_pencil():
    rng = np.random.default_rng(0)
    digit = ell(canvas=(120, 100), top_left=(20, 30))
    # Pencil at 0.45 on grey paper at 0.8 with grain of +-0.03.
    photo = 0.8 - 0.35 * digit + rng.uniform(-0.03, 0.03, size=digit.shape)
    out = prepare_digit(photo)
    assert_mnist_like(out)
    clean = prepare_digit(digit)
    assert np.abs(out - clean).mean() < 0.01
    np.testing.assert_allclose(out, clean, atol=0.15)


def test_rgb_and_rgba_arrays():
    digit = bar(canvas=(64, 48))
    rgb = np.repeat(((1 - digit) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    rgb[:, :, 0] = np.maximum(rgb[:, :, 0], 60)  # blue-ish ink: still darker than paper
    assert_mnist_like(prepare_digit(rgb))
    # Black ink, transparent background: composited over white it is dark on light.
    rgba = np.zeros((64, 48, 4), dtype=np.uint8)
    rgba[:, :, 3] = (digit * 255).astype(np.uint8)
    np.testing.assert_allclose(prepare_digit(rgba), prepare_digit(digit), atol=1e-6)


def save(array, path, mode=None, **kwargs):
    PIL_Image.fromarray(array, mode=mode).save(path, **kwargs)
    return path


def test_load_png_grey_rgb_rgba_and_jpeg(tmp_path):
    digit = ring(canvas=(120, 160), centre=(50, 100), radii=(40, 25))
    expected = prepare_digit(digit)
    paper = ((1 - digit) * 255).astype(np.uint8)
    rgb = np.stack([paper] * 3, axis=2)
    rgba = np.zeros(digit.shape + (4,), dtype=np.uint8)
    rgba[:, :, 3] = (digit * 255).astype(np.uint8)

    PIL_Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    PIL_Image.fromarray(rgba).convert("LA").save(tmp_path / "grey-alpha.png")
    for path in (
        save(paper, tmp_path / "grey.png"),
        save(rgb, tmp_path / "rgb.png"),
        save(rgba, tmp_path / "rgba.png"),
        tmp_path / "palette.png",
        tmp_path / "grey-alpha.png",
    ):
        out = load_digit(path)
        assert_mnist_like(out)
        np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=str(path))

    for name, arr in (("grey.jpg", paper), ("rgb.jpeg", rgb)):
        out = load_digit(save(arr, tmp_path / name, quality=85))
        assert_mnist_like(out)
        assert mean_diff_up_to_one_pixel(out, expected) < 0.03, name
    assert_mnist_like(load_digit(str(tmp_path / "grey.jpg")))  # str paths work too


def test_load_applies_exif_orientation(tmp_path):
    digit = ell(canvas=(80, 60), top_left=(10, 10))
    stored = np.rot90(((1 - digit) * 255).astype(np.uint8))  # what a sideways camera wrote
    exif = PIL_Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = save(np.ascontiguousarray(stored), tmp_path / "photo.png", exif=exif)
    np.testing.assert_allclose(load_digit(path), prepare_digit(digit), atol=1e-6)


def test_blank_images_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="no digit found in the image: the image is blank"):
        prepare_digit(np.full((50, 50), 255, dtype=np.uint8))
    faint = 0.9 + np.random.default_rng(0).uniform(-0.02, 0.02, size=(50, 50))
    with pytest.raises(ValueError, match="blank"):
        prepare_digit(faint)
    path = save(np.full((30, 40), 250, dtype=np.uint8), tmp_path / "empty.png")
    with pytest.raises(ValueError, match=r"no digit found in .*empty\.png: the image is blank"):
        load_digit(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"this is not a picture\n" * 10)
    with pytest.raises(ValueError, match=r"could not read .*x\.png as an image"):
        load_digit(path)


def test_truncated_image(tmp_path):
    path = save((ring() * 255).astype(np.uint8), tmp_path / "cut.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not read .*cut\.png as an image"):
        load_digit(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        load_digit(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="is not a file"):
        load_digit(tmp_path)


def test_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    path = save((ring() * 255).astype(np.uint8), tmp_path / "big.png")  # 50 x 60 = 3000 px
    monkeypatch.setattr(images, "MAX_MEGAPIXELS", 0.002)

    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(images, "_read_pixels", no_decoding)
    with pytest.raises(ValueError, match=r"big\.png is 50x60 pixels .*over the limit of 0\.002"):
        load_digit(path)


@pytest.mark.parametrize("pillow_limit", [2000, 1000])  # warning (> limit), error (> 2x limit)
def test_decompression_bomb_guard(tmp_path, monkeypatch, pillow_limit):
    path = save((ring() * 255).astype(np.uint8), tmp_path / "bomb.png")  # 3000 px
    monkeypatch.setattr(PIL_Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with pytest.raises(ValueError, match="decompression bomb"):
        load_digit(path)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((5, 5, 2)), r"shape \(5, 5, 2\)"),
        (np.zeros(10), r"shape \(10,\)"),
        (np.zeros((0, 5)), "empty"),
        (np.full((5, 5), -1.0), r"\[0, 1\]"),
        (np.full((5, 5), np.nan), "NaN"),
    ],
)
def test_bad_arrays(array, match):
    with pytest.raises(ValueError, match=match):
        prepare_digit(array)


def test_missing_pillow_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r'pip install "portanet\[images\]"'):
        prepare_digit(bar())
