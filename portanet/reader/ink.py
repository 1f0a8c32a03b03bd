"""Finding the digit's ink in a picture: is it pen strokes at all, what is frame, ruled line,
dust or a blot, and is it one digit or several.

Works on an ink map (bright ink on 0, in [0, 1]) at most ANALYSIS pixels across, made of block
maxima so that thin strokes survive; NumPy only.
"""

from __future__ import annotations

import numpy as np

from portanet.number_checks import ceil_div

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
#: 0.4) is a stain or a blot, not part of the digit, when stroke-like ink remains beside it.
BLOB_THICKNESS = 0.5
#: A straight run of ink at least this share of the image across, reaching this much beyond
#: the other ink on both ends, is a ruled line (or a margin), not a stroke: it is removed.
LINE_SPAN = 0.75
LINE_BEYOND = 0.05
#: Ink this strong or stronger is looked at for ruled lines (they are often faint).
LINE_INK = 0.05
#: Marks closer than this share of the largest mark's size belong to one digit.
MARK_GAP = 0.15
#: Marks at least this share of the tallest mark's height (and DIGIT_INK of the most ink) are
#: digits; a shorter one is part of a digit (a 5's detached flag) or a dash.
DIGIT_SIZE = 0.5
DIGIT_INK = 0.1
SEVERAL = "more than one digit"
"""How the problem :func:`judge` reports for several digit-sized marks begins."""


def otsu(x: np.ndarray) -> float:
    """Otsu's threshold on [0, 1]: the grey level that best splits the image into two classes."""
    counts, edges = np.histogram(x, bins=256, range=(0.0, 1.0))
    p = counts / counts.sum()
    levels = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu0 = np.cumsum(p * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu0[-1] * w0 - mu0) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean image: labels (0 outside, 1..n) and their sizes
    (index 0 unused). Min-label propagation with pointer jumping."""
    h, w = mask.shape
    none = h * w
    labels = np.where(mask, np.arange(none).reshape(h, w), none)
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        low = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(low, padded[dy : dy + h, dx : dx + w], out=low)
        low = np.where(mask, low, none).ravel()
        inside = low < none
        low[inside] = low[low[inside]]  # jump to the label of the label
        low = low.reshape(h, w)
        if np.array_equal(low, labels):
            break
        labels = low
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(h, w)
    if not mask.all():  # the "none" value sorts last; make it 0 and the components 1..n
        inverse = np.where(mask, inverse + 1, 0)
    else:
        inverse = inverse + 1
    return inverse, np.bincount(inverse.ravel())


def _border(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x[0, :], x[-1, :], x[1:-1, 0], x[1:-1, -1]])


def _erode(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.logical_and.reduce([padded[dy : dy + h, dx : dx + w]
                                  for dy in range(3) for dx in range(3)])


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    h, w = mask.shape
    return np.logical_or.reduce([padded[dy : dy + h, dx : dx + w]
                                 for dy in range(3) for dx in range(3)])


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by (dy, dx), False where it moved in from outside."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def _line_opening(mask: np.ndarray, length: int) -> np.ndarray:
    """The ink that lies on a nearly horizontal straight run of ``length`` pixels (slopes up
    to about 3.5 degrees either way: a page photographed slightly askew)."""
    found = np.zeros_like(mask)
    for slope in (-0.06, -0.03, 0.0, 0.03, 0.06):
        steps = [(round(slope * dx), dx) for dx in range(length)]
        run = mask.copy()
        for dy, dx in steps[1:]:
            run &= _shift(mask, -dy, -dx)
        for dy, dx in steps:
            found |= _shift(run, dy, dx)
    return found


def _ruled_lines(mask: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Ruled lines and margins in an ink mask: straight runs across LINE_SPAN of the image
    that reach LINE_BEYOND of it past the other ``strong`` ink on both ends, widened by a
    pixel (their anti-aliased edges), except where a stroke crosses them (ink just above and
    below)."""
    lines = np.zeros_like(mask)
    for transpose in (False, True):
        m, s = (mask.T, strong.T) if transpose else (mask, strong)
        n = m.shape[1]
        labels, _ = _components(_line_opening(m, max(2, int(LINE_SPAN * n))))
        rest = s & ~_dilate(labels > 0)
        if not rest.any():
            continue
        used = np.flatnonzero(rest.any(axis=0))
        for label in range(1, int(labels.max()) + 1):
            cols = np.flatnonzero((labels == label).any(axis=0))
            if cols[-1] - cols[0] + 1 >= LINE_SPAN * n and \
                    cols[0] <= used[0] - LINE_BEYOND * n and cols[-1] >= used[-1] + LINE_BEYOND * n:
                band = _dilate(labels == label)
                above = np.logical_or.reduce([_shift(m & ~band, k, 0) for k in range(1, 5)])
                below = np.logical_or.reduce([_shift(m & ~band, -k, 0) for k in range(1, 5)])
                line = band & ~(above & below)
                lines |= line.T if transpose else line
    return lines & mask


