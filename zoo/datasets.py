"""The embedded demo data: coloured shapes on textured backgrounds.

Six classes (circle, square, triangle, star, cross, ring) drawn with random
colours, sizes, rotations and positions on noisy, striped backgrounds, with
exact segmentation masks. Deterministic by seed, generated in a second, no
download: the README's main job, the examples and the tests all use it.

- `shapes(n_per_class, ...)` returns arrays in memory.
- `write_shapes(directory, ...)` writes PNG folders that
  `keras.utils.image_dataset_from_directory` reads (`train/`, `val/`,
  `test/`, one sub-folder per class) and the masks beside them
  (`masks/<split>/<class>/<same file name>`); `read_segmentation` reads
  image/mask pairs back.
- `write_multilabel(directory, ...)` writes a multi-label set: `images/`
  holding one to three shapes each, and `labels.csv` naming them.
- `write_segmentation(directory, ...)` writes a segmentation set in the
  layout of PASCAL VOC: `images/`, `masks/` (palette PNGs of class indices,
  255 on a one-pixel border around each shape) and `classes.txt`.
"""

from __future__ import annotations

import os

import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _inside(name, u, v, r, radius):
    """Boolean mask of the shape in rotated coordinates (u, v), polar r."""
    if name == "circle":
        return r <= radius
    if name == "ring":
        return (r <= radius) & (r >= 0.55 * radius)
    if name == "square":
        half = 0.75 * radius
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == "cross":
        arm = 0.3 * radius
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    if name == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):  # three half-planes, inradius radius / 2
            a = np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(a) + v * np.sin(a) <= 0.5 * radius
        return inside
    if name == "star":
        phi = np.arctan2(v, u)
        t = (phi % (2 * np.pi / 5)) / (2 * np.pi / 5)
        return r <= radius * (0.42 + 0.58 * np.abs(2 * t - 1) ** 1.5)
    raise ValueError(f"Unknown shape {name!r}; known: {CLASSES}")


def _written(marker: str, stamp: str) -> bool:
    """Whether a complete set with these settings is already there (its marker file says so)."""
    if not os.path.exists(marker):
        return False
    with open(marker) as f:
        return f.read() == stamp


def _background(rng, size):
    """`(yy, xx, base colour, image)`: a random base colour, oriented stripes, pixel noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    base = rng.uniform(40, 215, 3)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.1, 0.5)
    stripes = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6.3))
    bg = base + rng.uniform(10, 35) * stripes[..., None] + rng.normal(0, 10, (size, size, 3))
    return yy, xx, base, bg


def _colour_against(rng, base):
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - base).mean() < 60:
        colour = rng.uniform(0, 255, 3)
    return colour


def render(label: int, rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One `(size, size, 3)` uint8 image of shape `CLASSES[label]` and its mask.

    The mask holds `label + 1` on the shape and 0 on the background.

    Example:

        >>> import numpy as np, zoo
        >>> img, mask = zoo.datasets.render(0, np.random.default_rng(0), size=32)
        >>> img.shape, img.dtype.name, sorted(np.unique(mask).tolist())
        ((32, 32, 3), 'uint8', [0, 1])
    """
    yy, xx, base, bg = _background(rng, size)
    # The shape: contrasting colour, random size, rotation and position.
    radius = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    theta = rng.uniform(0, 2 * np.pi)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    inside = _inside(CLASSES[label], u, v, np.hypot(dx, dy), radius)
    colour = _colour_against(rng, base)
    fg = colour + rng.normal(0, 8, (size, size, 3))
    image = np.where(inside[..., None], fg, bg)
    mask = np.where(inside, label + 1, 0).astype("uint8")
    return np.clip(image, 0, 255).astype("uint8"), mask


