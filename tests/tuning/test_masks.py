"""tuning.masks: image/mask folders, their checks, and augmentation that keeps masks aligned."""

import os

import numpy as np
import pytest
from PIL import Image

import zoo
from tuning.data import DataError
from tuning.masks import JointAugmentation, MaskBatches, find_pairs, read_mask, split_pairs


def _pair(root, stem, image_size=(12, 10), mask=None, mask_size=None, image_ext=".jpg"):
    """An image and (unless `mask is False`) its palette mask under root/images, root/masks."""
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    w, h = image_size
    Image.fromarray(np.full((h, w, 3), 90, "uint8")).save(os.path.join(root, "images", stem + image_ext))
    if mask is False:
        return
    mw, mh = mask_size or image_size
    values = np.zeros((mh, mw), "uint8") if mask is None else np.asarray(mask, "uint8")
    png = Image.frombytes("P", (values.shape[1], values.shape[0]), values.tobytes())
    png.putpalette(zoo.datasets.voc_palette().ravel().tolist())
    png.save(os.path.join(root, "masks", stem + ".png"))


def _two_classes(root, n=6):
    for i in range(n):
        m = np.zeros((10, 12), "uint8")
        m[2:6, 3:8] = 1
        m[0, 0] = 255
        _pair(root, f"{i:02d}", mask=m)


@pytest.mark.one_backend  # file handling, the same on every backend
def test_demo_set_splits_with_classes_pixels_and_ignore(tmp_path):
    root = zoo.datasets.write_segmentation(tmp_path / "demo", images=40, size=32)
    files, classes, info = split_pairs(root, seed=1)
    assert classes == ["background", *zoo.datasets.CLASSES]
    sizes = {s: len(files[s][0]) for s in files}
    assert sizes == {"train": 26, "val": 8, "test": 6}
    everything = [p for s in files.values() for p in s[0]]
    assert len(set(everything)) == 40  # no image in two splits
    for images, masks in files.values():  # pairs stay matched
        assert [os.path.splitext(os.path.basename(p))[0] for p in images] == [
            os.path.splitext(os.path.basename(p))[0] for p in masks
        ]
    assert len(info["pixel_counts"]) == 7 and all(c > 0 for c in info["pixel_counts"])
    values = np.unique(read_mask(files["train"][1][0]))
    assert 255 in values and 0 in values  # VOC's void border, the background
    # Same seed, same split; another seed, another one.
    assert split_pairs(root, seed=1)[0]["val"] == files["val"]
    assert split_pairs(root, seed=2)[0]["val"] != files["val"]


@pytest.mark.one_backend
def test_explicit_split_folders_and_class_files(tmp_path):
    for split in ("train", "val", "test"):
        _two_classes(tmp_path / split, n=3)
    (tmp_path / "classes.json").write_text('{"0": "background", "1": "cell"}')
    files, classes, info = split_pairs(str(tmp_path))
    assert classes == ["background", "cell"]
    assert {s: len(files[s][0]) for s in files} == {"train": 3, "val": 3, "test": 3}
    assert info["val"]["source"] == "folder val/"
    # Without a class file the classes are 0..max of the values.
    _two_classes(tmp_path / "plain", n=4)
    assert split_pairs(str(tmp_path / "plain"), test_fraction=0.25)[1] == ["class_0", "class_1"]


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "make,message",
    [
        (lambda r: _pair(r, "b", mask=False), "have no mask of the same name in masks/: b.jpg"),
        (lambda r: (_pair(r, "b"), os.remove(os.path.join(r, "images", "b.jpg"))), "have no image"),
        (lambda r: _pair(r, "b", mask_size=(10, 12)), "differ in size from their image: b.png"),
        (lambda r: _pair(r, "b", mask=np.full((10, 12), 3)), r"values \[3\] but there are 2 classes"),
        (lambda r: _pair(r, "b", image_ext=".png") or _pair(r, "b", image_ext=".jpg"), "more than one file"),
    ],
    ids=["no-mask", "no-image", "size", "value", "twice"],
)
def test_bad_masks_get_one_line_naming_the_files(tmp_path, make, message):
    root = str(tmp_path)
    _two_classes(root)
    (tmp_path / "classes.txt").write_text("background\ncell\n")
    make(root)
    with pytest.raises(DataError, match=message) as e:
        split_pairs(root)
    assert "\n" not in str(e.value)


