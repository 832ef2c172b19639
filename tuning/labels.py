"""Labels from a CSV file, single- or multi-label, and the splits that keep every label's share.

A labels file is a table with a header: one column of image paths
(relative to the data folder) and either

- one labels column, whose cells hold one or more class names separated
  by spaces, `;` or `|` (`cat`, `cat dog`, `cat|dog`), or
- one 0/1 column per class (the class names are the headers).

`read_labels` checks the whole table before anything is written: missing
or unreadable files, empty labels, paths outside the data folder,
duplicate paths, a missing header and classes too rare to split each get
one `DataError` line. `split_labels` makes the train/val/test splits: a
stratified split for single-label data (`tuning.data.stratified_split`)
and iterative stratification (Sechidis et al. 2011) for multi-label data,
which keeps each label's share in every split.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re

import numpy as np

from tuning.data import IMAGE_EXTENSIONS, DataError, stratified_split

PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_id", "image_name", "fname", "id")
LABEL_COLUMNS = ("labels", "label", "tags", "tag", "class", "classes", "category", "categories", "target")
SPLIT_COLUMNS = ("split",)
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_SEPARATORS = re.compile(r"[\s;|]+")
_TRUE, _FALSE = {"1", "1.0", "true", "yes"}, {"0", "0.0", "false", "no", ""}


@dataclasses.dataclass
class LabelTable:
    """What a labels file says: one row per image.

    Attributes:
        paths: list of str. Absolute image paths, in the file's order.
        classes: list of str. Class names, in label order (sorted, numbers
            by value, for a labels column; the column order for 0/1
            columns).
        targets: np.ndarray. `(n,)` int32 class indices for single-label
            data; `(n, len(classes))` uint8 0/1 rows for multi-label data.
        multilabel: bool. Whether some row has more than one label.
        splits: list of str or None. "train", "val" or "test" per row,
            from a `split` column.
        source: str. The labels file.
        layout: str. "labels column" or "0/1 columns".
    """

    paths: list
    classes: list
    targets: np.ndarray
    multilabel: bool
    splits: list | None
    source: str
    layout: str

    def matrix(self) -> np.ndarray:
        """`(n, len(classes))` 0/1 rows, whatever the task."""
        if self.targets.ndim == 2:
            return self.targets
        return np.eye(len(self.classes), dtype="uint8")[self.targets]


def _listed(items, more=3):
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:more])
    return shown + (f" and {len(items) - more} more" if len(items) > more else "")


def find_labels(labels: str, data: str) -> str:
    """The labels file: `labels` as given, else inside `data`; a `DataError` if neither exists.

    Example:

        >>> import os, tempfile
        >>> from tuning.labels import find_labels
        >>> d = tempfile.mkdtemp()
        >>> _ = open(os.path.join(d, "labels.csv"), "w").close()
        >>> find_labels("labels.csv", d) == os.path.join(d, "labels.csv")
        True
    """
    for path in (labels, os.path.join(data, labels)):
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise DataError(
        f"No labels file at {labels!r} (nor inside --data {data!r}). Give a CSV with a header: "
        "a path column and a labels column, or one 0/1 column per class."
    )


def read_labels(labels: str, data: str, *, check_images: bool = True) -> LabelTable:
    """Read and check a labels CSV; paths are relative to `data`.

    Args:
        labels: str. The CSV file (or its name inside `data`).
        data: str. The folder the paths are relative to.
        check_images: bool. Open every image to check that it decodes.
            Defaults to True.

    Returns:
        A `LabelTable`.

    Raises:
        DataError: one line naming what is wrong (up to three rows or
            files) and what to do.

    Example:

        >>> import os, tempfile, numpy as np
        >>> from PIL import Image
        >>> from tuning.labels import read_labels
        >>> d = tempfile.mkdtemp()
        >>> for name in ("a", "b", "c", "e"):
        ...     Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(os.path.join(d, name + ".png"))
        >>> with open(os.path.join(d, "labels.csv"), "w") as f:
        ...     _ = f.write("path,labels\\na.png,cat dog\\nb.png,dog\\nc.png,cat\\ne.png,cat|dog\\n")
        >>> table = read_labels("labels.csv", d)
        >>> table.classes, table.multilabel, table.targets.tolist()
        (['cat', 'dog'], True, [[1, 1], [0, 1], [1, 0], [1, 1]])
    """
    source = find_labels(labels, data)
    name = os.path.basename(source)
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read the labels file {source!r} ({e}). Give a UTF-8 CSV file.") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise DataError(
            f"{name} has {'no rows' if lines else 'nothing'} below its header; give one row per image."
        )
    delimiter = "\t" if "\t" in lines[0] and "," not in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [h.strip() for h in rows[0]]
    rows = rows[1:]
    _check_header(header, data, name)
    lower = [h.lower() for h in header]
    path_col = next((lower.index(c) for c in PATH_COLUMNS if c in lower), 0)
    split_col = next((lower.index(c) for c in SPLIT_COLUMNS if c in lower), None)
    label_col = next(
        (lower.index(c) for c in LABEL_COLUMNS if c in lower and lower.index(c) != path_col), None
    )
    short = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
    if short:
        raise DataError(
            f"{name}: rows {_listed(short)} have another number of cells than the header's {len(header)} "
            f"({', '.join(header)}). Give every row one cell per column."
        )
    if label_col is not None:
        layout = "labels column"
        cells = [[v for v in _SEPARATORS.split(r[label_col].strip()) if v] for r in rows]
        # Class names sorted, numbers by value ("2" before "10").
        classes = sorted(
            {c for cell in cells for c in cell},
            key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c),
        )
        index = {c: i for i, c in enumerate(classes)}
        matrix = np.zeros((len(rows), len(classes)), "uint8")
        for i, cell in enumerate(cells):
            matrix[i, [index[c] for c in cell]] = 1
    else:
        columns = [i for i in range(len(header)) if i not in (path_col, split_col)]
        bad = [header[i] for i in columns if any(r[i].strip().lower() not in _TRUE | _FALSE for r in rows)]
        if not columns or bad:
            raise DataError(
                f"{name} has no labels column (one of {', '.join(LABEL_COLUMNS)})"
                + (f", and its columns {_listed(bad)} are not all 0/1" if bad else "")
                + ". Give a column `labels` of class names (separated by spaces, ; or |), "
                "or one 0/1 column per class."
            )
        layout = "0/1 columns"
        classes = [header[i] for i in columns]
        matrix = np.array([[r[i].strip().lower() in _TRUE for i in columns] for r in rows], "uint8").reshape(
            len(rows), len(columns)
        )
    empty = [int(i) + 2 for i in np.flatnonzero(matrix.sum(1) == 0)]
    if empty:
        raise DataError(
            f"{name}: rows {_listed(empty)} have an empty label ({rows[empty[0] - 2][path_col]!r} "
            "first). Give every image at least one class, or remove those rows."
        )
    paths = _resolve_paths([r[path_col].strip() for r in rows], data, name, check_images)
    splits = None
    if split_col is not None:
        unknown = sorted({r[split_col].strip().lower() for r in rows} - set(SPLIT_NAMES))
        if unknown:
            raise DataError(
                f"{name}: the split column holds {_listed(unknown)}; use train, val or test in every row."
            )
        splits = [SPLIT_NAMES[r[split_col].strip().lower()] for r in rows]
    rare = {c: int(n) for c, n in zip(classes, matrix.sum(0)) if n < 2}
    if rare:
        raise DataError(
            f"{name}: classes in fewer than 2 rows cannot be split into training and evaluation "
            f"images: {dict(list(rare.items())[:3])}. Add images of them, or remove those labels."
        )
    multilabel = bool((matrix.sum(1) > 1).any())
    targets = matrix if multilabel else matrix.argmax(1).astype("int32")
    return LabelTable(paths, classes, targets, multilabel, splits, source, layout)


def _check_header(header, data, name):
    looks_like_data = [
        h
        for h in header
        if h.lower().endswith(IMAGE_EXTENSIONS)
        or (h and any(os.path.isfile(os.path.join(data, h + e)) for e in ("",) + IMAGE_EXTENSIONS))
        or h.lower() in _TRUE - {""}
    ]
    if looks_like_data or not any(header):
        raise DataError(
            f"{name} has no header row: its first line ({', '.join(header)!r}) "
            f"{'holds data (' + repr(looks_like_data[0]) + ')' if looks_like_data else 'is empty'}. "
            "Add a header such as `path,labels` (or `path,<class 1>,<class 2>,...` for 0/1 columns)."
        )


def _resolve_paths(names, data, name, check_images):
    from PIL import Image

    root = os.path.realpath(data)
    paths, outside, missing, corrupt = [], [], [], []
    for i, given in enumerate(names):
        path = os.path.normpath(os.path.join(root, given))
        if not os.path.splitext(path)[1] and not os.path.exists(path):  # Kaggle-style ids without extension
            path = next((path + e for e in IMAGE_EXTENSIONS if os.path.isfile(path + e)), path)
        real = os.path.realpath(path)
        if not given or os.path.commonpath([root, real]) != root:
            outside.append(given or f"<empty, row {i + 2}>")
        elif not os.path.isfile(real):
            missing.append(given)
        paths.append(path)
    if outside:
        raise DataError(
            f"{name} names paths outside --data {data!r}: {_listed(outside)}. Give paths relative to "
            "the data folder, inside it."
        )
    if missing:
        raise DataError(
            f"{name} names {len(missing)} files that do not exist under {data!r}: {_listed(missing)}. "
            "Fix the paths (relative to --data) or remove those rows."
        )
    seen, twice = set(), []
    for given, path in zip(names, paths):
        if path in seen:
            twice.append(given)
        seen.add(path)
    if twice:
        raise DataError(
            f"{name} lists {len(twice)} images twice: {_listed(dict.fromkeys(twice))}. Give each image one "
            "row (with all its labels in it)."
        )
    if check_images:
        for given, path in zip(names, paths):
            try:
                with Image.open(path) as img:
                    img.verify()
            except Exception:  # PIL raises many types for broken files
                corrupt.append(given)
        if corrupt:
            raise DataError(
                f"{len(corrupt)} image files in {name} cannot be read: {_listed(corrupt)}. "
                "Remove or replace them."
            )
    return paths


def iterative_split(matrix, fractions, *, seed: int = 0) -> list:
    """Indices of each part of a seeded multi-label split that keeps every label's share.

    Iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011):
    the label with the fewest unassigned images is dealt first, each of its
    images to the part that most lacks that label (then the part that most
    lacks images, then at random). The first part (training) takes
    `1 - sum(fractions)` of the images.

    Args:
        matrix: `(n, k)` 0/1 array. The labels of each item.
        fractions: sequence of float. Shares of every part but the first.
        seed: int. Seed of the tie-breaks.

    Example:

        >>> import numpy as np
        >>> from tuning.labels import iterative_split
        >>> y = np.random.default_rng(0).random((200, 5)) < 0.3
        >>> parts = iterative_split(y, (0.2, 0.2))
        >>> [len(p) for p in parts], [int(y[p, 0].sum()) for p in parts], int(y[:, 0].sum())
        ([120, 40, 40], [29, 9, 10], 48)
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(matrix).astype(bool)
    n = len(y)
    shares = np.array([1 - sum(fractions), *fractions], "float64")
    wanted = np.outer(shares, y.sum(0))  # (parts, labels) still to give
    room = shares * n  # images still to give per part
    part = np.full(n, -1)

    def pick(scores_a, scores_b):
        best = np.flatnonzero(scores_a == scores_a.max())
        best = best[scores_b[best] == scores_b[best].max()]
        return int(rng.choice(best))

    while True:
        left = part < 0
        counts = y[left].sum(0)
        if not counts.any():
            break
        lowest = np.flatnonzero(counts == counts[counts > 0].min())
        label = int(rng.choice(lowest[counts[lowest] > 0]))
        for i in rng.permutation(np.flatnonzero(left & y[:, label])):
            j = pick(wanted[:, label], room)
            part[i] = j
            wanted[j] -= y[i]
            room[j] -= 1
    for i in rng.permutation(np.flatnonzero(part < 0)):  # rows without a label
        j = pick(room, room)
        part[i] = j
        room[j] -= 1
    _refine(y, part, shares)
    return [sorted(np.flatnonzero(part == j).tolist()) for j in range(len(shares))]