def _blots(labels: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Labels of compact blobs (stains, blots: thickness at least BLOB_THICKNESS of their
    size) beside stroke-like ink; none when every remaining mark is compact."""
    present = np.setdiff1d(np.unique(labels[labels > 0]), dropped)
    if present.size < 2:
        return np.zeros(0, dtype=np.int64)
    thickness = dict.fromkeys(present.tolist(), 1)
    mask = np.isin(labels, present)
    while (mask := _erode(mask)).any():
        for label in np.unique(labels[mask]).tolist():
            thickness[label] += 2
    blobs = []
    for label in present.tolist():
        rows, cols = np.nonzero(labels == label)
        span = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        if thickness[label] >= BLOB_THICKNESS * span and span > 2:
            blobs.append(label)
    return np.asarray(blobs if len(blobs) < present.size else [], dtype=np.int64)


def _digit_marks(labels: np.ndarray, faint: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The boxes (top, left, bottom, right) of the digit-sized marks: components grouped when
    joined by ``faint`` ink (a stroke that thins out between two pieces of one digit) or
    closer than MARK_GAP of the largest one's size, then those groups at least DIGIT_SIZE of
    the largest group's size and DIGIT_INK of its ink."""
    joined, _ = _components(faint | (labels > 0))
    boxes, inks = [], []
    for group in np.unique(joined[labels > 0]).tolist():
        rows, cols = np.nonzero((joined == group) & (labels > 0))
        boxes.append([rows.min(), cols.min(), rows.max(), cols.max()])
        inks.append(rows.size)
    if len(boxes) < 2:
        return [tuple(b) for b in boxes]
    gap = MARK_GAP * max(max(b[2] - b[0], b[3] - b[1]) + 1 for b in boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                apart = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
                if apart <= gap:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]),
                                max(a[3], b[3])]
                    inks[i] += inks.pop(j)
                    boxes.pop(j)
                    merged = True
                    break
            if merged:
                break
    heights = [b[2] - b[0] + 1 for b in boxes]  # digits are about as tall as each other
    return [tuple(b) for b, height, ink in zip(boxes, heights, inks, strict=True)
            if height >= DIGIT_SIZE * max(heights) and ink >= DIGIT_INK * max(inks)]


def _several(boxes: list[tuple[int, int, int, int]], f: int) -> str:
    """The problem for several digit-sized marks, with where they are and what to do."""
    rows = sorted(boxes)
    side = all(b[1] > a[3] for a, b in zip(sorted(boxes, key=lambda b: b[1]),
                                             sorted(boxes, key=lambda b: b[1])[1:], strict=False))
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
    _, sizes = _components(ink[top : top + ANALYSIS, left : left + ANALYSIS] > 0.5)
    blobs = np.sort(sizes[1:])[::-1]
    if blobs.sum() < 20 or blobs[:4].sum() >= MIN_COHERENCE * blobs.sum():
        return 0
    return blobs.size


