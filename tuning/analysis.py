"""Error analysis that points at images: top losses, confused pairs, suspect labels, leakage.

What fastai's `ClassificationInterpretation` (`plot_top_losses`,
`most_confused`) and `ImageClassifierCleaner` show, and cleanlab's idea of
ranking images by how little the model believes their given label, for a
run's files:

- `top_losses`: the most confidently wrong images of a split;
- `most_confused`: the class pairs the model mixes up most;
- `suspects`: training/validation images whose given label the model
  rates lowest (candidate mislabels);
- `duplicates`: the same image in two splits (identical files, then
  near-identical backbone embeddings): leakage that inflates the test figure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def top_losses(probs, labels, *, k: int = 12) -> list[int]:
    """Indices of the `k` wrong predictions made with the highest confidence, most confident first.

    Example:

        >>> import numpy as np
        >>> from tuning.analysis import top_losses
        >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        >>> top_losses(p, np.array([0, 0, 1, 1]))
        [1, 2]
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    predicted = probs.argmax(-1)
    wrong = np.flatnonzero(predicted != labels)
    order = np.argsort(-probs[wrong, predicted[wrong]], kind="stable")
    return wrong[order][:k].tolist()


def most_confused(confusion, class_names: Sequence[str], *, limit: int = 10) -> list[tuple]:
    """`(true class, predicted class, count)` off the diagonal, most frequent first.

    Example:

        >>> from tuning.analysis import most_confused
        >>> most_confused([[5, 2, 0], [0, 4, 1], [3, 0, 6]], ["a", "b", "c"])
        [('c', 'a', 3), ('a', 'b', 2), ('b', 'c', 1)]
    """
    cm = np.asarray(confusion)
    pairs = [
        (class_names[i], class_names[j], int(cm[i, j]))
        for i in range(len(cm))
        for j in range(len(cm))
        if i != j and cm[i, j] > 0
    ]
    return sorted(pairs, key=lambda p: -p[2])[:limit]


