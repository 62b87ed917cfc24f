"""Procedural cartoon faces: a seeded stand-in for Google's Cartoon Set (which can't be downloaded).

Each face is drawn from 14 integer attributes (``ATTRIBUTES``: face shape and skin, hair style and
colour, eye shape, colour, size and spacing, eyebrow shape and angle, mouth, glasses and their colour,
background) as layers of signed-distance shapes, painted back to front with anti-aliased coverage
``clip(1/2 - d / pixel, 0, 1)`` (Quilez, "2D distance functions"), vectorised over a batch of faces.
Face coordinates: x right, y down, the head within [-1, 1]; faces are left-right symmetric, so left and
right features share one mirrored coordinate |x|.
"""
from __future__ import annotations

import numpy as np

from . import Dataset
from .files import split_dataset, to_unit

ATTRIBUTES = {  # name -> value names; label columns in this order
    "face_shape": ("round", "oval", "square"),
    "skin": ("pale", "fair", "tan", "olive", "brown", "dark"),
    "hair_style": ("none", "short", "long", "curly"),
    "hair_color": ("black", "brown", "blond", "ginger", "grey", "blue"),
    "eye_shape": ("round", "oval", "sleepy"),
    "eye_color": ("brown", "blue", "green", "grey"),
    "eye_size": ("small", "medium", "large"),
    "eye_spacing": ("close", "medium", "wide"),
    "eyebrow_shape": ("straight", "arched", "thick"),
    "eyebrow_angle": ("sad", "flat", "angry"),
    "mouth": ("smile", "neutral", "open"),
    "glasses": ("none", "round", "square"),
    "glasses_color": ("black", "red", "blue", "gold"),
    "background": ("sky", "mint", "peach", "lavender", "lemon", "rose", "grey", "teal"),
}
SIZES = (32, 64)


def _rgb(*hexes):
    return np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in hexes], np.float32) / 255


PALETTES = {
    "skin": _rgb("ffe3cc", "f5c9a5", "e0ac7d", "c68e5a", "8d5a36", "5e3c28"),
    "hair_color": _rgb("221c1c", "6b4226", "e8c872", "b8542a", "a8a8a8", "4a6fd0"),
    "eye_color": _rgb("6b3e1e", "3f7fd0", "3c9a50", "7a7f8a"),
    "glasses_color": _rgb("1a1a1a", "d03030", "2850c8", "c8a030"),
    "background": _rgb("a8d8f0", "b4e8c8", "f8d0b0", "d0c0f0", "f8f0a0", "f0b8c8", "d8d8d8", "80c8c0"),
}
INK, WHITE = _rgb("2a1e1e", "ffffff")[:, :, None, None, None]    # outlines and pupils; eye whites
MOUTH = _rgb("8a2a32", "ffffff", "e07080")[:, :, None, None, None]  # inside, teeth, tongue


# --- signed distances (negative inside) -------------------------------------------------------
def _ellipse(x, y, rx, ry):
    """Approximate distance to an ellipse, ``k0 (k0 - 1) / k1`` with ``k0 = |p / r|, k1 = |p / r^2|``."""
    k0 = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    k1 = np.sqrt((x / rx ** 2) ** 2 + (y / ry ** 2) ** 2)
    return k0 * (k0 - 1) / np.maximum(k1, 1e-6)


def _box(x, y, bx, by, r):
    """Rounded box of half sizes (bx, by) and corner radius r."""
    qx, qy = np.abs(x) - bx + r, np.abs(y) - by + r
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r


def _segment(x, y, ax, ay, bx, by, r):
    """Capsule: points within r of the segment a-b."""
    px, py, dx, dy = x - ax, y - ay, bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0, 1)
    return np.hypot(px - h * dx, py - h * dy) - r


def _arc(x, y, half_angle, radius, r):
    """Stroke of width 2 r along the circle of ``radius`` at the origin, within ``half_angle`` of +y."""
    s, c = np.sin(half_angle), np.cos(half_angle)
    x = np.abs(x)
    return np.where(c * x > s * y, np.hypot(x - s * radius, y - c * radius),
                    np.abs(np.hypot(x, y) - radius)) - r


def _stroke(d, width):
    return np.abs(d) - width


