"""Image folders in, checked `uint8` datasets out (Keras' own loader; Pillow where TensorFlow is not installed)."""

from __future__ import annotations

import os

import keras

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Decoded images a run keeps in memory (both paths), all splits together:
# 128 MiB is 2,700 images at 128 px or 10,900 at 64 px. Larger data streams
# from disk every epoch: on a CPU, decoding keeps ahead of the train step
# many times over (scripts/bench_scale.py), and peak memory then stops
# growing with the image count. tf.data's buffers hold about 1.7x the
# decoded size (234 MB of RSS for 3,000 images at 128 px, 141 MB of pixels).
CACHE_BYTES = 2**27


class DataError(ValueError):
    """An image folder that cannot be trained on; the message says why and what to do."""


def check_folder(directory: str) -> list[str]:
    """Validate a class-per-sub-folder image directory; return the class names.

    Raises `DataError` for a missing or empty folder, fewer than two classes,
    a class without images, and unreadable or corrupt image files (listed).

    Example:

        >>> import tempfile, tuning.data
        >>> tuning.data.check_folder(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        tuning.data.DataError: ... holds no class sub-folders. Put the images of each class in their own folder (data/cat/*.jpg, data/dog/*.jpg).
    """
    from PIL import Image

    if not os.path.isdir(directory):
        raise DataError(
            f"The data folder {directory!r} does not exist. Pass --data DIR "
            "(one sub-folder per class), or leave it out to use the demo set."
        )
    classes = sorted(
        d
        for d in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, d)) and not d.startswith(".")
    )
    if not classes:
        raise DataError(
            f"{directory!r} holds no class sub-folders. Put the images of each class "
            "in their own folder (data/cat/*.jpg, data/dog/*.jpg)."
        )
    if {"images", "masks"} <= set(classes):
        raise DataError(
            f"{directory!r} holds images/ and masks/: segmentation data, not one folder per class. "
            "Pass --task segment (task='segment' in Python)."
        )
    if len(classes) < 2:
        raise DataError(
            f"{directory!r} has one class ({classes[0]!r}); a classifier needs at "
            "least two class sub-folders."
        )
    empty, corrupt = [], []
    for cls in classes:
        files = [f for f in os.listdir(os.path.join(directory, cls)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            empty.append(cls)
        for f in files:
            path = os.path.join(directory, cls, f)
            try:
                with Image.open(path) as img:
                    img.verify()
            except Exception:  # PIL raises many types for broken files
                corrupt.append(path)
    if empty:
        raise DataError(
            f"Class folders without images ({', '.join(IMAGE_EXTENSIONS)}) in "
            f"{directory!r}: {empty}. Add images or remove these folders."
        )
    if corrupt:
        raise DataError(
            f"{len(corrupt)} image files cannot be read: {corrupt[:5]}"
            f"{' ...' if len(corrupt) > 5 else ''}. Remove or replace them."
        )
    return classes


def decode_threads() -> int:
    """Threads that decode images outside `tf.data` (`ImageBatches`, `predict`): one per core, at most 8.

    Pillow releases the GIL while it decodes and resizes, so threads scale
    with the cores (processes would copy every batch back through a pipe).

    Example:

        >>> import tuning.data
        >>> 1 <= tuning.data.decode_threads() <= 8
        True
    """
    return max(1, min(8, os.cpu_count() or 1))


def read_image(path: str, image_size):
    """One image file as a `uint8` RGB array of `image_size` (an int, or `(height, width)`), bilinear.

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> import tuning.data
        >>> p = os.path.join(tempfile.mkdtemp(), "grey.png")
        >>> Image.fromarray(np.zeros((40, 30), "uint8")).save(p)
        >>> tuning.data.read_image(p, 16).shape, tuning.data.read_image(p, (8, 12)).shape
        ((16, 16, 3), (8, 12, 3))
    """
    import numpy as np
    from PIL import Image

    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((width, height), Image.BILINEAR))


def read_batches(paths, image_size, *, batch_size: int = 32, workers: int | None = None):
    """`(paths, images, failed)` per batch of `paths`, in order, decoded ahead in threads.

    `images` stacks the readable files of the batch (`read_image`); `failed`
    maps each unreadable one to the reason, so one broken file costs one
    line, not the run. At most `workers` batches wait in memory.

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> import tuning.data
        >>> d = tempfile.mkdtemp()
        >>> good, bad = os.path.join(d, "a.png"), os.path.join(d, "b.png")
        >>> Image.fromarray(np.zeros((10, 10, 3), "uint8")).save(good)
        >>> _ = open(bad, "wb").write(b"not an image")
        >>> [(names, x.shape, list(failed)) for names, x, failed in tuning.data.read_batches([good, bad], 8)]
        [(['.../a.png', '.../b.png'], (1, 8, 8, 3), ['.../b.png'])]
    """
    import numpy as np

    paths = list(paths)
    side = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)

    def batch(start):
        chunk, images, failed = paths[start : start + batch_size], [], {}
        for path in chunk:
            try:
                images.append(read_image(path, side))
            except Exception as e:  # PIL raises many types for unreadable files
                failed[path] = f"{type(e).__name__}: {e}"
        stacked = np.stack(images) if images else np.empty((0, *side, 3), "uint8")
        return chunk, stacked, failed

    yield from _in_order(
        batch, range(0, len(paths), batch_size), decode_threads() if workers is None else workers
    )


