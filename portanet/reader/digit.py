"""Turn a photo or scan of one handwritten digit into an MNIST-style 28x28 input.

The steps follow how MNIST itself was made (LeCun et al.):

1. greyscale (transparency shown over black for light ink, over white for dark ink), ink
   made bright on a black background (a dark-on-light scan is inverted). On a plain page
   the ink is measured against one background level (Otsu's threshold), the minority side
   being ink. Only where the paper's brightness varies across the picture (UNEVEN_LIGHT: a
   gradient, a spotlight, half the page in shadow) is it estimated locally (a grey-level
   closing half the picture's size, far wider than any stroke) and divided out, the side
   of the paper decided from each pixel's departure from the brightness around it. Then
   (:mod:`portanet.reader.ink`) frames, ruled lines, specks and blots are dropped where the
   evidence is strong, and images with no ink, too little ink (a speck, or a digit too
   small for its picture: crop it), no stroke-like content, or several digit-sized marks
   well apart (crop to one digit) are refused with the reason;
2. background subtracted and the faintest values (paper grain, JPEG ringing) dropped;
3. cropped to the ink's bounding box; strokes that would end up thinner than 2 px at the
   final scale (a fine pen on a large photo) are widened to 2 px, about the thinnest
   MNIST stroke (MNIST digits themselves are never widened);
4. scaled with anti-aliasing so the longer side is 20 px, keeping the aspect ratio;
5. placed in a 28x28 field so that the intensity-weighted centre of mass is at pixel
   (14, 14) (row, column; pixel indices from 0), clipped so the digit stays in the frame.
   The MNIST test digits' mean centre of mass is (13.99, 14.00) in these coordinates.

Pillow, scikit-image and SciPy are optional dependencies (``pip install "portanet[images]"``),
imported only when needed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from portanet.reader import ink as ink_module
from portanet.reader.ink import SEVERAL, SMALL, judge, otsu

__all__ = ["load_digit", "prepare_digit", "is_dark_on_light", "MAX_MEGAPIXELS"]

#: Refuse images larger than this many megapixels (checked from the header, before decoding).
MAX_MEGAPIXELS = 50.0
#: Output geometry, as in MNIST.
FIELD = 28
BOX = 20
#: An image whose ink differs from the background by less than this (on a 0..1 scale,
#: about 20/255) is treated as blank.
BLANK_TOLERANCE = 0.08
#: After normalising the ink to peak at 1, values below this are paper noise, not ink.
NOISE_FLOOR = 0.15
#: Strokes thinner than this many pixels at the 20-pixel scale are widened to it.
MIN_STROKE = 2.0
#: Crops larger than this are first area-averaged down to it (before widening strokes).
PRE_SHRINK = 10 * BOX
#: Images smaller than this on either side cannot hold a recognisable digit.
MIN_SIDE = 8
#: The paper's brightness is estimated with a square this share of the picture's shorter
#: side (far wider than any pen stroke), on a copy at most BACKGROUND_ANALYSIS px across.
BACKGROUND_SCALE = 0.5
BACKGROUND_ANALYSIS = 128
#: The light is uneven, and the paper's local brightness is divided out, where that
#: brightness varies across the picture by this share of the ink's contrast or more.
#: Measured (bench/digits.py): plain scans, blurred, thin or thick pens, broken strokes under
#: 0.1, low-resolution digits touching the border up to 0.39 (their strokes are as wide as
#: the closing's square); the gentlest lighting scene (a spotlight) 0.51.
UNEVEN_LIGHT = 0.45

_PILLOW_HINT = 'reading images needs Pillow: pip install "portanet[images]" (or pip install pillow)'


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(_PILLOW_HINT) from exc
    return Image


def _to_grey(image: Any) -> np.ndarray:
    """Convert an array image to 2-D float64 greyscale in [0, 1]; alpha goes over white."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(
            f"expected a greyscale (H, W) or colour (H, W, 3|4) image, got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"the image is empty (shape {arr.shape})")

    if arr.dtype == np.bool_:
        x = arr.astype(np.float64)
    elif arr.dtype == np.uint8:
        x = arr / 255.0
    elif arr.dtype == np.uint16:
        x = arr / 65535.0
    elif np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("the image contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"pixel values must lie in [0, 1] (or 0..255), got {lo:g}..{hi:g}")
        if hi > 1.0:  # 0..255 stored as float or a wide integer type
            x = x / 255.0
    else:
        raise TypeError(f"unsupported image dtype {arr.dtype}")

    if x.ndim == 3:
        rgb = x[:, :, :3]
        luma = rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as Pillow's "L"
        if x.shape[2] == 4:
            # Transparency is shown over a backdrop that contrasts with the ink: the colour of
            # what is drawn (the opaque pixels) decides, so white ink on a transparent drawing
            # canvas goes over black and dark ink over white paper.
            alpha = x[:, :, 3]
            weight = alpha * alpha
            ink_luma = float((luma * weight).sum() / weight.sum()) if weight.sum() > 0 else 0.0
            backdrop = 0.0 if ink_luma > 0.5 else 1.0
            luma = luma * alpha + backdrop * (1.0 - alpha)
        x = luma
    return x


def _background(x: np.ndarray, dark_on_light: bool) -> np.ndarray:
    """The paper's local brightness (the board's, for light ink): a grey-level closing (for
    dark ink; an opening for light ink) with a square BACKGROUND_SCALE of the picture's
    shorter side, on a copy at most BACKGROUND_ANALYSIS px across, scaled back bilinearly.

    Pen strokes are far thinner than the square, so they vanish from the estimate, while
    lighting that changes over larger distances (a gradient, a spotlight, half the page in
    shadow) stays in it; dividing it out makes the paper uniform before the ink is judged.
    Dark areas narrower than the square (a frame, the table round a page) are not
    background and still reach the frame checks."""
    ndi = ink_module.ndi()
    # A 3x3 mean first, so the max (min) filter rides on the paper, not on its grain.
    small = ndi.uniform_filter(_analysis_copy(x), 3, mode="nearest")
    k = max(3, int(BACKGROUND_SCALE * min(small.shape)))
    close = ndi.grey_closing if dark_on_light else ndi.grey_opening
    small = close(small, size=(k, k), mode="nearest")
    h, w = x.shape
    if small.shape == (h, w):
        return small
    f = max(1, -(-max(h, w) // BACKGROUND_ANALYSIS))
    image_mod = _pillow()
    big = image_mod.fromarray(small.astype(np.float32)).resize(
        (small.shape[1] * f, small.shape[0] * f), image_mod.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float64)[:h, :w]


def _analysis_copy(x: np.ndarray) -> np.ndarray:
    """``x`` at most BACKGROUND_ANALYSIS px across: medians of f x f blocks, so grain,
    specks and strokes thinner than half a block do not reach the estimate of the paper."""
    from skimage.measure import block_reduce

    h, w = x.shape
    f = max(1, -(-max(h, w) // BACKGROUND_ANALYSIS))
    if f == 1:
        return x
    padded = np.pad(x, ((0, -h % f), (0, -w % f)), mode="edge")
    return block_reduce(padded, (f, f), np.median)


def _majority_dark(x: np.ndarray) -> bool:
    """Whether the background is dark: Otsu's split of each pixel's departure from the mean
    brightness around it (a window of BACKGROUND_SCALE of the picture), the majority side
    being the background. Departures, not brightness, so that lighting (a gradient, half the
    page in shadow) does not make the shaded paper the "dark" majority."""
    small = _analysis_copy(x)
    k = max(3, int(BACKGROUND_SCALE * min(small.shape)))
    departure = small - ink_module.ndi().uniform_filter(small, k, mode="nearest")
    low, high = float(departure.min()), float(departure.max())
    if high - low < 1e-12:
        return False
    scaled = (departure - low) / (high - low)
    return np.count_nonzero(scaled <= otsu(scaled)) * 2 > scaled.size


def _global_ink_map(x: np.ndarray, dark_on_light: bool, threshold: float) -> np.ndarray:
    """Ink in [0, 1] for one polarity against one background level for the whole picture
    (the median of the background side of Otsu's ``threshold``)."""
    if dark_on_light:
        background = float(np.median(x[x > threshold]))
        ink = (background - x) / max(background - float(x.min()), 1e-12)
    else:
        background = float(np.median(x[x <= threshold]))
        ink = (x - background) / max(float(x.max()) - background, 1e-12)
    return _soft_floor(np.clip(ink, 0.0, 1.0))


def _soft_floor(ink: np.ndarray) -> np.ndarray:
    # A soft floor rather than a hard threshold: paper grain goes to 0 while the
    # anti-aliased edges of the strokes stay continuous.
    return np.clip((ink - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0)


def _ink_map(x: np.ndarray, dark_on_light: bool, background: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] for one polarity: how much darker (lighter) each pixel is than the paper
    (board) around it, relative to that paper's brightness, so uneven lighting does not
    turn dark paper into ink; 1 at the strongest ink. ``background``: the paper's
    brightness (:func:`_background`)."""
    if dark_on_light:
        ink = (background - x) / np.maximum(background, 1e-3)
    else:
        ink = (x - background) / np.maximum(1.0 - background, 1e-3)
    ink = np.clip(ink, 0.0, None)
    return _soft_floor(np.clip(ink / max(float(ink.max()), 1e-12), 0.0, 1.0))


def _find_ink(x: np.ndarray, source: str) -> tuple[np.ndarray, bool]:
    """The ink (bright on 0) and whether the image was dark on light, or a ValueError saying
    why no digit was found.

    Both polarities are tried, each against its own local background estimate; the one whose
    ink looks like pen strokes wins, and where both do, the one whose ink is the minority of
    the image (the background is the majority).
    """
    h, w = x.shape
    if min(h, w) < MIN_SIDE:
        raise ValueError(
            f"no digit found in {source}: the image is only {w}x{h} pixels, too small to hold a "
            f"digit (at least {MIN_SIDE}x{MIN_SIDE}); use a larger picture"
        )
    background = float(np.median(x))
    contrast = max(background - float(x.min()), float(x.max()) - background)
    if contrast < BLANK_TOLERANCE:
        raise ValueError(
            f"no digit found in {source}: the image is blank (every pixel is within"
            f" {contrast:.3f} of the background brightness {background:.2f}); draw the digit"
            " with a darker pen or a higher-contrast photo"
        )
    problems = []
    for dark_on_light, ink_map, even in _readings(x):
        ink, problem = judge(ink_map(dark_on_light), even=even)
        if problem is None:
            return ink, dark_on_light
        if problem.startswith(SEVERAL):  # not worth another reading: say so now
            raise ValueError(f"{source} holds {problem}")
        if problem.startswith(SMALL):  # a small digit: another reading would take the paper
            raise ValueError(f"no digit found in {source}: {problem}")
        problems.append(problem)
    raise ValueError(f"no digit found in {source}: {problems[0]}")


def _readings(x: np.ndarray) -> list[tuple[bool, Any, bool]]:
    """The ways to read the ink, in order: (dark on light, the ink map's function of it,
    whether it reads against one paper level).

    Where the paper's local brightness varies by under UNEVEN_LIGHT of the ink's contrast (a
    plain scan), each polarity against one global background level (Otsu's threshold), the
    minority first, as the reader always did. Where the light is uneven (a gradient, a
    spotlight, a shadow, a page on a table), first the polarity whose ink is the minority of
    the departures from the local mean, against the paper's local brightness; then each
    polarity against the global level (a frame wider than the local window is judged there).
    """
    threshold = otsu(x)
    global_dark = np.count_nonzero(x <= threshold) * 2 <= x.size
    globally = [(d, lambda d: _global_ink_map(x, d, threshold), True)
                for d in (global_dark, not global_dark)]
    if _light_spread(x, _background(x, global_dark), global_dark) < UNEVEN_LIGHT:
        return globally
    dark = not _majority_dark(x)
    paper = _background(x, dark)
    return [(dark, lambda d: _ink_map(x, d, paper), False)] + globally


def _light_spread(x: np.ndarray, paper: np.ndarray, dark_on_light: bool) -> float:
    """How much the paper's brightness varies across the picture (2nd to 98th percentile)
    against the contrast of the ink to the typical paper."""
    low, middle, high = np.percentile(paper, [2, 50, 98])
    contrast = middle - float(x.min()) if dark_on_light else float(x.max()) - middle
    return float(high - low) / max(contrast, 1e-6)


def is_dark_on_light(image: np.ndarray) -> bool:
    """True if the digit is darker than its background (pen on paper), False for MNIST-style
    bright ink on black. Accepts the same arrays as :func:`prepare_digit`.

    Raises:
        ValueError: as :func:`prepare_digit`, when no digit is found.
    """
    return _find_ink(_to_grey(image), "the image")[1]


def _thicken(ink: np.ndarray) -> np.ndarray:
    """Widen pen strokes that would be thinner than MIN_STROKE px once scaled to 20 px.

    MNIST strokes are 2-3 px wide at 28x28; a fine pen on a large photo would otherwise
    shrink to faint one-pixel lines that look nothing like the training data.
    """
    scale = BOX / max(ink.shape)
    wanted = MIN_STROKE / scale  # in input pixels
    width = ink_module.stroke_width(ink > 0.5 * ink.max())
    if width >= wanted:
        return ink
    k = int(np.ceil(wanted - width)) + 1  # a k x k grey dilation; the picture grows by k - 1
    h, w = ink.shape
    grown = ink_module.ndi().maximum_filter(np.pad(ink, k - 1), size=k, mode="constant")
    return grown[k // 2 : k // 2 + h + k - 1, k // 2 : k // 2 + w + k - 1]


def _resize(x: np.ndarray, longer: int, method: str) -> np.ndarray:
    """Resize so the longer side is ``longer`` px, keeping the aspect ratio (Pillow)."""
    h, w = x.shape
    scale = longer / max(h, w)
    size = (max(1, min(longer, round(w * scale))), max(1, min(longer, round(h * scale))))
    image_mod = _pillow()
    resized = image_mod.fromarray(x.astype(np.float32)).resize(
        size, getattr(image_mod.Resampling, method)
    )
    return np.asarray(resized, dtype=np.float64)


def _prepare(x: np.ndarray, source: str) -> np.ndarray:
    ink, _ = _find_ink(x, source)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if max(ink.shape) > PRE_SHRINK:
        # Area-average big crops first, so that widening strokes stays cheap.
        ink = _resize(ink, PRE_SHRINK, "BOX")
    ink = _thicken(ink)
    small = np.clip(_resize(ink, BOX, "LANCZOS"), 0.0, 1.0)  # Lanczos overshoots
    new_h, new_w = small.shape
    peak = small.max()
    if peak <= 0:
        raise ValueError(f"no digit found in {source}: the ink vanished when scaled to {BOX} px")
    small /= peak  # thin strokes averaged down from a big image would otherwise be faint

    # LeCun's centring: paste in the middle of the 28x28 field, then shift by the rounded
    # offset of the centre of mass from (14, 14). Centred top is (28 - h) // 2, so the final
    # top is round(14 - com) either way; clipping keeps the whole digit in the frame.
    total = small.sum()
    com_r = float((np.arange(new_h) @ small.sum(axis=1)) / total)
    com_c = float((np.arange(new_w) @ small.sum(axis=0)) / total)
    top = int(np.clip(np.floor(FIELD / 2 - com_r + 0.5), 0, FIELD - new_h))
    left = int(np.clip(np.floor(FIELD / 2 - com_c + 0.5), 0, FIELD - new_w))
    out = np.zeros((FIELD, FIELD), dtype=np.float32)
    out[top : top + new_h, left : left + new_w] = small
    return out


def prepare_digit(image: np.ndarray) -> np.ndarray:
    """Prepare an array image of one digit the way MNIST digits were prepared.

    Args:
        image: greyscale ``(H, W)`` or colour ``(H, W, 3)`` / ``(H, W, 4)`` array, uint8
            (0..255), uint16, bool, or float in [0, 1] (floats above 1 are read as 0..255).
            Transparent parts are shown over white for dark ink and over black for light
            ink. Either polarity works: dark ink on light paper is inverted; a dark frame
            round a light page is removed.

    Returns:
        float32 array of shape (28, 28) in [0, 1]: bright ink on black (like MNIST / 255),
        the longer side of the digit 20 px, its centre of mass at pixel (14, 14).

    Raises:
        ValueError: wrong shape or value range, or no digit found; the message says why: a
            blank image, one too small, too little ink (a speck), or no stroke-like content
            (noise, a solid area).
    """
    return _prepare(_to_grey(image), "the image")


def _read_pixels(im: Any) -> np.ndarray:
    """Decode an opened Pillow image to an array accepted by :func:`_to_grey`."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)  # phone photos are often stored sideways
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        return arr / (65535.0 if arr.max() > 255 else 255.0)
    if im.mode == "F":
        return np.asarray(im, dtype=np.float64)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    return np.asarray(im.convert("RGBA" if has_alpha else "L"))


def load_digit(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG/JPEG (anything Pillow reads) of one handwritten digit and prepare it like
    MNIST; see :func:`prepare_digit` for the result.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable image, is larger than ``MAX_MEGAPIXELS``
            (checked before decoding), or is blank.
        ImportError: Pillow is not installed.
    """
    path = Path(path)
    image_mod = _pillow()
    from PIL import UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")

    bomb = (image_mod.DecompressionBombError, image_mod.DecompressionBombWarning)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_mod.DecompressionBombWarning)
            (w, h), pixels = _decode(image_mod, path)
    except UnidentifiedImageError as exc:
        raise ValueError(
            f"could not read {path} as an image: Pillow does not recognise its format"
            " (expected PNG, JPEG or another common image file)"
        ) from exc
    except bomb as exc:
        raise ValueError(
            f"{path} declares a huge image size (possible decompression bomb); refusing to"
            " decode it"
        ) from exc
    except PermissionError:
        raise
    # Truncated or corrupt data surfaces while decoding, as any of these depending on where.
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        raise ValueError(
            f"could not read {path} as an image (corrupt or truncated): {exc}"
        ) from exc
    if pixels is None:
        raise ValueError(
            f"{path} is {w}x{h} pixels ({w * h / 1e6:.1f} megapixels), over the limit of"
            f" {MAX_MEGAPIXELS:g}; scale it down first (a few hundred pixels across is plenty"
            " for one digit)"
        )
    return _prepare(_to_grey(pixels), str(path))


def _decode(image_mod: Any, path: Path) -> tuple[tuple[int, int], np.ndarray | None]:
    """Return the image size and its pixels, or None for pixels if it is over the limit."""
    with image_mod.open(path) as im:  # lazy: only the header has been read here
        w, h = im.size
        if w * h > MAX_MEGAPIXELS * 1e6:
            return (w, h), None
        return (w, h), _read_pixels(im)