def judge(ink: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Remove frames, ruled lines, specks and blots from an ink map; return it and why it is
    no digit (or None). A problem starting with SEVERAL means several digit-sized marks.

    Decided on a copy at most ANALYSIS px across, made of block maxima so thin strokes stay.
    """
    specks = _scattered(ink)
    if specks:
        return ink, (f"no stroke-like content: the ink is scattered over {specks} specks "
                     f"(noise or texture?), not pen strokes")
    f, small = _block_maxima(ink)
    lines = _ruled_lines(small > LINE_INK, small > 0.5)  # faint ruled lines too
    labels, sizes = _components((small > 0.5) & ~lines)
    if sizes.size <= 1:
        return ink, "the ink is too faint to make out strokes"
    frames = _frames(labels, sizes)
    if frames.size == sizes.size - 1:
        return ink, ("the marks cover most of the image's border, like a background or a "
                     "frame, with nothing inside; crop the picture to the digit")
    drop = _strays(labels, sizes, frames)
    if drop.size or lines.any():
        gone = np.isin(labels, drop) | lines
        ink = np.where(_full_size(gone, f, ink.shape), 0.0, ink)
        labels = np.where(np.isin(labels, drop), 0, labels)
    several = _digit_marks(labels, (small > LINE_INK) & ~lines)
    if len(several) > 1:
        return ink, _several(several, f)
    mask = labels > 0
    # Only ink near the kept strokes counts: what fades out of a removed frame or speck, and
    # faint marks that never reach half strength (paper grain in a shadow, a faint ruled
    # line), would otherwise widen the crop.
    ink = np.where(_full_size(_dilate(_dilate(mask)), f, ink.shape), ink, 0.0)
    return ink, _shape_problem(mask, f, ink.shape)


def _block_maxima(ink: np.ndarray) -> tuple[int, np.ndarray]:
    """The block side f and the copy of ``ink`` made of the maxima of its f x f blocks, at most
    ANALYSIS px across."""
    h, w = ink.shape
    f = max(1, ceil_div(max(h, w), ANALYSIS))
    hp, wp = ceil_div(h, f) * f, ceil_div(w, f) * f
    small = np.pad(ink, ((0, hp - h), (0, wp - w))).reshape(hp // f, f, wp // f, f).max(axis=(1, 3))
    return f, small


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
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    tall, wide = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    span = max(tall, wide)
    if span < MIN_EXTENT * max(mask.shape):
        return (f"too little ink: the only marks span about {tall * f}x{wide * f} px of the "
                f"{h}x{w} image (a speck or dust?); draw the digit larger or crop the picture "
                f"close to it")
    if _is_page(mask, rows, cols):
        return (f"no stroke-like content: the ink is a filled {tall * f}x{wide * f} px "
                f"rectangle with other marks inside, like a page on a table; crop the picture "
                f"to the page")
    thickness = 1  # the widest disc (square) that fits in the ink, by repeated erosion
    while (mask := _erode(mask)).any():
        thickness += 2
    if thickness > MAX_THICKNESS * span:
        return (f"no stroke-like content: the ink is a solid area about {thickness * f} px "
                f"thick in a {span * f} px mark, not pen strokes; crop the picture to the digit")
    return None


def _is_page(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> bool:
    """Whether the ink ``mask`` (spanning ``rows`` and ``cols``), its holes filled in, fills
    PAGE_FILL of its box with holes under PAGE_HOLES of that: a page with marks on it."""
    holes = _components(~mask)[0]
    outside = np.isin(holes, _border(holes)) & (holes > 0)
    filled = ~outside  # the ink with its holes filled in
    area = np.count_nonzero(filled[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    inside = np.count_nonzero(filled & ~mask)
    tall, wide = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    return area >= PAGE_FILL * tall * wide and 0 < inside < PAGE_HOLES * area