def _in_order(fn, items, workers):
    """`fn(item)` for each item, in order, with up to `workers` calls running ahead in threads."""
    if workers <= 1:
        yield from map(fn, items)
        return
    import collections
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        ahead = collections.deque()
        for item in items:
            ahead.append(pool.submit(fn, item))
            if len(ahead) > workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


class ImageBatches(keras.utils.PyDataset):
    """Batches of `uint8` images decoded from disk as they are asked for: the loader without TensorFlow.

    Keras' folder loader is built on `tf.data`; on JAX or PyTorch without
    TensorFlow, `load_splits` reads the images with Pillow instead (RGB,
    bilinear resize to `image_size`) and serves `(images, labels)` batches,
    reshuffled every epoch when `shuffle` is set. Nothing is read up front:
    each batch is decoded when Keras (or a loop over the object) asks for
    it, `workers` batches at a time in threads (Keras' `PyDataset`
    machinery in `fit`/`predict`; a thread pool of its own when iterated),
    so memory does not grow with the number of images. `cache=True` keeps
    each decoded image after its first read (`len(paths) * image_size**2 *
    3` bytes at most, filled as the images are first read), so later
    epochs and trials decode nothing.

    Why threads and Keras' own `PyDataset`, not a loader library: decoding
    and resizing happen inside Pillow with the GIL released, so a thread
    per core keeps up with a CPU train step (`scripts/bench_scale.py`
    measures both), and `PyDataset` is what `fit` already understands on
    every backend; torch's `DataLoader` would tie the JAX path to torch.

    Args:
        paths: sequence of str. Image files.
        labels: class indices, or rows of 0/1 per class (multi-label).
        image_size: int. Side of the square images served.
        batch_size: int. Images per batch. Defaults to 32.
        shuffle: bool. A new order every epoch. Defaults to False.
        seed: int. Seed of the order. Defaults to 0.
        cache: bool. Keep decoded images in memory. Defaults to False.
        workers: int or None. Decoding threads; None: `decode_threads()`.

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from tuning.data import ImageBatches
        >>> d = tempfile.mkdtemp()
        >>> paths = [os.path.join(d, f"{i}.png") for i in range(5)]
        >>> for p in paths:
        ...     Image.fromarray(np.zeros((40, 30, 3), "uint8")).save(p)
        >>> batches = ImageBatches(paths, [0, 1, 0, 1, 0], image_size=32, batch_size=2)
        >>> len(batches), batches[0][0].shape, batches[0][0].dtype, batches[2][1].tolist()
        (3, (2, 32, 32, 3), dtype('uint8'), [0])
    """

    def __init__(
        self,
        paths,
        labels,
        *,
        image_size: int,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        cache: bool = False,
        workers: int | None = None,
    ):
        import numpy as np

        workers = decode_threads() if workers is None else int(workers)
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=2 * workers)
        self.paths, self.labels = list(paths), _targets(labels)
        if len(self.paths) != len(self.labels):
            raise ValueError(
                f"`paths` and `labels` must have the same length. Received: {len(self.paths)} paths, "
                f"{len(self.labels)} labels."
            )
        self.image_size, self.batch_size, self.shuffle = image_size, batch_size, shuffle
        # np.empty reserves the pages; the OS backs them only as images are decoded.
        self._cache = np.empty((len(self.paths), image_size, image_size, 3), "uint8") if cache else None
        self._cached = np.zeros(len(self.paths), bool)
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(self.paths)) if shuffle else np.arange(len(self.paths))

    def __len__(self):
        return -(-len(self.paths) // self.batch_size)

    def _image(self, i):
        if self._cache is None:
            return read_image(self.paths[i], self.image_size)
        if not self._cached[i]:  # batches are disjoint: no two threads write one row
            self._cache[i] = read_image(self.paths[i], self.image_size)
            self._cached[i] = True
        return self._cache[i]

    def __getitem__(self, index):
        import numpy as np

        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        idx = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = np.empty((len(idx), self.image_size, self.image_size, 3), "uint8")
        for j, i in enumerate(idx):
            images[j] = self._image(i)
        return images, self.labels[idx]

    def __iter__(self):
        """The batches in order, the next `workers` ones decoded ahead in threads."""
        return _in_order(self.__getitem__, range(len(self)), self.workers)

    def on_epoch_end(self):
        if self.shuffle:
            self._order = self._rng.permutation(len(self.paths))


def _targets(labels):
    """Labels as an array: int32 class indices, or float32 0/1 rows (multi-label)."""
    import numpy as np

    labels = np.asarray(labels)
    return labels.astype("float32") if labels.ndim == 2 else labels.astype("int32")


def _class_files(directory, classes):
    """`(paths, labels)` of every image, in Keras' order (classes, then names)."""
    paths, labels = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(directory, cls)
        for root, _, files in sorted(os.walk(folder)):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(root, f))
                    labels.append(label)
    return paths, labels


