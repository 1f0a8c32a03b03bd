"""Finding the digit's ink in a picture: is it pen strokes at all, what is frame, ruled line,
dust or a blot, and is it one digit or several.

Works on an ink map (bright ink on 0, in [0, 1]) at most ANALYSIS pixels across, made of block
maxima so that thin strokes survive. Labelling, distances and morphology are scipy.ndimage's and
scikit-image's (``pip install "portanet[images]"``), imported when a picture is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The ink is judged on a copy at most this many pixels across (block maxima keep thin strokes).
ANALYSIS = 160
#: A border-touching region of ink colour covering at least this share of the image border is
#: a frame (a scanner's margin, the table round the paper), not part of the digit.
FRAME_BORDER_SHARE = 0.4
#: Ink blobs smaller than this share of the largest one are specks (dust), not the digit.
SPECK_SHARE = 0.05
#: The ink must span at least this share of the image's longer side.
MIN_EXTENT = 0.08
#: The four largest blobs must hold at least this share of the ink (else it is noise).
MIN_COHERENCE = 0.5
#: Ink whose widest part is thicker than this share of its size is a solid area, not strokes.
MAX_THICKNESS = 0.45
#: Ink that, holes filled, fills this share of its box, with holes under PAGE_HOLES of that
#: area, is a page with a digit on it (a light page on a darker table), not a digit.
PAGE_FILL = 0.9
PAGE_HOLES = 0.35
#: A blob of ink at least this thick for its size (a disc: about 0.7; a pen stroke: well under
#: 0.4), and BLOB_STROKES times as thick as the other ink, is a stain or a blot, not part of
#: the digit ...
BLOB_THICKNESS = 0.5
BLOB_STROKES = 1.5
#: ... or further than this many stroke widths from it (a compact piece of a low-resolution
#: digit lies within about 2 stroke widths of the rest; the scenes' ink blot 2.7 or more).
BLOB_GAP = 2.5
#: A blot holds under this share of the other ink (the digit is most of the ink).
BLOB_SHARE = 0.5
#: A straight run of ink at least this share of the image across, reaching this much beyond
#: the other ink on both ends, is a ruled line (or a margin), not a stroke: it is removed.
LINE_SPAN = 0.9
LINE_BEYOND = 0.05
#: ... and thinner than this share of the picture across it (a ruled line on a photo of a
#: page: about 1%; a stroke of a digit that fills the picture: 8% or more).
LINE_THIN = 0.04
#: Ink this strong or stronger is looked at for ruled lines (they are often faint).
LINE_INK = 0.05
#: Two marks are pieces of one digit unless the gap between their nearest pixels is over
#: JOIN_STROKES stroke widths and over JOIN_SIZE of the larger one's size (the longer side of
#: its box). Measured (bench/digits.py, docs/draw.md): single MNIST digits with broken strokes,
#: at low resolution, with thin pens, need up to 0.4 of the size and 6 stroke widths (12 with
#: a thin pen); two MNIST digits half a digit's height apart or more are all refused.
JOIN_STROKES = 3.0
JOIN_SIZE = 0.5
#: Marks at least this share of the tallest mark's height (and DIGIT_INK of the most ink) are
#: digits; a shorter one is part of a digit (a 5's detached flag) or a dash.
DIGIT_SIZE = 0.5
DIGIT_INK = 0.1
SEVERAL = "more than one digit"
"""How the problem :func:`judge` reports for several digit-sized marks begins."""
SMALL = "too little ink"
"""How the problem :func:`judge` reports for marks too small for the picture begins."""

_IMAGES_HINT = ('reading images needs scikit-image and SciPy: pip install "portanet[images]" '
                '(or pip install scikit-image)')
EIGHT = np.ones((3, 3), dtype=bool)
"""8-connectivity: pixels touching at a corner are joined."""


def ndi() -> Any:
    """scipy.ndimage, or an ImportError saying what to install."""
    try:
        from scipy import ndimage
    except ImportError as exc:
        raise ImportError(_IMAGES_HINT) from exc
    return ndimage


def otsu(x: np.ndarray) -> float:
    """Otsu's threshold (scikit-image's) of ``x``: the grey level that best splits it in two
    (the upper class is what lies above it)."""
    try:
        from skimage.filters import threshold_otsu
    except ImportError as exc:
        raise ImportError(_IMAGES_HINT) from exc
    return float(threshold_otsu(x, nbins=256)) if np.ptp(x) > 0 else float(x.flat[0])


def components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean image: labels (0 outside, 1..n) and their sizes
    (index 0 unused)."""
    labels, n = ndi().label(mask, structure=EIGHT)
    return labels, np.bincount(labels.ravel(), minlength=n + 1)