def render_multilabel(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One image holding one to three different shapes, and which shapes it holds.

    Each shape sits in its own quarter of the image (so none hides
    another), with a random colour, size (radius 0.16-0.24 of the side),
    rotation and position inside its quarter.

    Returns:
        `(image uint8 (size, size, 3), present uint8 (len(CLASSES),))`:
        `present[c]` is 1 where shape `CLASSES[c]` is drawn.

    Example:

        >>> import numpy as np, zoo
        >>> img, present = zoo.datasets.render_multilabel(np.random.default_rng(0), size=32)
        >>> img.shape, 1 <= int(present.sum()) <= 3
        ((32, 32, 3), True)
    """
    yy, xx, base, image = _background(rng, size)
    count = int(rng.integers(1, 4))
    labels = rng.choice(len(CLASSES), count, replace=False)
    cells = rng.choice(4, count, replace=False)
    present = np.zeros(len(CLASSES), "uint8")
    half = size / 2
    for label, cell in zip(labels, cells):
        radius = rng.uniform(0.2, 0.25) * size
        x0, y0 = (cell % 2) * half, (cell // 2) * half
        cx, cy = x0 + rng.uniform(radius, half - radius), y0 + rng.uniform(radius, half - radius)
        theta = rng.uniform(0, 2 * np.pi)
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = _inside(CLASSES[int(label)], u, v, np.hypot(dx, dy), radius)
        fg = _colour_against(rng, base) + rng.normal(0, 8, (size, size, 3))
        image = np.where(inside[..., None], fg, image)
        present[int(label)] = 1
    return np.clip(image, 0, 255).astype("uint8"), present


def write_multilabel(
    directory: str | os.PathLike, *, images: int = 2400, size: int = 64, seed: int = 0
) -> str:
    """Write a multi-label demo set (`images/` and `labels.csv`); return `directory`.

    Every image holds one to three of the six shapes (`render_multilabel`);
    `labels.csv` has the columns `path` (relative to `directory`) and
    `labels` (the shapes present, space-separated), what
    `python -m tuning run --labels` reads. An existing, complete set with
    the same settings is kept (a marker file records them).

    Example:

        >>> import os, tempfile, zoo
        >>> root = zoo.datasets.write_multilabel(tempfile.mkdtemp(), images=3, size=32)
        >>> with open(os.path.join(root, "labels.csv")) as f:
        ...     print(f.readline().strip())
        path,labels
    """
    import csv

    from PIL import Image

    directory = os.fspath(directory)
    marker = os.path.join(directory, ".zoo_multilabel")
    stamp = f"images={images} size={size} seed={seed}\n"
    if _written(marker, stamp):
        return directory
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    rows = []
    for i in range(images):
        image, present = render_multilabel(np.random.default_rng([seed, 11, i]), size)
        name = f"images/{i:05d}.png"
        Image.fromarray(image).save(os.path.join(directory, name))
        rows.append((name, " ".join(CLASSES[c] for c in np.flatnonzero(present))))
    with open(os.path.join(directory, "labels.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "labels"))
        writer.writerows(rows)
    with open(marker, "w") as f:
        f.write(stamp)
    return directory


def shapes(
    n_per_class: int = 50, *, size: int = 64, seed: int = 0, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo set in memory: `(images uint8, labels int32, masks uint8)`.

    Args:
        n_per_class: int. Images per class. Defaults to 50.
        size: int. Image side. Defaults to 64.
        seed: int. Same seed and split, same images. Defaults to 0.
        split: str. Different splits draw different images.

    Example:

        >>> import zoo
        >>> x, y, m = zoo.datasets.shapes(2, size=32)
        >>> x.shape, y.tolist(), m.shape
        ((12, 32, 32, 3), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], (12, 32, 32))
    """
    split_id = list(SPLITS).index(split) if split in SPLITS else abs(hash(split)) % 1000
    images, labels, masks = [], [], []
    for label in range(len(CLASSES)):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, split_id, label, i])
            img, mask = render(label, rng, size)
            images.append(img)
            labels.append(label)
            masks.append(mask)
    return np.stack(images), np.array(labels, "int32"), np.stack(masks)


def write_shapes(
    directory: str | os.PathLike, *, images_per_class: int = 200, size: int = 64, seed: int = 0
) -> str:
    """Write the demo set as PNG folders (and masks); return `directory`.

    Splits 70/15/15 into `train/`, `val/`, `test/`, one folder per class;
    masks go to `masks/<split>/<class>/`. An existing, complete set with the
    same settings is kept (a marker file records them).

    Example:

        >>> import os, tempfile, zoo
        >>> root = zoo.datasets.write_shapes(tempfile.mkdtemp(), images_per_class=4, size=32)
        >>> sorted(os.listdir(os.path.join(root, "train")))
        ['circle', 'cross', 'ring', 'square', 'star', 'triangle']
    """
    from PIL import Image

    directory = os.fspath(directory)
    marker = os.path.join(directory, ".zoo_shapes")
    stamp = f"images_per_class={images_per_class} size={size} seed={seed}\n"
    if _written(marker, stamp):
        return directory
    for split, fraction in SPLITS.items():
        n = max(1, round(images_per_class * fraction))
        x, y, m = shapes(n, size=size, seed=seed, split=split)
        for i, (img, label, mask) in enumerate(zip(x, y, m)):
            name = f"{CLASSES[label]}_{i:05d}.png"
            for root, array in (
                (os.path.join(directory, split), img),
                (os.path.join(directory, "masks", split), mask),
            ):
                folder = os.path.join(root, CLASSES[label])
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(array).save(os.path.join(folder, name))
    with open(marker, "w") as f:
        f.write(stamp)
    return directory