def stratified_split(labels, fractions, *, seed: int = 0) -> list:
    """Indices of each part of a seeded split that keeps every class in every part.

    Each class gives each held-out part `round(fraction * n)` of its `n`
    items, at least one; the first part (training) keeps the rest, at least
    one per class.

    Args:
        labels: sequence of int. One class label per item.
        fractions: sequence of float. The size of every part but the first,
            e.g. `(0.2, 0.15)` for train/val/test.
        seed: int. Seed of the shuffle.

    Example:

        >>> import tuning.data
        >>> parts = tuning.data.stratified_split([0] * 10 + [1] * 10, (0.2, 0.2))
        >>> [len(p) for p in parts]
        [12, 4, 4]
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    parts = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        sizes = [max(1, round(f * len(members))) for f in fractions]
        if len(members) - sum(sizes) < 1:
            raise DataError(
                f"Class {int(c)} has {len(members)} images: too few to hold out "
                f"{len(fractions)} evaluation split(s) and keep one for training. Add images, "
                "or give val/ and test/ folders."
            )
        start = 0
        for i, size in enumerate(sizes, start=1):
            parts[i] += members[start : start + size].tolist()
            start += size
        parts[0] += members[start:].tolist()
    return [sorted(p) for p in parts]


def split_files(
    directory: str,
    *,
    seed: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.15,
) -> tuple[dict, list, dict]:
    """`(files, class_names, info)`: which image files make each split, checked.

    `files` maps "train", "val" and (unless `test_fraction=0` and no test/
    folder) "test" to `(paths, labels)`, each in Keras' folder order
    (classes, then file names). Explicit `train/`, `val/`, `test/`
    sub-folders are honoured; whatever is not given as a folder is held out
    of the training images by a stratified, seeded split. `info` maps each
    split to where its images come from and how many there are (what the
    report and `run.json` record), and "class_counts" to the training
    images per class.

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> import tuning.data
        >>> d = tempfile.mkdtemp()
        >>> for c in ("cat", "dog"):
        ...     os.makedirs(os.path.join(d, c))
        ...     for i in range(10):
        ...         Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(os.path.join(d, c, f"{i}.png"))
        >>> files, classes, info = tuning.data.split_files(d)
        >>> classes, [len(files[s][0]) for s in ("train", "val", "test")], info["class_counts"]
        (['cat', 'dog'], [12, 4, 4], [6, 6])
    """
    for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={fraction}")
    explicit = os.path.isdir(os.path.join(directory, "train"))
    train_dir = os.path.join(directory, "train") if explicit else directory
    classes = check_folder(train_dir)
    files, info = {}, {"seed": seed}
    for name in ("val", "test"):
        path = os.path.join(directory, name)
        if explicit and os.path.isdir(path):
            if check_folder(path) != classes:
                raise DataError(f"The classes of {path!r} differ from those of {train_dir!r}: {classes}.")
            files[name] = _class_files(path, classes)
            info[name] = {"source": f"folder {name}/", "images": len(files[name][0])}
    fractions = {"val": validation_fraction, "test": test_fraction}
    if "val" not in files and validation_fraction == 0:
        raise DataError(
            "The search needs validation images: add a val/ folder or use a validation fraction above 0."
        )
    held_out = [n for n in ("val", "test") if n not in files and fractions[n] > 0]
    where = "train/" if explicit else os.path.basename(os.path.normpath(directory)) + "/"
    paths, labels = _class_files(train_dir, classes)
    if held_out:
        need = 1 + len(held_out)
        few = {c: labels.count(i) for i, c in enumerate(classes) if labels.count(i) < need}
        if few:
            raise DataError(
                f"Classes with fewer than {need} images in {train_dir!r}: {few}. Each class needs "
                f"one training image and one for each held-out split ({', '.join(held_out)}). "
                "Add images, or give val/ and test/ folders."
            )
        parts = stratified_split(labels, [fractions[n] for n in held_out], seed=seed)
        pick = lambda idx: ([paths[i] for i in idx], [labels[i] for i in idx])  # noqa: E731
        files["train"] = pick(parts[0])
        info["train"] = {"source": f"the rest of {where}", "images": len(parts[0])}
        for name, idx in zip(held_out, parts[1:]):
            files[name] = pick(idx)
            info[name] = {
                "source": f"{fractions[name]:.0%} of {where}, stratified, seed {seed}",
                "images": len(idx),
            }
    else:
        files["train"] = (paths, labels)
        info["train"] = {"source": f"folder {where}", "images": len(paths)}
    if "test" not in files:
        info["test"] = {"source": "none (test_fraction=0): no image was kept from the search", "images": 0}
    info["class_counts"] = [files["train"][1].count(i) for i in range(len(classes))]
    info["explicit_train"] = explicit
    return {k: files[k] for k in ("train", "val", "test") if k in files}, classes, info


def file_dataset(
    paths,
    labels,
    *,
    image_size: int,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = False,
):
    """Batches of `(uint8 images, labels)` read from `paths`, in order unless `shuffle`.

    `labels` are class indices (int32), or rows of 0/1 per class for
    multi-label data (float32).

    A prefetched `tf.data` pipeline with Keras' own loader steps (read,
    decode to RGB, bilinear resize) where TensorFlow is installed, otherwise
    `ImageBatches`. `cache=True` keeps the decoded, resized images in memory
    after the first pass (`len(paths) * image_size**2 * 3` bytes), so later
    epochs and later trials decode nothing; the order is reshuffled every
    pass either way.

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from tuning.data import file_dataset
        >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> Image.fromarray(np.zeros((10, 20, 3), "uint8")).save(p)
        >>> [(x, y)] = list(file_dataset([p, p], [0, 1], image_size=8, cache=True))
        >>> x = np.asarray(x)
        >>> x.shape, x.dtype, [int(v) for v in y]
        ((2, 8, 8, 3), dtype('uint8'), [0, 1])
    """
    tf = _tensorflow()
    if tf is None:
        return ImageBatches(
            paths,
            labels,
            image_size=image_size,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            cache=cache,
        )

    def read(path, label):
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.cast(tf.image.resize(img, (image_size, image_size), method="bilinear"), tf.uint8), label

    ds = tf.data.Dataset.from_tensor_slices((list(paths), _targets(labels)))
    if cache:  # decode once, then shuffle the decoded images
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if not cache:
        ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _tensorflow():
    try:
        import tensorflow as tf  # tf.data underlies Keras' image loading on every backend
    except ImportError:  # JAX or PyTorch without TensorFlow
        return None
    return tf


def load_splits(
    directory: str,
    *,
    image_size: int,
    batch_size: int = 32,
    seed: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.15,
    cache_bytes: int = CACHE_BYTES,
):
    """`(train, val, test, class_names, info)`: `uint8` image datasets and how they were made.

    The splits of `split_files`, as datasets (`file_dataset`): `tf.data`
    pipelines where TensorFlow is installed (Keras' own loader steps, on
    every backend), otherwise `ImageBatches` decoded batch by batch in
    threads. On both paths, splits whose decoded images fit in
    `cache_bytes` together (train first, then val and test) are decoded
    once and kept in memory: a search reads each image once, not once per
    epoch and trial. Larger splits stream from disk every epoch, so memory
    does not grow with the number of images. `test_fraction=0` uses no test
    split; the test dataset is then `None` and `info["test"]` says so.
    Mixed greyscale/RGB images all load as RGB. Batches are prefetched.
    `info["files"]` holds the `(paths, labels)` of each split, and
    `info["cached"]` the splits held in memory.
    """
    files, classes, info = split_files(
        directory, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction
    )
    made, info = file_datasets(
        files, info, image_size=image_size, batch_size=batch_size, seed=seed, cache_bytes=cache_bytes
    )
    return made["train"], made["val"], made.get("test"), classes, info


def file_datasets(files, info, *, image_size, batch_size=32, seed=0, cache_bytes=CACHE_BYTES):
    """`(datasets, info)`: one `file_dataset` per split of `files`, cached while they fit.

    `files` maps split names to `(paths, labels)` (`split_files`,
    `tuning.labels.split_labels`); the splits whose decoded images fit in
    `cache_bytes` together (train first) are kept in memory. `info` comes
    back with "files" and "cached" added.
    """
    made, cached, room = {}, [], cache_bytes
    for name in ("train", "val", "test"):
        if name not in files:
            continue
        size = len(files[name][0]) * image_size * image_size * 3
        cache = size <= room
        room -= size if cache else 0
        if cache:
            cached.append(name)
        made[name] = file_dataset(
            *files[name],
            image_size=image_size,
            batch_size=batch_size,
            shuffle=name == "train",
            seed=seed,
            cache=cache,
        )
    return made, {**info, "files": files, "cached": cached}