def thickness(mask: np.ndarray, labels: np.ndarray | None = None) -> Any:
    """The side of the widest square that fits in ``mask`` (in each label's ink, given
    ``labels``: an array indexed by label)."""
    depth = ndi().distance_transform_cdt(np.pad(mask, 1), metric="chessboard")[1:-1, 1:-1]
    if labels is None:
        return 2 * int(depth.max(initial=0)) - 1
    return 2 * np.asarray(ndi().maximum(depth, labels, np.arange(labels.max() + 1))) - 1


def stroke_width(mask: np.ndarray) -> float:
    """Rough stroke width in pixels: twice the inked area over the number of edge pixels
    (a stroke of width w and length L has area w*L and about 2*L edge pixels)."""
    edge = int(np.count_nonzero(mask & ~ndi().binary_erosion(mask)))  # 4-neighbour interior
    return 2.0 * np.count_nonzero(mask) / edge if edge else float(max(mask.shape))


def _border(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[0, :], x[-1, :], x[1:-1, 0], x[1:-1, -1]])


def _line_opening(mask: np.ndarray, length: int) -> np.ndarray:
    """The ink that lies on a nearly horizontal straight run of ``length`` pixels (slopes up
    to about 3.5 degrees either way: a page photographed slightly askew)."""
    found = np.zeros_like(mask)
    for slope in (-0.06, -0.03, 0.0, 0.03, 0.06):
        rise = [round(slope * dx) for dx in range(length)]
        low = min(rise)
        line = np.zeros((max(rise) - low + 1, length), dtype=bool)
        line[np.asarray(rise) - low, np.arange(length)] = True
        found |= ndi().binary_opening(mask, structure=line)
    return found


