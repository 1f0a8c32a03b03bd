"""Finding the digit's ink in a picture: is it pen strokes at all, and what is frame or dust.

Works on an ink map (bright ink on 0, in [0, 1]) at most ANALYSIS pixels across, made of block
maxima so that thin strokes survive; NumPy only.
"""

from __future__ import annotations

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
    """Remove frames and specks from an ink map; return it and why it is no digit (or None).

    Decided on a copy at most ANALYSIS px across, made of block maxima so thin strokes stay.
    """
    specks = _scattered(ink)
    if specks:
        return ink, (f"no stroke-like content: the ink is scattered over {specks} specks "
                     f"(noise or texture?), not pen strokes")
    h, w = ink.shape
    f = max(1, -(-max(h, w) // ANALYSIS))
    hp, wp = -(-h // f) * f, -(-w // f) * f
    small = np.pad(ink, ((0, hp - h), (0, wp - w))).reshape(hp // f, f, wp // f, f).max(axis=(1, 3))
    labels, sizes = _components(small > 0.5)
    if sizes.size <= 1:
        return ink, "the ink is too faint to make out strokes"
    share = np.bincount(_border(labels), minlength=sizes.size) / _border(labels).size
    share[0] = 0.0
    drop = np.flatnonzero(share >= FRAME_BORDER_SHARE)
    if drop.size == sizes.size - 1:
        return ink, ("the marks cover most of the image's border, like a background or a "
                     "frame, with nothing inside; crop the picture to the digit")
    kept = sizes.copy()
    kept[0] = 0
    kept[drop] = 0
    drop = np.union1d(drop, np.flatnonzero((kept > 0) & (kept < SPECK_SHARE * kept.max())))
    if drop.size:
        gone = np.isin(labels, drop)
        ink = np.where(np.repeat(np.repeat(gone, f, axis=0), f, axis=1)[:h, :w], 0.0, ink)
        labels = np.where(np.isin(labels, drop), 0, labels)
    mask = labels > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    tall, wide = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    # Only ink near the kept strokes counts: what fades out of a removed frame or speck, and
    # faint marks that never reach half strength (paper grain in a shadow, a faint ruled
    # line), would otherwise widen the crop.
    near = _dilate(_dilate(mask))
    ink = np.where(np.repeat(np.repeat(near, f, axis=0), f, axis=1)[:h, :w], ink, 0.0)
    span = max(tall, wide)
    if span < MIN_EXTENT * max(mask.shape):
        return ink, (
            f"too little ink: the only marks span about {tall * f}x{wide * f} px of the {h}x{w} "
            f"image (a speck or dust?); draw the digit larger or crop the picture close to it"
        )
    holes = _components(~mask)[0]
    outside = np.isin(holes, _border(holes)) & (holes > 0)
    filled = ~outside  # the ink with its holes filled in
    area = np.count_nonzero(filled[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    inside = np.count_nonzero(filled & ~mask)
    if area >= PAGE_FILL * tall * wide and 0 < inside < PAGE_HOLES * area:
        return ink, (
            f"no stroke-like content: the ink is a filled {tall * f}x{wide * f} px rectangle "
            f"with other marks inside, like a page on a table; crop the picture to the page"
        )
    thickness = 1  # the widest disc (square) that fits in the ink, by repeated erosion
    while (mask := _erode(mask)).any():
        thickness += 2
    if thickness > MAX_THICKNESS * span:
        return ink, (
            f"no stroke-like content: the ink is a solid area about {thickness * f} px thick "
            f"in a {span * f} px mark, not pen strokes; crop the picture to the digit"
        )
    return ink, None
