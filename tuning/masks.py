"""Image and mask folders in, checked pairs and jointly augmented batches out (semantic segmentation).

The layout is PASCAL VOC's, flattened: `images/` and `masks/` side by
side, matched by file stem (`images/0001.jpg` with `masks/0001.png`).
Masks are palette or greyscale PNGs whose pixel values are class indices;
255 means "ignore" (object borders, unlabelled pixels), as in VOC. Class
names come from `classes.txt` (one per line) or `classes.json` (a list, or
`{"0": "background", ...}`) beside the two folders; without either, the
classes are `0..max` of the values found. `train/`, `val/` and `test/`
sub-folders, each with its own `images/` and `masks/`, are honoured;
whatever is not given as a folder is held out by a seeded split.

Every pair is checked before anything is written (`split_pairs`): an
image without a mask, a mask without an image, a mask whose size differs
from its image's, a mask that is not one channel of class indices, and a
value at or above the number of classes other than 255. Each problem is
one `DataError` line naming up to three files.

`MaskBatches` reads the pairs from disk batch by batch (memory does not
grow with the dataset), resizes images bilinearly and masks by nearest
neighbour, and moves both with the same random flip, scale and rotation
(`JointAugmentation`): numpy and SciPy, the same pixels on every backend.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from tuning.data import IMAGE_EXTENSIONS, DataError

IGNORE = 255  # VOC's "void" label: no loss, no metric
_SHOW = 3  # files named per problem


def _stems(folder):
    """`{stem: path}` of the image files in `folder` (sorted by name)."""
    out, twice = {}, []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
            continue
        if stem in out:
            twice.append(name)
        out[stem] = os.path.join(folder, name)
    if twice:
        raise DataError(
            f"{folder!r} has more than one file per stem ({_names(twice)}): each image and mask is "
            "matched by its name without the extension. Rename or remove the duplicates."
        )
    return out


def _names(items):
    items = list(items)
    more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(os.path.basename(str(i)) for i in items[:_SHOW]) + more


def find_pairs(directory: str) -> tuple[list[str], list[str]]:
    """`(image_paths, mask_paths)` of `directory/images` and `directory/masks`, matched by stem.

    Raises `DataError` for a missing folder, an image without a mask and a
    mask without an image (up to three of each are named).

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> import tuning.masks
        >>> d = tempfile.mkdtemp()
        >>> for sub in ("images", "masks"):
        ...     os.makedirs(os.path.join(d, sub))
        >>> Image.fromarray(np.zeros((4, 4, 3), "uint8")).save(os.path.join(d, "images", "a.jpg"))
        >>> Image.fromarray(np.zeros((4, 4), "uint8")).save(os.path.join(d, "masks", "a.png"))
        >>> [[os.path.basename(p) for p in ps] for ps in tuning.masks.find_pairs(d)]
        [['a.jpg'], ['a.png']]
    """
    folders = [os.path.join(directory, sub) for sub in ("images", "masks")]
    for folder in folders:
        if not os.path.isdir(folder):
            raise DataError(
                f"No {os.path.basename(folder)}/ folder in {directory!r}. Segmentation data is "
                "images/ and masks/ side by side (masks: PNGs of class indices, matched by file name)."
            )
    images, masks = (_stems(f) for f in folders)
    if not images:
        raise DataError(f"{folders[0]!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    lonely = [images[s] for s in images if s not in masks]
    if lonely:
        raise DataError(
            f"{len(lonely)} image(s) in {folders[0]!r} have no mask of the same name in masks/: "
            f"{_names(lonely)}. Add the masks or remove the images."
        )
    orphans = [masks[s] for s in masks if s not in images]
    if orphans:
        raise DataError(
            f"{len(orphans)} mask(s) in {folders[1]!r} have no image of the same name in images/: "
            f"{_names(orphans)}. Add the images or remove the masks."
        )
    stems = sorted(images)
    return [images[s] for s in stems], [masks[s] for s in stems]


def read_mask(path: str) -> np.ndarray:
    """A mask file as a `(H, W)` uint8 array of class indices (palette or greyscale PNG).

    Raises `DataError` for a mask with colour channels (an RGB rendering of
    a palette instead of its indices) or values above 255.

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> import tuning.masks, zoo
        >>> p = os.path.join(tempfile.mkdtemp(), "m.png")
        >>> m = Image.frombytes("P", (2, 2), bytes([0, 1, 255, 2]))
        >>> m.putpalette(zoo.datasets.voc_palette().ravel().tolist())
        >>> m.save(p)
        >>> tuning.masks.read_mask(p).tolist()
        [[0, 1], [255, 2]]
    """
    from PIL import Image

    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.asarray(img, "uint8")
        if img.mode in ("I", "I;16", "I;16B"):
            values = np.asarray(img)
            if values.min() < 0 or values.max() > 255:
                raise DataError(
                    f"Mask {os.path.basename(path)!r} holds values outside 0..255; class indices "
                    "must fit a byte (255 = ignore). Save it as an 8-bit palette or greyscale PNG."
                )
            return values.astype("uint8")
        if img.mode in ("RGB", "RGBA"):
            rgb = np.asarray(img.convert("RGB"))
            if (rgb == rgb[..., :1]).all():  # greyscale stored as RGB
                return rgb[..., 0].copy()
        raise DataError(
            f"Mask {os.path.basename(path)!r} is a {img.mode} image of colours, not class indices. "
            "Save masks as palette (P) or greyscale (L) PNGs whose values are class indices "
            "(VOC's SegmentationClass PNGs are palette images)."
        )


def read_classes(directory: str) -> list[str] | None:
    """Class names from `classes.txt` or `classes.json` in `directory`, or None.

    Example:

        >>> import os, tempfile, tuning.masks
        >>> d = tempfile.mkdtemp()
        >>> with open(os.path.join(d, "classes.txt"), "w") as f:
        ...     _ = f.write("background\\ncircle\\n")
        >>> tuning.masks.read_classes(d)
        ['background', 'circle']
    """
    txt, js = (os.path.join(directory, f"classes.{ext}") for ext in ("txt", "json"))
    if os.path.exists(txt):
        with open(txt) as f:
            names = [line.strip() for line in f if line.strip()]
    elif os.path.exists(js):
        with open(js) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{js!r} is not valid JSON ({e}). Give a list of class names.") from None
        if isinstance(data, dict):
            try:
                index = {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise DataError(
                    f"{js!r} maps keys that are not class indices; use {{'0': 'name'}}."
                ) from None
            if sorted(index) != list(range(len(index))):
                raise DataError(
                    f"{js!r} must name classes 0..{len(index) - 1}. Received keys {sorted(index)}."
                )
            names = [index[i] for i in range(len(index))]
        elif isinstance(data, list) and all(isinstance(n, str) for n in data):
            names = data
        else:
            raise DataError(f"{js!r} must hold a list of class names or {{index: name}}.")
    else:
        return None
    if len(names) < 2:
        raise DataError(
            f"The class list in {directory!r} names {len(names)} class(es); segmentation needs two."
        )
    if len(set(names)) != len(names):
        raise DataError(f"The class list in {directory!r} names a class twice: {names}.")
    if len(names) > IGNORE:
        raise DataError(f"{len(names)} classes do not fit 8-bit masks with 255 as ignore (at most 255).")
    return names


def check_pairs(images, masks, num_classes: int | None) -> tuple[int, dict]:
    """Check every pair; return `(num_classes, {mask path: pixels per class})`.

    `num_classes=None` takes the classes from the values (`max + 1`,
    ignoring 255). Raises `DataError` for a mask whose size differs from its
    image's and for values at or above `num_classes` other than 255. Each
    mask is decoded once; images are only opened (their header holds the size).
    """
    from PIL import Image

    sizes, counts, seen = [], {}, {}
    for image, mask in zip(images, masks):
        values = read_mask(mask)
        with Image.open(image) as img:
            if img.size != (values.shape[1], values.shape[0]):
                sizes.append(
                    f"{os.path.basename(mask)} ({values.shape[1]}x{values.shape[0]}, "
                    f"image {img.size[0]}x{img.size[1]})"
                )
        counted = np.bincount(values.ravel(), minlength=IGNORE + 1)
        counts[mask] = counted
        for v in np.flatnonzero(counted):
            seen.setdefault(int(v), []).append(mask)
    if sizes:
        raise DataError(
            f"{len(sizes)} mask(s) differ in size from their image: {', '.join(sizes[:_SHOW])}"
            f"{' and more' if len(sizes) > _SHOW else ''}. Each mask must label every pixel of its image."
        )
    labels = [v for v in seen if v != IGNORE]
    if num_classes is None:
        num_classes = max(labels, default=0) + 1
        if num_classes < 2:
            raise DataError(
                "The masks hold a single class; segmentation needs two (e.g. background and object)."
            )
    bad = sorted(v for v in labels if v >= num_classes)
    if bad:
        files = sorted({m for v in bad for m in seen[v]})
        raise DataError(
            f"Masks hold values {bad[:5]} but there are {num_classes} classes (0..{num_classes - 1}, "
            f"255 = ignore): {_names(files)}. Fix the masks or list every class in classes.txt."
        )
    return num_classes, {m: c[:num_classes] for m, c in counts.items()}


def split_pairs(
    directory: str,
    *,
    seed: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.15,
) -> tuple[dict, list[str], dict]:
    """`(files, class_names, info)`: the checked image/mask pairs of each split.

    `files` maps "train", "val" and (unless `test_fraction=0` and no test/
    folder) "test" to `(image_paths, mask_paths)`. `train/`, `val/`, `test/`
    sub-folders are honoured; what is not given is held out of the training
    pairs by a seeded split. `info` records each split's source and size,
    and "pixel_counts", the training pixels per class.

    Example:

        >>> import tempfile, zoo, tuning.masks
        >>> d = zoo.datasets.write_segmentation(tempfile.mkdtemp(), images=20, size=32)
        >>> files, classes, info = tuning.masks.split_pairs(d)
        >>> classes[:2], [len(files[s][0]) for s in ("train", "val", "test")]
        (['background', 'circle'], [13, 4, 3])
    """
    for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={fraction}")
    if not os.path.isdir(directory):
        raise DataError(
            f"The data folder {directory!r} does not exist. Pass --data DIR (images/ and masks/)."
        )
    explicit = os.path.isdir(os.path.join(directory, "train"))
    classes = read_classes(directory)
    if classes is None and explicit:
        classes = read_classes(os.path.join(directory, "train"))
    files, info = {}, {"seed": seed}
    for name in ("train", "val", "test"):
        if explicit and os.path.isdir(os.path.join(directory, name)):
            files[name] = find_pairs(os.path.join(directory, name))
            info[name] = {"source": f"folder {name}/", "images": len(files[name][0])}
    if not explicit:
        files["train"] = find_pairs(directory)
    images = [p for s in files.values() for p in s[0]]
    masks = [p for s in files.values() for p in s[1]]
    num_classes, pixels = check_pairs(images, masks, None if classes is None else len(classes))
    classes = classes or [f"class_{i}" for i in range(num_classes)]
    fractions = {"val": validation_fraction, "test": test_fraction}
    if "val" not in files and validation_fraction == 0:
        raise DataError(
            "The search needs validation images: add a val/ folder or use a validation fraction above 0."
        )
    held_out = [n for n in ("val", "test") if n not in files and fractions[n] > 0]
    if held_out:
        pairs = list(zip(*files["train"]))
        counts = [max(1, round(len(pairs) * fractions[n])) for n in held_out]
        if len(pairs) - sum(counts) < 1:
            raise DataError(
                f"{len(pairs)} image(s) cannot make a training split and {', '.join(held_out)}: "
                "add images, or give val/ and test/ folders."
            )
        order = np.random.default_rng(seed).permutation(len(pairs))
        where = "train/" if explicit else os.path.basename(os.path.normpath(directory)) + "/"
        start = 0
        for name, n in zip(held_out, counts):
            idx = sorted(order[start : start + n])
            files[name] = ([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
            info[name] = {"source": f"{fractions[name]:.0%} of {where}, seed {seed}", "images": n}
            start += n
        idx = sorted(order[start:])
        files["train"] = ([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
        info["train"] = {"source": f"the rest of {where}", "images": len(idx)}
    elif "train" not in info:
        info["train"] = {"source": "folder images/", "images": len(files["train"][0])}
    if "test" not in files:
        info["test"] = {"source": "none (test_fraction=0): no image was kept from the search", "images": 0}
    info["pixel_counts"] = np.sum([pixels[m] for m in files["train"][1]], axis=0).tolist()
    return {k: files[k] for k in ("train", "val", "test") if k in files}, classes, info


class JointAugmentation:
    """One random flip, scale and rotation, applied alike to an image and its mask.

    Horizontal flips, a scale of up to ±`scale` (zooming in crops, zooming
    out reflects the border) and rotations of up to ±`rotation` degrees
    about the centre, composed into one affine map and resampled once:
    bilinear for the image, nearest neighbour for the mask (so it keeps its
    class indices, 255 included). It is numpy/SciPy, so every backend gets
    the same pixels. (Keras 3.15's own `RandomRotation` misplaces masks on
    the torch backend: its `affine_transform` swaps the entries of a torch
    transformation matrix in place, so the mask gets a different matrix
    from the image.)

    Example:

        >>> import numpy as np, tuning.masks
        >>> aug = tuning.masks.JointAugmentation()
        >>> image, mask = np.zeros((16, 16, 3), "uint8"), np.ones((16, 16), "uint8")
        >>> out_image, out_mask = aug(image, mask, np.random.default_rng(0))
        >>> out_image.shape, out_image.dtype.name, np.unique(out_mask).tolist()
        ((16, 16, 3), 'uint8', [1])
    """

    def __init__(self, *, flip: bool = True, scale: float = 0.25, rotation: float = 10.0):
        if not 0 <= scale < 1:
            raise ValueError(f"`scale` must be in [0, 1). Received: scale={scale}")
        self.flip, self.scale, self.rotation = flip, scale, rotation

    def matrix(self, rng, shape):
        """`(matrix, offset)`: output pixel -> input pixel, SciPy's `affine_transform` convention."""
        s = np.exp(rng.uniform(np.log(1 - self.scale), np.log(1 + self.scale))) if self.scale else 1.0
        a = np.deg2rad(rng.uniform(-self.rotation, self.rotation)) if self.rotation else 0.0
        f = -1.0 if self.flip and rng.random() < 0.5 else 1.0
        m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.diag([1.0, f]) / s
        centre = (np.asarray(shape[:2], "float64") - 1) / 2
        return m, centre - m @ centre

    def __call__(self, image, mask, rng):
        from scipy import ndimage

        m, offset = self.matrix(rng, mask.shape)
        # One call for all channels: the channel axis maps to itself exactly.
        m3, offset3 = np.eye(3), np.zeros(3)
        m3[:2, :2], offset3[:2] = m, offset
        moved = ndimage.affine_transform(image.astype("float32"), m3, offset3, order=1, mode="reflect")
        out_mask = ndimage.affine_transform(mask, m, offset, order=0, mode="reflect")
        return np.clip(np.round(moved), 0, 255).astype("uint8"), out_mask