def suspects(
    probs, labels, paths: Sequence[str], splits: Sequence[str], class_names: Sequence[str]
) -> list[dict]:
    """Every image ranked by the probability the model gives its label, lowest first.

    Rows: `path`, `split`, `label`, `p_label`, `predicted`, `p_predicted`.

    Example:

        >>> import numpy as np
        >>> from tuning.analysis import suspects
        >>> rows = suspects(np.array([[0.9, 0.1], [0.95, 0.05]]), np.array([0, 1]),
        ...                 ["a.png", "b.png"], ["train", "val"], ["cat", "dog"])
        >>> [(r["path"], r["label"], r["predicted"]) for r in rows]
        [('b.png', 'dog', 'cat'), ('a.png', 'cat', 'cat')]
    """
    probs, labels = np.asarray(probs), np.asarray(labels).astype("int64")
    given = probs[np.arange(len(labels)), labels]
    predicted = probs.argmax(-1)
    rows = []
    for i in np.argsort(given, kind="stable"):
        rows.append(
            {
                "path": paths[i],
                "split": splits[i],
                "label": class_names[labels[i]],
                "p_label": round(float(given[i]), 4),
                "predicted": class_names[predicted[i]],
                "p_predicted": round(float(probs[i, predicted[i]]), 4),
            }
        )
    return rows


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def duplicates(
    paths: Sequence[str],
    splits: Sequence[str],
    embeddings=None,
    thumbnails=None,
    *,
    threshold: float = 0.98,
    pixel_threshold: float = 0.9,
    colour_tolerance: float = 12.0,
    limit: int = 50,
) -> list[dict]:
    """Pairs of images in different splits that are the same picture.

    First identical files (SHA-256 of the bytes: "exact"); then, among the
    rest, pairs whose embeddings have a cosine similarity of at least
    `threshold` after the mean embedding is subtracted (without the
    centring, non-negative pooled features of any two images look alike)
    and whose `thumbnails` (small copies of the images, 0-255) agree: their
    spatial structure (each channel's mean removed) correlates at least
    `pixel_threshold` and their mean colours differ by at most
    `colour_tolerance` in every channel ("near": the same image re-encoded,
    resized or slightly changed). A trained classifier's embeddings alone put any two
    images of a class together (two stars of different colours score
    0.996 on the demo); the thumbnails keep only pairs that also look the
    same pixel by pixel.

    Returns:
        list of dicts `kind`, `similarity`, `path_a`, `split_a`, `path_b`,
        `split_b`, exact pairs first, then by similarity; at most `limit`.

    Example:

        >>> import os, pathlib, tempfile
        >>> from tuning.analysis import duplicates
        >>> d = tempfile.mkdtemp()
        >>> for name, data in (("a", b"x"), ("b", b"y"), ("c", b"x")):
        ...     pathlib.Path(os.path.join(d, name)).write_bytes(data)
        1
        1
        1
        >>> [(r["kind"], os.path.basename(r["path_a"]), os.path.basename(r["path_b"]))
        ...  for r in duplicates([os.path.join(d, n) for n in "abc"], ["train", "train", "test"])]
        [('exact', 'a', 'c')]
    """
    rows, seen = [], {}
    exact = set()
    for i, path in enumerate(paths):
        digest = file_digest(path)
        for j in seen.get(digest, []):
            if splits[j] != splits[i]:
                rows.append(_pair("exact", 1.0, paths, splits, j, i))
                exact.add((min(i, j), max(i, j)))
        seen.setdefault(digest, []).append(i)
    if embeddings is not None and len(paths) > 2:
        e = np.asarray(embeddings, "float32")
        e = e - e.mean(0, keepdims=True)
        e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-12
        t = colour = None
        if thumbnails is not None:
            t = np.asarray(thumbnails, "float32")
            colour = t.mean((1, 2))  # (n, channels)
            t = (t - colour[:, None, None, :]).reshape(len(paths), -1)
            t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-12
        names = np.asarray(splits)
        near = []
        groups = [np.flatnonzero(names == s) for s in dict.fromkeys(splits)]
        for g, a in enumerate(groups):  # only pairs across splits, a block of rows at a time
            for b in groups[g + 1 :]:
                for start in range(0, len(a), 256):
                    rows_a = a[start : start + 256]
                    sims = e[rows_a] @ e[b].T
                    if t is not None:  # the pixels must agree too: structure, then colour
                        same = t[rows_a] @ t[b].T >= pixel_threshold
                        for k in range(colour.shape[1]):
                            same &= (
                                np.abs(colour[rows_a, k][:, None] - colour[b, k][None, :]) <= colour_tolerance
                            )
                        sims = np.where(same, sims, -1.0)
                    for i, j in zip(*np.nonzero(sims >= threshold)):
                        pair = (min(rows_a[i], b[j]), max(rows_a[i], b[j]))
                        if pair not in exact:
                            near.append((float(sims[i, j]), *pair))
        near.sort(key=lambda t: -t[0])
        rows += [_pair("near", round(s, 4), paths, splits, i, j) for s, i, j in near[:limit]]
    return rows[:limit]


def _pair(kind, similarity, paths, splits, i, j):
    return {
        "kind": kind,
        "similarity": similarity,
        "path_a": paths[i],
        "split_a": splits[i],
        "path_b": paths[j],
        "split_b": splits[j],
    }


def top_losses_figure(images, true_names, predicted_names, probabilities, *, columns: int = 6):
    """A gallery: each image titled with its true class, the predicted class and its probability."""
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p, prob in zip(axes.flat, images, true_names, predicted_names, probabilities):
        ax.imshow(np.asarray(img).astype("uint8"))
        ax.set_title(f"true {t}\npred {p} {prob:.2f}", fontsize=8)
    fig.suptitle("most confidently wrong test images", fontsize=10)
    return fig