@pytest.mark.one_backend
def test_colour_masks_and_missing_folders_are_refused(tmp_path):
    _two_classes(str(tmp_path))
    Image.fromarray(
        np.dstack(
            [np.zeros((10, 12), "uint8"), np.ones((10, 12), "uint8") * 128, np.zeros((10, 12), "uint8")]
        )
    ).save(tmp_path / "masks" / "03.png")
    with pytest.raises(DataError, match="03.png.*not class indices"):
        split_pairs(str(tmp_path))
    with pytest.raises(DataError, match="No images/ folder"):
        find_pairs(str(tmp_path / "images"))
    os.rename(tmp_path / "masks", tmp_path / "labels")
    with pytest.raises(DataError, match="No masks/ folder"):
        find_pairs(str(tmp_path))


@pytest.mark.one_backend  # numpy and SciPy: the same pixels on every backend
def test_joint_augmentation_keeps_the_mask_on_the_shape():
    # A bright disc on a dark background, its mask 1 on the disc: after a
    # flip, a scale and a rotation the mask still covers the bright pixels.
    size = 32
    yy, xx = np.mgrid[0:size, 0:size]
    aug = JointAugmentation(scale=0.3, rotation=20)
    moved = 0
    for i, (cx, cy) in enumerate(((10, 12), (22, 9), (16, 22), (8, 24), (25, 25), (6, 6))):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        image = np.where(disc[..., None], 230, 20).astype("uint8").repeat(3, -1)
        out_image, out_mask = aug(image, disc.astype("uint8"), np.random.default_rng(i))
        assert set(np.unique(out_mask)) <= {0, 1}  # nearest neighbour: no blended labels
        moved += not np.array_equal(out_mask, disc)
        agree = ((out_image[..., 0] > 125) == (out_mask == 1)).mean()
        assert agree > 0.98, (i, agree)
    assert moved == 6
    # The map itself: a flip mirrors the columns, scale 1 and angle 0 keep the rest.
    flip = JointAugmentation(scale=0, rotation=0)
    rng = next(np.random.default_rng(k) for k in range(50) if np.random.default_rng(k).random() < 0.5)
    image = np.arange(48, dtype="uint8").reshape(4, 4, 3)
    np.testing.assert_array_equal(flip(image, image[..., 0], rng)[0], image[:, ::-1])
    with pytest.raises(ValueError, match="scale"):
        JointAugmentation(scale=1.5)


@pytest.mark.one_backend  # numpy batches, the same on every backend
def test_mask_batches_stream_resize_and_augment(tmp_path):
    root = zoo.datasets.write_segmentation(tmp_path / "demo", images=6, size=32)
    images, masks = find_pairs(root)
    plain = MaskBatches(images, masks, image_size=(24, 20), batch_size=4)
    x, y = plain[0]
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((4, 24, 20, 3), np.uint8, (4, 24, 20), np.int32)
    assert len(plain) == 2 and len(plain[1][0]) == 2
    # Nearest neighbour: only the values the files hold (VOC's 255 included).
    held = set(np.unique(np.concatenate([read_mask(p).ravel() for p in masks])))
    assert set(np.unique(y)) <= held
    aug = MaskBatches(images, masks, image_size=32, batch_size=6, augment=JointAugmentation(), seed=0)
    ax, ay = aug[0]
    assert ax.dtype == np.uint8 and set(np.unique(ay)) <= held
    # Seeded by epoch and position: the same draw again, a new one next epoch.
    np.testing.assert_array_equal(aug[0][1], ay)
    aug.on_epoch_end()
    assert not np.array_equal(aug[0][1], ay)
    shuffled = MaskBatches(images, masks, image_size=16, batch_size=6, shuffle=True, seed=0)
    first = shuffled[0][1].copy()
    shuffled.on_epoch_end()
    assert not np.array_equal(first, shuffled[0][1])  # a new order every epoch
    with pytest.raises(IndexError):
        plain[2]