# --- rendering ----------------------------------------------------------------------------------
def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Face coordinates of the pixel columns (x) and rows (y): the image shows [-0.8, 0.8] in x and
    [-0.76, 0.84] in y (the face is centred at (0, 0.02))."""
    u = ((np.arange(size, dtype=np.float32) + 0.5) * 2 / size - 1) * 0.8
    return u, u + 0.04


def _table(values, index):
    """Per-face parameter ``values[index]`` shaped to broadcast against [batch, H, W]."""
    return np.asarray(values, np.float32)[index][:, None, None]


def _render_batch(a: dict, size: int) -> np.ndarray:
    x, y = pixel_centres(size)
    px = x[1] - x[0]
    X, Y = x[None, None, :], y[None, :, None]
    AX = np.abs(X)
    n = len(a["skin"])

    def col(name):
        """[3, batch, 1, 1] colours of a palette attribute."""
        return PALETTES[name][a[name]].T[:, :, None, None]

    img = np.broadcast_to(col("background"), (3, n, size, size)).copy()   # channels first: fast updates

    def paint(d, colour, mask=None):
        cover = np.clip(0.5 - d / px, 0, 1)
        if mask is not None:
            cover = cover * mask
        for img_c, colour_c in zip(img, np.broadcast_to(colour, (3, n, 1, 1))):
            img_c += cover * (colour_c - img_c)

    def outlined(d, colour, mask=None, width=0.018):
        paint(d - width, INK, mask)
        paint(d, colour, mask)

    def is_(name, value):
        return (a[name] == ATTRIBUTES[name].index(value))[:, None, None]

    skin, hair = col("skin"), col("hair_color")
    cy = 0.02
    shape = a["face_shape"]
    rx, ry = _table([0.50, 0.44, 0.47], shape), _table([0.52, 0.58, 0.53], shape)
    d_face = np.where(is_("face_shape", "square"), _box(X, Y - cy, rx, ry, 0.2), _ellipse(X, Y - cy, rx, ry))

    # behind the face: hair, neck, ears
    paint(_box(X, Y - cy - 0.12, rx + 0.09, ry + 0.2, 0.3), hair, is_("hair_style", "long"))
    theta = np.arctan2(Y - cy + 0.12, X)
    paint(np.hypot(X, Y - cy + 0.12) - (ry + 0.2) - 0.025 * np.sin(14 * theta), hair, is_("hair_style", "curly"))
    outlined(_box(X, Y - cy - 0.62, 0.16, 0.35, 0.05), 0.88 * skin)
    outlined(_ellipse(AX - rx + 0.01, Y - cy - 0.03, 0.075, 0.11), skin)
    outlined(d_face, skin)

    # hair in front: a cap over the head down to a curved fringe
    cap = np.maximum(d_face - 0.05, Y - (cy - 0.55 * ry + 0.35 * X ** 2))
    paint(cap, hair, ~is_("hair_style", "none"))

    # eyes: white, iris, pupil, highlight; the sleepy eye's upper lid in skin
    ex, ey = _table([0.15, 0.19, 0.23], a["eye_spacing"]), cy - 0.04
    s = _table([0.065, 0.08, 0.095], a["eye_size"])
    rw, rh = s * _table([1.0, 1.3, 1.15], a["eye_shape"]), s * _table([1.0, 0.8, 1.0], a["eye_shape"])
    ox, oy = AX - ex, Y - ey
    d_eye = _ellipse(ox, oy, rw, rh)
    outlined(d_eye, WHITE, width=0.014)
    r_iris = 0.65 * np.minimum(rw, rh)
    paint(np.maximum(np.hypot(ox, oy) - r_iris, d_eye), col("eye_color"))
    paint(np.hypot(ox, oy) - 0.5 * r_iris, INK)
    paint(np.hypot(ox - 0.35 * r_iris, oy + 0.35 * r_iris) - 0.22 * r_iris, WHITE)
    paint(np.maximum(d_eye - 0.016, oy + 0.1 * rh), skin, is_("eye_shape", "sleepy"))
    paint(_stroke(np.maximum(d_eye, oy + 0.1 * rh), 0.01), INK, is_("eye_shape", "sleepy"))

    # eyebrows above each eye, turned by their angle (inner end up: sad, down: angry)
    angle = _table([-0.3, 0.0, 0.35], a["eyebrow_angle"])
    bx, by = AX - ex, Y - (ey - rh - 0.075)
    lx, ly = np.cos(angle) * bx - np.sin(angle) * by, np.cos(angle) * by + np.sin(angle) * bx
    brow = np.where(is_("eyebrow_shape", "straight"), _segment(lx, ly, -0.075, 0, 0.075, 0, 0.02),
                    np.where(is_("eyebrow_shape", "arched"), _arc(lx, 0.12 - ly, 0.65, 0.12, 0.02),
                             _segment(lx, ly, -0.065, 0, 0.065, 0, 0.035)))
    paint(brow, np.where(is_("hair_style", "none"), INK, hair))

    # nose and mouth
    paint(_arc(X, Y - cy - 0.1, 1.0, 0.04, 0.012), 0.7 * skin)
    my = cy + 0.27
    paint(_arc(X, Y - my + 0.1, 0.75, 0.14, 0.018), MOUTH[0], is_("mouth", "smile"))
    paint(_segment(X, Y, -0.09, my, 0.09, my, 0.018), MOUTH[0], is_("mouth", "neutral"))
    d_open = np.maximum(_ellipse(X, Y - my + 0.03, 0.12, 0.12), my - 0.03 - Y)
    opened = is_("mouth", "open")
    outlined(d_open, MOUTH[0], opened, width=0.012)
    paint(np.maximum(d_open, Y - my), MOUTH[1], opened)
    paint(np.maximum(d_open, np.hypot(X, Y - my - 0.1) - 0.07), MOUTH[2], opened)

    # glasses: two frames, a bridge and the temples
    glasses = col("glasses_color")
    rl = np.maximum(rw, rh) + 0.05
    frame = np.where(is_("glasses", "round"), np.hypot(ox, oy) - rl, _box(ox, oy, rw + 0.06, rh + 0.045, 0.03))
    half = np.where(is_("glasses", "round"), rl, rw + 0.06)
    frame = np.minimum(np.minimum(_stroke(frame, 0.016), _segment(AX, Y, 0, ey, ex - half, ey, 0.014)),
                       _segment(AX, Y, ex + half, ey, rx + 0.02, ey - 0.02, 0.014))
    paint(frame, glasses, ~is_("glasses", "none"))
    return img


def sample_attributes(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` faces' attributes, each uniform over its values, from ``numpy.random.default_rng(seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, len(values), n) for name, values in ATTRIBUTES.items()}


def render_faces(attributes: dict, size: int = 64, batch: int = 64) -> np.ndarray:
    """Faces with the given ``attributes`` (name -> [n] integers, every name of ``ATTRIBUTES``) as
    uint8 [n, 3, size, size]; rendered ``batch`` faces at a time."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}; got {size!r}")
    missing = sorted(set(ATTRIBUTES) - set(attributes))
    unknown = sorted(set(attributes) - set(ATTRIBUTES))
    if missing or unknown:
        raise ValueError(f"attributes must name exactly {', '.join(ATTRIBUTES)}; "
                         f"missing {missing}, unknown {unknown}")
    a = {name: np.asarray(v, dtype=np.int64).reshape(-1) for name, v in attributes.items()}
    n = len(a["skin"])
    for name, v in a.items():
        if len(v) != n or ((v < 0) | (v >= len(ATTRIBUTES[name]))).any():
            raise ValueError(f"attributes[{name!r}] must be {n} integers in 0..{len(ATTRIBUTES[name]) - 1} "
                             f"({', '.join(ATTRIBUTES[name])})")
    out = np.empty((n, 3, size, size), np.uint8)
    for i in range(0, n, batch):
        img = _render_batch({k: v[i:i + batch] for k, v in a.items()}, size)
        out[i:i + batch] = np.round(255 * np.clip(img, 0, 1)).transpose(1, 0, 2, 3)
    return out


def load_cartoon(n: int = 10000, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """``n`` procedural cartoon faces as [n, 3, size, size] float32 in [-1, 1], 8-bit (``levels=256``). The
    default size, 32, is the CPU one of the shipped face models; 64 is the seed's (``configs/cartoon64.json``).

    Labels are the attributes, [n, 14] integers in the column order of ``info["attributes"]``
    (name -> value names, ``ATTRIBUTES``). ``seed`` draws the attributes and the split.
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2; got {n!r}")
    attributes = sample_attributes(n, seed)
    x = to_unit(render_faces(attributes, size), 256)
    labels = np.stack(list(attributes.values()), 1)
    return split_dataset(f"cartoon{size}", x, levels=256, labels=labels, test_fraction=test_fraction,
                         seed=seed, info={"attributes": ATTRIBUTES, "size": size})