def read_segmentation(directory: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Image/mask pairs written by `write_shapes`: `(images, masks)` arrays.

    Example:

        >>> import tempfile, zoo
        >>> root = zoo.datasets.write_shapes(tempfile.mkdtemp(), images_per_class=4, size=32)
        >>> x, m = zoo.datasets.read_segmentation(root, "val")
        >>> x.shape[1:], m.shape[1:], int(m.max()) <= len(zoo.datasets.CLASSES)
        ((32, 32, 3), (32, 32), True)
    """
    from PIL import Image

    images, masks = [], []
    split_dir = os.path.join(os.fspath(directory), split)
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(
            f"No {split!r} split in {directory!r}. Write the demo set with "
            "`zoo.datasets.write_shapes(directory)` first."
        )
    for cls in sorted(os.listdir(split_dir)):
        for name in sorted(os.listdir(os.path.join(split_dir, cls))):
            images.append(np.asarray(Image.open(os.path.join(split_dir, cls, name)).convert("RGB")))
            masks.append(np.asarray(Image.open(os.path.join(directory, "masks", split, cls, name))))
    return np.stack(images), np.stack(masks)


def voc_palette(n: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map: `(n, 3)` uint8, class `i` -> its colour (255 is the void colour).

    Example:

        >>> import zoo
        >>> zoo.datasets.voc_palette()[[0, 1, 15]].tolist()
        [[0, 0, 0], [128, 0, 0], [192, 128, 128]]
    """
    palette = np.zeros((n, 3), "uint8")
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def write_segmentation(
    directory: str | os.PathLike, *, images: int = 600, size: int = 64, seed: int = 0
) -> str:
    """Write a segmentation demo set (VOC's layout, flattened); return `directory`.

    `images/<stem>.png` and `masks/<stem>.png`: one shape per image, the
    classes taking turns; masks are palette PNGs holding 0 on the
    background, `1 + CLASSES.index(shape)` on the shape and 255 ("ignore",
    VOC's void) on the one-pixel border between them. `classes.txt` names
    `background` and the six shapes. An existing, complete set with the
    same settings is kept (a marker file records them).

    Example:

        >>> import os, tempfile, zoo
        >>> root = zoo.datasets.write_segmentation(tempfile.mkdtemp(), images=4, size=32)
        >>> sorted(n for n in os.listdir(root) if not n.startswith(".")), len(os.listdir(os.path.join(root, "masks")))
        (['classes.txt', 'images', 'masks'], 4)
    """
    from PIL import Image

    directory = os.fspath(directory)
    marker = os.path.join(directory, ".zoo_segmentation")
    stamp = f"images={images} size={size} seed={seed}\n"
    if _written(marker, stamp):
        return directory
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(directory, sub), exist_ok=True)
    palette = voc_palette().ravel().tolist()
    for i in range(images):
        label = i % len(CLASSES)
        image, mask = render(label, np.random.default_rng([seed, 7, i]), size)
        padded = np.pad(mask, 1, mode="edge")
        border = np.zeros(mask.shape, bool)
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            border |= padded[dy : dy + size, dx : dx + size] != mask
        mask = np.where(border, 255, mask).astype("uint8")
        Image.fromarray(image).save(os.path.join(directory, "images", f"{i:05d}.png"))
        png = Image.frombytes("P", (size, size), mask.tobytes())
        png.putpalette(palette)
        png.save(os.path.join(directory, "masks", f"{i:05d}.png"))
    with open(os.path.join(directory, "classes.txt"), "w") as f:
        f.write("\n".join(("background", *CLASSES)) + "\n")
    with open(marker, "w") as f:
        f.write(stamp)
    return directory