def _ruled_lines(mask: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Ruled lines and margins in an ink mask: straight runs across LINE_SPAN of the image,
    thinner than LINE_THIN of it, that reach LINE_BEYOND of it past the other ``strong`` ink
    on both ends, widened by a
    pixel (their anti-aliased edges), except where a stroke crosses them (ink just above and
    below)."""
    lines = np.zeros_like(mask)
    for transpose in (False, True):
        m, s = (mask.T, strong.T) if transpose else (mask, strong)
        n = m.shape[1]
        labels, _ = components(_line_opening(m, max(2, int(LINE_SPAN * n))))
        rest = s & ~ndi().binary_dilation(labels > 0, EIGHT)
        if not rest.any():
            continue
        used = np.flatnonzero(rest.any(axis=0))
        for label, box in enumerate(ndi().find_objects(labels), start=1):
            start, stop = box[1].start, box[1].stop - 1
            thick = np.count_nonzero(labels[box] == label) / (stop - start + 1)
            if stop - start + 1 >= LINE_SPAN * n and start <= used[0] - LINE_BEYOND * n \
                    and stop >= used[-1] + LINE_BEYOND * n and thick <= LINE_THIN * m.shape[0]:
                lines |= _uncrossed(m, labels == label).T if transpose else \
                    _uncrossed(m, labels == label)
    return lines & mask


def _uncrossed(mask: np.ndarray, line: np.ndarray) -> np.ndarray:
    """The ``line`` widened by a pixel, less where ink lies within 4 px above and below it (a
    stroke crossing it)."""
    band = ndi().binary_dilation(line, EIGHT)
    other = mask & ~band
    above, below = np.zeros_like(mask), np.zeros_like(mask)
    for k in range(1, 5):
        above[k:] |= other[:-k]
        below[:-k] |= other[k:]
    return band & ~(above & below)


def _blots(labels: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Labels of compact blobs (stains, blots: at least BLOB_THICKNESS thick for their size,
    under BLOB_SHARE of the other ink) beside stroke-like ink: those BLOB_STROKES times as
    thick as the other ink, or BLOB_GAP stroke widths away from it; none when every
    remaining mark is compact."""
    present = np.setdiff1d(np.unique(labels[labels > 0]), dropped)
    if present.size < 2:
        return np.zeros(0, dtype=np.int64)
    thick = thickness(np.isin(labels, present), labels)
    boxes = ndi().find_objects(labels)
    blobs = []
    for label in present.tolist():
        rows, cols = boxes[label - 1]
        span = max(rows.stop - rows.start, cols.stop - cols.start)
        others = np.isin(labels, present) & (labels != label)
        if span <= 2 or thick[label] < BLOB_THICKNESS * span or \
                np.count_nonzero(labels == label) > BLOB_SHARE * np.count_nonzero(others):
            continue
        if thick[label] >= BLOB_STROKES * thick[np.setdiff1d(present, [label])].max() or \
                _apart(labels == label, others):
            blobs.append(label)
    return np.asarray(blobs if len(blobs) < present.size else [], dtype=np.int64)


def _apart(blob: np.ndarray, others: np.ndarray) -> bool:
    """Whether ``blob`` lies more than BLOB_GAP of the ``others``' stroke widths from them."""
    pieces = np.where(blob, 1, np.where(others, 2, 0))
    return bool(gaps(pieces)[0, 1] > BLOB_GAP * stroke_width(others))


def marks(labels: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """The marks: components of ``labels`` joined by ``faint`` ink (a stroke that thins out
    between two pieces of one digit), labelled 1..n (0 outside)."""
    joined, _ = components(faint | (labels > 0))
    groups = np.where(labels > 0, joined, 0)
    _, relabelled = np.unique(groups, return_inverse=True)
    relabelled = relabelled.reshape(groups.shape)
    return relabelled if (groups == 0).any() else relabelled + 1


def gaps(groups: np.ndarray) -> np.ndarray:
    """The distance in pixels between the nearest pixels of each two marks (n x n)."""
    n = int(groups.max())
    out = np.zeros((n, n))
    for i in range(1, n + 1):
        distance = ndi().distance_transform_edt(groups != i)
        out[i - 1] = ndi().minimum(distance, groups, np.arange(1, n + 1))
    return out


def clusters(groups: np.ndarray, width: float) -> np.ndarray:
    """The digit each mark of ``groups`` belongs to (0..n-1): marks joined, nearest first,
    while the gap between two clusters is at most JOIN_STROKES stroke ``width``s or JOIN_SIZE
    of the larger cluster's size (the longer side of its box)."""
    n = int(groups.max())
    apart = gaps(groups)
    boxes = np.array([[r.start, c.start, r.stop, c.stop] for r, c in ndi().find_objects(groups)])
    digit = np.arange(n)
    for i, j in sorted(zip(*np.triu_indices(n, 1), strict=True), key=lambda ij: apart[ij]):
        a, b = digit[i], digit[j]
        if a == b:
            continue
        size = max(_extent(boxes[digit == a]), _extent(boxes[digit == b]))
        if apart[i, j] <= max(JOIN_STROKES * width, JOIN_SIZE * size):
            digit[digit == b] = a
    return digit


def _extent(boxes: np.ndarray) -> int:
    """The longer side of the box round ``boxes`` (rows of top, left, bottom, right)."""
    return int(max(boxes[:, 2].max() - boxes[:, 0].min(), boxes[:, 3].max() - boxes[:, 1].min()))


def _digit_marks(labels: np.ndarray, faint: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The boxes (top, left, bottom, right) of the digit-sized marks: the :func:`marks` in
    their :func:`clusters`, those at least DIGIT_SIZE of the tallest one's height and
    DIGIT_INK of the most ink."""
    groups = marks(labels, faint)
    n = int(groups.max())
    if n < 2:
        return [] if n == 0 else [_box(groups > 0)]
    digit = clusters(groups, stroke_width(labels > 0))
    pieces = [np.isin(groups, np.flatnonzero(digit == d) + 1) for d in np.unique(digit)]
    boxes = [_box(piece) for piece in pieces]
    inks = [int(np.count_nonzero(piece)) for piece in pieces]
    heights = [b[2] - b[0] + 1 for b in boxes]  # digits are about as tall as each other
    return [b for b, height, ink in zip(boxes, heights, inks, strict=True)
            if height >= DIGIT_SIZE * max(heights) and ink >= DIGIT_INK * max(inks)]


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def _several(boxes: list[tuple[int, int, int, int]], f: int) -> str:
    """The problem for several digit-sized marks, with where they are and what to do."""
    rows = sorted(boxes)
    by_column = sorted(boxes, key=lambda b: b[1])
    side = all(b[1] > a[3] for a, b in zip(by_column, by_column[1:], strict=False))
    stacked = all(b[0] > a[2] for a, b in zip(rows, rows[1:], strict=False))
    where = "side by side" if side else "one above the other" if stacked else "apart"
    return (f"{SEVERAL}: {len(boxes)} marks the size of a digit, {where}, "
            f"about {max(max(b[2] - b[0], b[3] - b[1]) + 1 for b in boxes) * f} px each; "
            f"portanet reads one digit per image: crop the picture to one digit (one image "
            f"per digit)")


def _scattered(ink: np.ndarray) -> int:
    """The number of specks if a full-resolution window in the middle of the image shows the
    ink scattered like noise (the four largest blobs hold under MIN_COHERENCE of it), else 0."""
    h, w = ink.shape
    top, left = max(0, (h - ANALYSIS) // 2), max(0, (w - ANALYSIS) // 2)
    _, sizes = components(ink[top : top + ANALYSIS, left : left + ANALYSIS] > 0.5)
    blobs = np.sort(sizes[1:])[::-1]
    if blobs.sum() < 20 or blobs[:4].sum() >= MIN_COHERENCE * blobs.sum():
        return 0
    return blobs.size


def judge(ink: np.ndarray, even: bool = False) -> tuple[np.ndarray, str | None]:
    """Remove frames, ruled lines, specks and blots from an ink map; return it and why it is
    no digit (or None). A problem starting with SEVERAL means several digit-sized marks.
    ``even``: the ink was read against one paper level (even light); where nothing is removed
    its ink is returned as it is.

    Decided on a copy at most ANALYSIS px across, made of block maxima so thin strokes stay.
    """
    specks = _scattered(ink)
    if specks:
        return ink, (f"no stroke-like content: the ink is scattered over {specks} specks "
                     f"(noise or texture?), not pen strokes")
    f, small = _block_maxima(ink)
    lines = _ruled_lines(small > LINE_INK, small > 0.5)  # faint ruled lines too
    labels, sizes = components((small > 0.5) & ~lines)
    if sizes.size <= 1:
        return ink, "the ink is too faint to make out strokes"
    frames = _frames(labels, sizes)
    if frames.size == sizes.size - 1:
        return ink, ("the marks cover most of the image's border, like a background or a "
                     "frame, with nothing inside; crop the picture to the digit")
    drop = _strays(labels, sizes, frames)
    gone = np.isin(labels, drop) | lines
    if gone.any():
        ink = np.where(_full_size(gone, f, ink.shape), 0.0, ink)
        labels = np.where(np.isin(labels, drop), 0, labels)
    several = _digit_marks(labels, (small > LINE_INK) & ~lines)
    if len(several) > 1:
        return ink, _several(several, f)
    mask = labels > 0
    return _near_strokes(ink, small, mask, gone, f, even), _shape_problem(mask, f, ink.shape)


def _near_strokes(ink: np.ndarray, small: np.ndarray, mask: np.ndarray, gone: np.ndarray,
                  f: int, even: bool) -> np.ndarray:
    """Only the ink near the kept strokes ``mask`` (of the block-maxima copy, blocks of side
    ``f``) counts: what fades out of a removed frame, line or speck (``gone``), and faint
    marks that never reach half strength (a stain's rim, paper grain in a shadow), would
    otherwise widen the crop. In ``even`` light: where nothing is gone, the ink of ``small``
    (the block-maxima copy) connected to the strokes (a blurred stroke's tails, not a stain's
    rim); else, as the reader always did, the ink in the strokes' box widened by 2 px. In
    uneven light, the ink within 2 px of the strokes."""
    if even and not gone.any():
        joined, _ = components(small > 0)
        near = np.isin(joined, np.unique(joined[mask]))
    elif even:
        top, left, bottom, right = _box(mask)
        near = np.zeros_like(mask)
        near[max(0, top - 2) : bottom + 3, max(0, left - 2) : right + 3] = True
    else:
        near = ndi().binary_dilation(mask, EIGHT, iterations=2)
    return np.where(_full_size(near, f, ink.shape), ink, 0.0)


def _block_maxima(ink: np.ndarray) -> tuple[int, np.ndarray]:
    """The block side f and the copy of ``ink`` made of the maxima of its f x f blocks, at most
    ANALYSIS px across."""
    from skimage.measure import block_reduce

    f = max(1, -(-max(ink.shape) // ANALYSIS))
    return f, ink if f == 1 else block_reduce(ink, (f, f), np.max)


def _full_size(mask: np.ndarray, f: int, shape: tuple[int, ...]) -> np.ndarray:
    """A mask of the block-maxima copy blown up by ``f`` to the image's ``shape``."""
    return np.repeat(np.repeat(mask, f, axis=0), f, axis=1)[: shape[0], : shape[1]]


def _frames(labels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Labels of the components covering FRAME_BORDER_SHARE or more of the image's border."""
    share = np.bincount(_border(labels), minlength=sizes.size) / _border(labels).size
    share[0] = 0.0
    return np.flatnonzero(share >= FRAME_BORDER_SHARE)


def _strays(labels: np.ndarray, sizes: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Labels of what is not the digit: the ``frames``, specks (under SPECK_SHARE of the
    largest other component) and blots."""
    kept = sizes.copy()
    kept[0] = 0
    kept[frames] = 0
    drop = np.union1d(frames, np.flatnonzero((kept > 0) & (kept < SPECK_SHARE * kept.max())))
    return np.union1d(drop, _blots(labels, drop))


def _shape_problem(mask: np.ndarray, f: int, shape: tuple[int, ...]) -> str | None:
    """Why the kept ink ``mask`` (of the block-maxima copy, blocks of side ``f``, of an image of
    ``shape``) is no digit: too small, a page, a solid area; None when it may be one."""
    h, w = shape
    top, left, bottom, right = _box(mask)
    tall, wide = bottom - top + 1, right - left + 1
    span = max(tall, wide)
    if span < MIN_EXTENT * max(mask.shape):
        return (f"{SMALL}: the only marks span about {tall * f}x{wide * f} px of the "
                f"{h}x{w} image (a speck or dust?); draw the digit larger or crop the picture "
                f"close to it")
    if _is_page(mask, tall, wide):
        return (f"no stroke-like content: the ink is a filled {tall * f}x{wide * f} px "
                f"rectangle with other marks inside, like a page on a table; crop the picture "
                f"to the page")
    thick = thickness(mask)
    if thick > MAX_THICKNESS * span:
        return (f"no stroke-like content: the ink is a solid area about {thick * f} px "
                f"thick in a {span * f} px mark, not pen strokes; crop the picture to the digit")
    return None


def _is_page(mask: np.ndarray, tall: int, wide: int) -> bool:
    """Whether the ink ``mask`` (``tall`` x ``wide``), its holes filled in, fills PAGE_FILL of
    its box with holes under PAGE_HOLES of that: a page with marks on it."""
    filled = ndi().binary_fill_holes(mask, EIGHT)
    area = np.count_nonzero(filled)
    inside = area - np.count_nonzero(mask)
    return area >= PAGE_FILL * tall * wide and 0 < inside < PAGE_HOLES * area