def _refine(y, part, shares, max_rounds=10_000):
    """Move or swap images between parts while that brings the counts closer to their shares.

    Dealing label by label leaves later labels, and the part sizes, a few
    images off where labels co-occur. Each round takes the one move (an
    image to another part) or swap (two images between two parts) that most
    lowers the summed squared gap between each part's label counts and its
    share of them; the part sizes count as one more label that every image
    has. Images are grouped by their label pattern, so a round costs
    patterns x patterns, not images x images; beyond 1,500 patterns (many
    labels, few repeats) only moves are tried.
    """
    y = np.concatenate([y.astype("int64"), np.ones((len(y), 1), "int64")], axis=1)
    patterns, of = np.unique(y, axis=0, return_inverse=True)
    of = of.ravel()
    swaps = len(patterns) <= 1500
    target = np.outer(shares, y.sum(0))
    k = len(shares)
    for _ in range(max_rounds):
        gap = np.stack([y[part == j].sum(0) for j in range(k)]) - target
        present = [np.unique(of[part == j]) for j in range(k)]
        best, step = -1e-9, None
        for a in range(k):
            for b in range(k):
                if a == b or not len(present[a]):
                    continue
                u = patterns[present[a]]  # move one image a -> b
                change = 2 * ((u * (gap[b] - gap[a])).sum(-1) + (u * u).sum(-1))
                i = int(np.argmin(change))
                if change[i] < best:
                    best, step = change[i], (a, b, present[a][i], None)
                if not swaps or b < a or not len(present[b]):
                    continue
                d = patterns[present[a]][:, None, :] - patterns[present[b]][None, :, :]  # swap
                change = 2 * ((d * (gap[b] - gap[a])).sum(-1) + (d * d).sum(-1))
                i, j = np.unravel_index(np.argmin(change), change.shape)
                if change[i, j] < best:
                    best, step = change[i, j], (a, b, present[a][i], present[b][j])
        if step is None:
            return
        a, b, u, w = step
        part[np.flatnonzero((part == a) & (of == u))[0]] = b
        if w is not None:
            part[np.flatnonzero((part == b) & (of == w))[0]] = a


