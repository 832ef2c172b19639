"""Multi-label runs after the search: thresholds, held-out figures, plots and report.md.

The search itself is the classification one (`TransferHyperModel` with
`task="multilabel"`: sigmoid head, binary cross-entropy, focal or
asymmetric loss, `val_map` objective). Afterwards the job

- picks one decision threshold per class on the validation split
  (`tuning.labels.choose_thresholds`, the F1-best), stored in
  `classes.json` beside the model;
- measures on the test split: macro average precision (mAP), micro- and
  macro-F1 at those thresholds (and macro-F1 at 0.5, for comparison),
  exact-match (subset) accuracy and a per-class table;
- draws the learning curves, per-class precision-recall curves, the trials
  and the most confidently wrong label assignments.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from tuning.labels import average_precision, choose_thresholds, f1_scores


def scores(model, dataset):
    """`(probabilities, targets)` of every image of `dataset`, in its order."""
    ps, ys = [], []
    for x, y in dataset:
        ps.append(model.predict_on_batch(x).astype("float32"))
        ys.append(np.asarray(y))
    return np.concatenate(ps), np.concatenate(ys).astype("uint8")


def thresholds_on(model, dataset) -> np.ndarray:
    """The F1-best decision threshold of each class on `dataset` (the validation split)."""
    probs, y = scores(model, dataset)
    return choose_thresholds(y, probs)


def evaluate_multilabel(model, dataset, classes, thresholds) -> dict:
    """mAP, micro-/macro-F1 at `thresholds`, subset accuracy and the per-class table.

    Returns a dict with `map`, `micro_f1`, `macro_f1`, `macro_f1_at_0.5`,
    `subset_accuracy`, `per_class` (class, ap, f1, threshold, precision,
    recall, support), and the `probabilities` and `true` rows of every
    image (what the gallery of errors reads).

    Example:

        >>> import keras, numpy as np
        >>> from tuning.multilabel import evaluate_multilabel
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Activation("sigmoid")])
        >>> x = np.array([[3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]], "float32")
        >>> y = np.array([[1, 0], [0, 1], [1, 1]], "float32")
        >>> e = evaluate_multilabel(model, [(x, y)], ["a", "b"], np.array([0.5, 0.5]))
        >>> e["map"], e["micro_f1"], e["subset_accuracy"]
        (1.0, 1.0, 1.0)
    """
    probs, y = scores(model, dataset)
    thresholds = np.asarray(thresholds, "float64")
    predicted = probs >= thresholds
    ap = average_precision(y, probs)
    f = f1_scores(y, predicted)
    at_half = f1_scores(y, probs >= 0.5)
    rows = []
    for c, name in enumerate(classes):
        tp = int((predicted[:, c] & (y[:, c] == 1)).sum())
        rows.append(
            {
                "class": name,
                "ap": None if np.isnan(ap[c]) else float(ap[c]),
                "f1": float(f["per_class_f1"][c]),
                "threshold": float(thresholds[c]),
                "precision": tp / max(int(predicted[:, c].sum()), 1),
                "recall": tp / max(int(y[:, c].sum()), 1),
                "support": int(y[:, c].sum()),
            }
        )
    return {
        "map": float(np.nanmean(ap)) if not np.isnan(ap).all() else 0.0,
        "micro_f1": f["micro_f1"],
        "macro_f1": f["macro_f1"],
        "macro_f1_at_0.5": at_half["macro_f1"],
        "subset_accuracy": f["subset_accuracy"],
        "per_class": rows,
        "probabilities": probs,
        "true": y,
    }


FIGURES = ("map", "micro_f1", "macro_f1", "subset_accuracy")


def wrong_assignments(probabilities, true, paths, classes, thresholds, k: int = 12) -> list:
    """The `k` most confidently wrong (image, class) decisions: false positives and misses.

    A false positive's confidence is its probability; a miss's is one minus
    it. Returns dicts `path`, `class`, `kind` ("false positive" or
    "missed"), `probability`, `threshold`, and the image's true labels.

    Example:

        >>> import numpy as np
        >>> from tuning.multilabel import wrong_assignments
        >>> p = np.array([[0.9, 0.1], [0.2, 0.95]])
        >>> y = np.array([[1, 1], [0, 1]])
        >>> [(r["path"], r["class"], r["kind"]) for r in wrong_assignments(p, y, ["a", "b"], ["x", "y"], [0.5, 0.5])]
        [('a', 'y', 'missed')]
    """
    p, y = np.asarray(probabilities), np.asarray(true).astype(bool)
    called = p >= np.asarray(thresholds)
    wrong = called != y
    confidence = np.where(y, 1 - p, p)
    cells = np.argwhere(wrong)
    order = np.argsort(-confidence[wrong], kind="stable")[:k]
    rows = []
    for i, c in cells[order]:
        rows.append(
            {
                "path": paths[i],
                "class": classes[c],
                "kind": "missed" if y[i, c] else "false positive",
                "probability": float(p[i, c]),
                "threshold": float(thresholds[c]),
                "labels": " ".join(classes[j] for j in np.flatnonzero(y[i])),
            }
        )
    return rows


def write_plots(out_dir, *, model, history, leaderboard, evaluation, class_names, wrong):
    """PNGs: learning curves (loss, mAP), precision-recall per class, trials, the most wrong decisions."""
    from matplotlib.ticker import MaxNLocator

    from tuning.report import plot_saver, trials_figure

    plt, save, written = plot_saver(out_dir)
    if history:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("loss", "map")):
            for k in (key, f"val_{key}"):
                if k in history:
                    ax.plot(range(1, len(history[k]) + 1), history[k], marker="o", label=k)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend()
        save(fig, "learning_curves.png")

    probs, y = evaluation["probabilities"], evaluation["true"].astype(bool)
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, row in enumerate(evaluation["per_class"]):
        if not y[:, c].any():
            continue
        order = np.argsort(-probs[:, c], kind="stable")
        hits = np.cumsum(y[order, c])
        precision = hits / np.arange(1, len(order) + 1)
        recall = hits / y[:, c].sum()
        ax.plot(np.r_[0, recall], np.r_[1, precision], label=f"{row['class']} (AP {row['ap']:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"precision-recall per class (mAP {evaluation['map']:.3f})")
    ax.legend(fontsize=7, loc="lower left")
    save(fig, "precision_recall.png")

    scored = [r for r in leaderboard if r.get("score") is not None]
    if scored:
        save(trials_figure(scored), "trials.png")

    if wrong:
        size = tuple(model.input_shape[1:3])
        cols = min(6, len(wrong))
        rows = -(-len(wrong) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.9 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, r in zip(axes.flat, wrong):
            ax.imshow(keras.utils.load_img(r["path"], target_size=size))
            ax.set_title(
                f"{r['kind']}: {r['class']}\np {r['probability']:.2f} (threshold {r['threshold']:.2f})",
                fontsize=7,
            )
        fig.suptitle("most confidently wrong label decisions (test)", fontsize=10)
        save(fig, "wrong_labels.png")
    return written


def write_report(out_dir, *, config, classes, result, objective, evaluation, wrong, timings, plots, splits):
    """`report.md` of a multi-label run."""
    from tuning import report
    from tuning.files import write_text

    lines = ["# Multi-label transfer-learning run", ""]
    lines += report._data_section(config, classes, result, splits)
    labels = splits.get("labels") or {}
    if labels:
        lines.insert(len(lines) - 1, f"- labels: `{labels['file']}` ({labels['layout']})")
    lines += report._best_trial_section(result, objective)
    lines += report._budget_section(config, result.budget)
    split = evaluation.get("split", "test")
    title = "Test set" if split == "test" else "Validation (used for selection and thresholds)"
    lines += ["", f"## {title}: mAP {evaluation['map']:.4f}", ""]
    lines.append(
        "Measured on images that no trial saw" if split == "test" else "No test split: an optimistic figure"
    )
    lines[-1] += (
        f" ({evaluation.get('source', '')}); decisions at the per-class thresholds chosen on the validation split."
    )
    tta = evaluation.get("tta")
    lines += ["", "| figure | plain |" + (f" {'+'.join(tta['views'])} TTA |" if tta else "")]
    lines.append("|---|---|" + ("---|" if tta else ""))
    names = {
        "map": "mAP (macro average precision)",
        "micro_f1": "micro-F1",
        "macro_f1": "macro-F1",
        "subset_accuracy": "exact-match (subset) accuracy",
    }
    for key, name in names.items():
        lines.append(f"| {name} | {evaluation[key]:.4f} |" + (f" {tta[key]:.4f} |" if tta else ""))
    lines.append(
        f"| macro-F1 at threshold 0.5 | {evaluation['macro_f1_at_0.5']:.4f} |" + (" |" if tta else "")
    )
    lines += [
        "",
        "| class | AP | F1 | threshold | precision | recall | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in evaluation["per_class"]:
        ap = "n/a" if r["ap"] is None else f"{r['ap']:.3f}"
        lines.append(
            f"| {r['class']} | {ap} | {r['f1']:.3f} | {r['threshold']:.3f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['support']} |"
        )
    lines += ["", "## Errors", ""]
    if wrong:
        lines += ["Most confidently wrong label decisions (plots/wrong_labels.png):", ""]
        lines += [
            f"- `{r['path']}`: {r['class']} {r['kind']} (p {r['probability']:.2f}, threshold "
            f"{r['threshold']:.2f}; labels: {r['labels']})"
            for r in wrong
        ]
    else:
        lines.append("No label decision on the held-out split was wrong.")
    lines += ["", "## Timings", ""] + [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots]
    path = os.path.join(out_dir, "report.md")
    write_text(path, "\n".join(lines) + "\n")
    return path