class MaskBatches(keras.utils.PyDataset):
    """`(uint8 images, int32 masks)` batches read from disk, jointly augmented when asked.

    Each batch is read when it is asked for: images resized bilinearly and
    masks by nearest neighbour to `image_size` (a side or `(height,
    width)`), so memory holds a few batches, not the dataset. `augment` (a
    `JointAugmentation`) moves each pair with one draw, seeded by `seed`,
    the epoch and the pair's position, so the batches are the same whatever
    the number of `workers` (Keras' `PyDataset` arguments, with
    `use_multiprocessing`). The order is reshuffled every epoch when
    `shuffle` is set.

    Example:

        >>> import tempfile, zoo, tuning.masks
        >>> d = zoo.datasets.write_segmentation(tempfile.mkdtemp(), images=6, size=32)
        >>> images, masks = tuning.masks.find_pairs(d)
        >>> x, y = tuning.masks.MaskBatches(images, masks, image_size=24, batch_size=4)[0]
        >>> x.shape, x.dtype.name, y.shape, y.dtype.name
        ((4, 24, 24, 3), 'uint8', (4, 24, 24), 'int32')
    """

    def __init__(
        self,
        images,
        masks,
        *,
        image_size,
        batch_size: int = 16,
        shuffle: bool = False,
        augment=None,
        seed: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing)
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks: give one mask per image.")
        self.images, self.masks = list(images), list(masks)
        self.size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.epoch = seed, 0
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.images)) if shuffle else np.arange(len(self.images))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def read(self, i):
        """Pair `i` at `image_size`: `(H, W, 3)` uint8 image, `(H, W)` uint8 mask."""
        from PIL import Image

        h, w = self.size
        with Image.open(self.images[i]) as img:
            image = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR))
        mask = Image.fromarray(read_mask(self.masks[i]))
        return image, np.asarray(mask.resize((w, h), Image.NEAREST))

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        pairs = [self.read(i) for i in idx]
        if self.augment is not None:
            first = index * self.batch_size
            pairs = [
                self.augment(x, y, np.random.default_rng([self.seed, self.epoch, first + k]))
                for k, (x, y) in enumerate(pairs)
            ]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]).astype("int32")

    def on_epoch_end(self):
        self.epoch += 1
        if self.shuffle:
            self._order = self._rng.permutation(len(self.images))