def split_labels(
    table: LabelTable, *, seed: int = 0, validation_fraction: float = 0.2, test_fraction: float = 0.15
):
    """`(files, class_names, info)` of a labels table, as `tuning.data.split_files` returns them.

    Rows with a `split` column value go to that split; the splits not given
    are held out of the training rows by a seeded split that keeps each
    class's share (each label's, for multi-label data). `files` maps each
    split to `(paths, targets)`; `info["class_counts"]` counts the training
    images of each class.

    Example:

        >>> import numpy as np
        >>> from tuning.labels import LabelTable, split_labels
        >>> t = LabelTable([f"/d/{i}.png" for i in range(20)], ["a", "b"],
        ...                np.array([0, 1] * 10, "int32"), False, None, "/d/labels.csv", "labels column")
        >>> files, classes, info = split_labels(t, validation_fraction=0.2, test_fraction=0.2)
        >>> [len(files[s][0]) for s in ("train", "val", "test")], info["class_counts"]
        ([12, 4, 4], [6, 6])
    """
    for key, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"`{key}` must be in [0, 1). Received: {key}={fraction}")
    name = os.path.basename(table.source)
    given = table.splits or ["train"] * len(table.paths)
    rows = {s: [i for i, g in enumerate(given) if g == s] for s in ("train", "val", "test")}
    if not rows["train"]:
        raise DataError(f"{name}: no row is in the train split; mark training rows `train`.")
    fractions = {"val": validation_fraction, "test": test_fraction}
    held_out = [s for s in ("val", "test") if not rows[s] and fractions[s] > 0]
    if not rows["val"] and "val" not in held_out:
        raise DataError(
            "The search needs validation images: mark rows `val` or use a validation fraction above 0."
        )
    info = {"seed": seed}
    where = f"{name} rows"
    for s in ("val", "test"):
        if rows[s]:
            info[s] = {"source": f"{name} rows marked {s}", "images": len(rows[s])}
    train = rows["train"]
    if held_out:
        if table.multilabel:
            parts = iterative_split(table.targets[train], [fractions[s] for s in held_out], seed=seed)
            how = "iterative stratification"
        else:
            labels = table.targets[train]
            need = 1 + len(held_out)
            few = {
                table.classes[c]: int(n)
                for c, n in enumerate(np.bincount(labels, minlength=len(table.classes)))
                if n < need
            }
            if few:
                raise DataError(
                    f"Classes with fewer than {need} training rows in {name}: {dict(list(few.items())[:3])}. "
                    f"Each class needs one training image and one for each held-out split "
                    f"({', '.join(held_out)}). Add images, or mark val/test rows."
                )
            parts = stratified_split(labels, [fractions[s] for s in held_out], seed=seed)
            how = "stratified"
        for s, idx in zip(held_out, parts[1:]):
            rows[s] = [train[i] for i in idx]
            info[s] = {"source": f"{fractions[s]:.0%} of {where}, {how}, seed {seed}", "images": len(idx)}
        rows["train"] = [train[i] for i in parts[0]]
        info["train"] = {"source": f"the rest of {where}", "images": len(rows["train"])}
    else:
        info["train"] = {
            "source": f"{name} rows marked train" if table.splits else where,
            "images": len(train),
        }
    files = {}
    for s in ("train", "val", "test"):
        if rows[s]:
            idx = sorted(rows[s])
            files[s] = ([table.paths[i] for i in idx], table.targets[idx])
    if "test" not in files:
        info["test"] = {"source": "none (test_fraction=0): no image was kept from the search", "images": 0}
    info["class_counts"] = [int(v) for v in table.matrix()[sorted(rows["train"])].sum(0)]
    info["explicit_train"] = table.splits is not None
    info["labels"] = {"file": table.source, "layout": table.layout, "multilabel": table.multilabel}
    return files, list(table.classes), info


