"""Image folders in, checked `uint8` datasets out (Keras' own loader)."""

from __future__ import annotations

import os

import keras

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


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
        raise DataError(f"The data folder {directory!r} does not exist. Pass --data DIR "
                        "(one sub-folder per class), or leave it out to use the demo set.")
    classes = sorted(d for d in os.listdir(directory)
                     if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
    if not classes:
        raise DataError(f"{directory!r} holds no class sub-folders. Put the images of each class "
                        "in their own folder (data/cat/*.jpg, data/dog/*.jpg).")
    if len(classes) < 2:
        raise DataError(f"{directory!r} has one class ({classes[0]!r}); a classifier needs at "
                        "least two class sub-folders.")
    empty, corrupt = [], []
    for cls in classes:
        files = [f for f in os.listdir(os.path.join(directory, cls))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
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
        raise DataError(f"Class folders without images ({', '.join(IMAGE_EXTENSIONS)}) in "
                        f"{directory!r}: {empty}. Add images or remove these folders.")
    if corrupt:
        raise DataError(f"{len(corrupt)} image files cannot be read: {corrupt[:5]}"
                        f"{' ...' if len(corrupt) > 5 else ''}. Remove or replace them.")
    return classes


def load_splits(directory: str, *, image_size: int, batch_size: int = 32, seed: int = 0,
                validation_fraction: float = 0.2):
    """`(train, val, test, class_names)` datasets of `uint8` images and int labels.

    Honours explicit `train/`, `val/`, `test/` sub-folders; a plain folder of
    classes is split (seeded) into train and validation, and the validation
    part doubles as the test set. Mixed greyscale/RGB images all load as
    RGB. Batches are prefetched.
    """
    import tensorflow as tf  # tf.data underlies image_dataset_from_directory on every backend

    def load(path, **kwargs):
        ds = keras.utils.image_dataset_from_directory(
            path, labels="inferred", label_mode="int", color_mode="rgb", batch_size=batch_size,
            image_size=(image_size, image_size), seed=seed, verbose=False, **kwargs)
        return ds

    def finish(ds):
        return ds.map(lambda x, y: (tf.cast(x, tf.uint8), y)).prefetch(tf.data.AUTOTUNE)

    if os.path.isdir(os.path.join(directory, "train")):
        classes = check_folder(os.path.join(directory, "train"))
        train = load(os.path.join(directory, "train"), shuffle=True)
        splits = {}
        for name in ("val", "test"):
            path = os.path.join(directory, name)
            if os.path.isdir(path):
                if check_folder(path) != classes:
                    raise DataError(f"The classes of {path!r} differ from train/: {classes}.")
                splits[name] = load(path, shuffle=False)
        if "val" not in splits:
            train, splits["val"] = load(os.path.join(directory, "train"), shuffle=True,
                                        validation_split=validation_fraction, subset="both")
        val = splits["val"]
        test = splits.get("test", val)
    else:
        classes = check_folder(directory)
        train, val = load(directory, shuffle=True, validation_split=validation_fraction,
                          subset="both")
        test = val
    return finish(train), finish(val), finish(test), classes