# ----------------------------------------------------------- multi-label figures
def _ranked(y_true, scores):
    """Per class with positives: `(class, sorted scores, end of each tie run, hits so far, positives)`.

    Scores sorted high to low; tied scores form one run (ranked together),
    `tp[i]` counts the positives up to the end of run `i`.
    """
    y, p = np.asarray(y_true).astype(bool), np.asarray(scores, "float64")
    for c in range(y.shape[1]):
        positives = y[:, c].sum()
        if not positives:
            continue
        order = np.argsort(-p[:, c], kind="stable")
        s = p[order, c]
        last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of equal scores
        yield c, s, last, np.cumsum(y[order, c])[last], positives


def average_precision(y_true, scores) -> np.ndarray:
    """Per-class average precision: the mean of the precision at each positive's rank.

    scikit-learn's `average_precision_score` (tied scores ranked together);
    NaN for a class without positives.

    Example:

        >>> import numpy as np
        >>> from tuning.labels import average_precision
        >>> y = np.array([[1], [0], [1], [0]])
        >>> p = np.array([[0.9], [0.8], [0.7], [0.1]])
        >>> [round(float(v), 4) for v in average_precision(y, p)]
        [0.8333]
    """
    out = np.full(np.shape(y_true)[1], np.nan)
    for c, _, last, tp, positives in _ranked(y_true, scores):
        precision = tp / (last + 1)
        recall_gain = np.diff(np.r_[0, tp]) / positives
        out[c] = float((precision * recall_gain).sum())
    return out


def choose_thresholds(y_true, scores, *, default: float = 0.5) -> np.ndarray:
    """Per-class decision thresholds that maximise F1 on `(y_true, scores)` (the validation split).

    Each threshold lies halfway between the lowest score still called
    positive and the next score below it, so that scores just under the
    chosen one are not flipped by rounding. A class without positives
    keeps `default`.

    Example:

        >>> import numpy as np
        >>> from tuning.labels import choose_thresholds
        >>> y = np.array([[1], [1], [0], [0]])
        >>> p = np.array([[0.40], [0.30], [0.20], [0.10]])
        >>> [round(float(t), 4) for t in choose_thresholds(y, p)]
        [0.25]
    """
    out = np.full(np.shape(y_true)[1], default, "float64")
    for c, s, last, tp, positives in _ranked(y_true, scores):
        f1 = 2 * tp / (last + 1 + positives)
        k = int(np.argmax(f1))
        below = s[last[k] + 1] if last[k] + 1 < len(s) else 0.0
        out[c] = (s[last[k]] + below) / 2
    return out


def f1_scores(y_true, predicted) -> dict:
    """Micro-F1, macro-F1 (over classes with a positive or a prediction), per-class F1, subset accuracy.

    Example:

        >>> import numpy as np
        >>> from tuning.labels import f1_scores
        >>> f = f1_scores(np.array([[1, 0], [1, 1]]), np.array([[1, 0], [1, 0]]))
        >>> round(f["micro_f1"], 4), round(f["macro_f1"], 4), f["subset_accuracy"]
        (0.8, 0.5, 0.5)
    """
    y, q = np.asarray(y_true).astype(bool), np.asarray(predicted).astype(bool)
    tp, fp, fn = (y & q).sum(0), (~y & q).sum(0), (y & ~q).sum(0)
    occurs = (tp + fp + fn) > 0
    per_class = np.where(occurs, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return {
        "micro_f1": float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)),
        "macro_f1": float(per_class[occurs].mean()) if occurs.any() else 0.0,
        "per_class_f1": per_class,
        "subset_accuracy": float((y == q).all(1).mean()),
    }
