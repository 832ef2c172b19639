"""The main job's report: per-class metrics (Keras metrics), plots, report.md."""

from __future__ import annotations

import os

import keras
import numpy as np

import surgery
import zoo
from tuning.metrics import from_confusion


def evaluate(model, dataset, class_names):
    """Accuracy, balanced accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Also the class probabilities and true labels of every image, in the
    dataset's order (what the error analysis reads).
    """
    n = len(class_names)
    ys, ps = [], []
    examples = {}  # class -> its first test image, for the plots
    for x, y in dataset:
        ps.append(model.predict_on_batch(x))  # compiled, NumPy out: 2x eager on JAX
        ys.append(np.asarray(y))
        for i, label in enumerate(ys[-1]):
            if int(label) not in examples:
                examples[int(label)] = (np.asarray(x[i]), int(ps[-1][i].argmax()))
    y_true, probs = np.concatenate(ys), np.concatenate(ps)
    y_pred = probs.argmax(-1)
    one_hot = np.eye(n, dtype="float32")[y_true]
    f1 = keras.metrics.F1Score(average=None, threshold=None)
    f1.update_state(one_hot, probs)
    rows = []
    for c, name in enumerate(class_names):
        precision = keras.metrics.Precision(class_id=c)
        recall = keras.metrics.Recall(class_id=c)
        pred_one_hot = np.eye(n, dtype="float32")[y_pred]
        precision.update_state(one_hot, pred_one_hot)
        recall.update_state(one_hot, pred_one_hot)
        rows.append(
            {
                "class": name,
                "precision": float(precision.result()),
                "recall": float(recall.result()),
                "f1": float(keras.ops.convert_to_numpy(f1.result())[c]),
                "support": int((y_true == c).sum()),
            }
        )
    confusion = np.zeros((n, n), "int64")
    np.add.at(confusion, (y_true, y_pred), 1)
    figures = from_confusion(confusion)
    return {
        "accuracy": float((y_pred == y_true).mean()),
        "balanced_accuracy": figures["balanced_accuracy"],
        "macro_f1": figures["macro_f1"],
        "probabilities": probs,
        "true": y_true,
        "per_class": rows,
        "confusion": confusion,
        # One image per class (class order), with its true and predicted labels.
        "images": np.stack([examples[c][0] for c in sorted(examples)]),
        "labels": np.asarray(sorted(examples)),
        "predicted": np.asarray([examples[c][1] for c in sorted(examples)]),
    }


def _grad_of(fn, x):
    """d fn(x) / dx with the active backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x)
    if backend == "jax":
        import jax

        y, grad = jax.value_and_grad(lambda v: fn(v).sum())(x)
        return y, grad
    if backend == "torch":
        import torch

        x = torch.as_tensor(keras.ops.convert_to_numpy(x)).requires_grad_(True)
        y = fn(x)
        y.sum().backward()
        return y, x.grad
    raise NotImplementedError(f"Grad-CAM has no gradient path for backend {backend!r}.")


def grad_cam(model, images, *, layer: str, class_index=None):
    """Grad-CAM heat maps (Selvaraju et al. 2017), one per image, in [0, 1].

    The model is split at `layer`: `surgery.cut` gives the feature map,
    `surgery.tail` the scoring function on it; gradients of the class score
    with respect to the feature map weight its channels.
    """
    features_model = surgery.cut(model, layer)
    feats = keras.ops.convert_to_numpy(features_model(images, training=False))
    tail = surgery.tail(model, layer)
    head_fn = lambda f: tail(f, training=False)  # noqa: E731
    preds = keras.ops.convert_to_numpy(head_fn(keras.ops.convert_to_tensor(feats)))
    if class_index is None:
        class_index = preds.argmax(-1)
    mask = np.eye(preds.shape[-1], dtype="float32")[class_index]

    def score(f):
        return head_fn(f) * keras.ops.convert_to_tensor(mask)

    _, grads = _grad_of(score, keras.ops.convert_to_tensor(feats))
    grads = keras.ops.convert_to_numpy(grads)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * feats).sum(-1), 0)
    cam /= cam.max(axis=(1, 2), keepdims=True) + 1e-8
    return cam


def _label(value) -> str:
    """A hyperparameter value as shown: booleans as true/false, floats short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def latency_figure(rows, max_latency_ms=None):
    """Each trial's score against its latency per image (batch 1), labelled by trial and backbone.

    Rows are leaderboard rows with `score` and `latency_ms`; the cap, if
    given, is drawn as a dashed line.

    Example:

        >>> from tuning import report
        >>> rows = [{"trial_id": "0", "score": 0.9, "latency_ms": 4.0, "backbone": "resnet18"},
        ...         {"trial_id": "1", "score": 0.8, "latency_ms": 1.5, "backbone": "mobilenetv3small"}]
        >>> report.latency_figure(rows, max_latency_ms=3).axes[0].get_xlabel()
        'latency per image, batch 1 (ms)'
    """
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r.get("latency_ms") is not None and r.get("score") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter([r["latency_ms"] for r in timed], [r["score"] for r in timed])
    for r in timed:
        label = str(r.get("trial_id")) + (f" {r['backbone']}" if r.get("backbone") else "")
        ax.annotate(
            label, (r["latency_ms"], r["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    if max_latency_ms is not None:
        ax.axvline(max_latency_ms, color="grey", linestyle="--", linewidth=1, label="latency cap")
        ax.legend(fontsize=8)
    ax.set_xlabel("latency per image, batch 1 (ms)")
    ax.set_ylabel("score")
    ax.set_title("trials: score against latency", fontsize=9)
    return fig


def trials_figure(rows):
    """Score against each hyperparameter that varied (the backbone first).

    Numeric hyperparameters on numeric axes (log for ranges over more than
    a decade, as sampled learning rates), categories sorted, booleans as
    true/false; fixed ones are left out. With nothing varied (one trial, or
    a fixed space) it shows the score per trial.

    Example:

        >>> from tuning import report
        >>> rows = [{"trial_id": "0", "score": 0.5, "head/units": 64},
        ...         {"trial_id": "1", "score": 0.7, "head/units": 256}]
        >>> [ax.get_title() for ax in report.trials_figure(rows).axes if ax.get_title()]
        ['head/units']
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    keys = [k for k in rows[0] if k == "backbone" or k.startswith(("head/", "finetune/"))]
    keys.sort(key=lambda k: k != "backbone")
    varied = [k for k in keys if len({_label(r.get(k)) for r in rows}) > 1]
    scores = [r["score"] for r in rows]
    if not varied:
        fig, ax = plt.subplots(figsize=(4.5, 3))
        ids = [str(r.get("trial_id")) for r in rows]
        ax.bar(range(len(rows)), scores)
        ax.set_xticks(range(len(rows)), ids)
        ax.set_xlabel("trial")
        ax.set_ylabel("score")
        ax.set_title("score per trial (no hyperparameter varied)", fontsize=9)
        return fig
    cols = min(4, len(varied))
    n_rows = -(-len(varied) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.4 * cols, 2.9 * n_rows), squeeze=False)
    for ax, key in zip(axes.flat, varied):
        values = [r.get(key) for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, scores)
            low, high = min(values), max(values)
            if low > 0 and high / low > 10:  # learning rates sampled over decades
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ax.xaxis.set_major_locator(MaxNLocator(4, integer=all(isinstance(v, int) for v in values)))
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        else:
            labels = sorted({_label(v) for v in values})
            ax.scatter([labels.index(_label(v)) for v in values], scores)
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_title(key, fontsize=9)
        ax.set_ylabel("score")
    for ax in list(axes.flat)[len(varied) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_saver(out_dir):
    """`(pyplot, save, written)`: matplotlib on Agg, and `save(fig, name)` into `out_dir/plots`.

    `save` lays the figure out, writes it at 110 dpi, closes it and appends
    its path to the list `written` (what the reports link).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = os.path.join(out_dir, "plots")
    os.makedirs(plots, exist_ok=True)
    written = []

    def save(fig, name):
        path = os.path.join(plots, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    return plt, save, written


def write_plots(
    out_dir,
    *,
    model,
    history,
    leaderboard,
    evaluation,
    class_names,
    backbone,
    top_losses=(),
    max_latency_ms=None,
):
    """PNG plots: learning curves, confusion matrix, trials, Grad-CAM, feature maps, top losses.

    `top_losses`: dicts `path`, `true`, `predicted`, `probability` (see
    `tuning.analysis`), drawn as a gallery at the model's input size.
    """
    from matplotlib.ticker import MaxNLocator

    plt, save, written = plot_saver(out_dir)

    if history:
        phases = list(history.get("phase") or [])
        switch = phases.index(2) if 1 in phases and 2 in phases else None
        if switch is not None:
            xlabel = "epoch (phase 1: head only | phase 2: fine-tuning)"
        elif phases and phases[0] == 2:
            xlabel = "epoch (every stage trained from the first epoch)"
        else:
            xlabel = "epoch (head only, backbone frozen)"
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("loss", "accuracy")):
            for k in (key, f"val_{key}"):
                if k in history:
                    ax.plot(range(1, len(history[k]) + 1), history[k], marker="o", label=k)
            if switch is not None:
                ax.axvline(switch + 0.5, color="grey", linestyle="--", linewidth=1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(xlabel)
            ax.set_title(key)
            ax.legend()
        save(fig, "learning_curves.png")

    cm = evaluation["confusion"]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                cm[i, j],
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (test accuracy {evaluation['accuracy']:.3f})")
    save(fig, "confusion_matrix.png")

    scored = [r for r in leaderboard if r.get("score") is not None]
    if scored:
        fig = trials_figure(scored)
        save(fig, "trials.png")
    if any(r.get("latency_ms") is not None for r in scored):
        save(latency_figure(scored, max_latency_ms), "latency.png")  # what each trial costs to serve

    if top_losses:
        from tuning.analysis import top_losses_figure

        size = tuple(model.input_shape[1:3])
        images = [
            keras.utils.img_to_array(keras.utils.load_img(r["path"], target_size=size)) for r in top_losses
        ]
        fig = top_losses_figure(
            images,
            [r["true"] for r in top_losses],
            [r["predicted"] for r in top_losses],
            [r["probability"] for r in top_losses],
        )
        save(fig, "top_losses.png")

    stages = zoo.stages_of(model)
    # One test image per class (at most 8 classes shown).
    picks = list(range(min(8, len(evaluation["images"]))))
    images = evaluation["images"][picks]
    # The deepest stage that still has a map worth looking at (>= 6x6): at
    # small image sizes the last stage is 2x2 and its heat map four blocks.
    sizes = [min(_stage_output(model, s.layer).shape[1:3]) for s in stages]
    cam_stage = next((s for s, n in zip(reversed(stages), reversed(sizes)) if n and n >= 6), stages[-1])
    try:
        cams = grad_cam(model, images, layer=cam_stage.layer)
        fig, axes = plt.subplots(2, len(images), figsize=(max(4.5, 2.2 * len(images)), 4.8), squeeze=False)
        for i, (img, k) in enumerate(zip(images, picks)):
            axes[0, i].imshow(img.astype("uint8"))
            axes[0, i].set_title(
                f"true {class_names[evaluation['labels'][k]]}\n"
                f"pred {class_names[evaluation['predicted'][k]]}",
                fontsize=8,
            )
            axes[1, i].imshow(img.astype("uint8"))
            axes[1, i].imshow(
                cams[i],
                cmap="jet",
                alpha=0.45,
                interpolation="bilinear",
                extent=(0, img.shape[1], img.shape[0], 0),
            )
            for ax in axes[:, i]:
                ax.axis("off")
        fig.suptitle(f"Grad-CAM at {cam_stage.layer} (stride {cam_stage.reduction})", fontsize=10)
        save(fig, "grad_cam.png")
    except NotImplementedError:
        pass

    for tag, stage in (("early", stages[min(1, len(stages) - 1)]), ("late", stages[-1])):
        fmap = keras.ops.convert_to_numpy(surgery.cut(model, stage.layer)(images[-1:], training=False))[0]
        n = min(16, fmap.shape[-1])
        fig, axes = plt.subplots(4, 4, figsize=(6, 6))
        for k, ax in enumerate(axes.flat):
            if k < n:
                ax.imshow(fmap[..., k], cmap="viridis")
            ax.axis("off")
        fig.suptitle(f"{backbone}: first {n} channels of {stage.layer} (stride {stage.reduction})")
        save(fig, f"feature_maps_{tag}.png")
    return written


def _stage_output(model, layer):
    """The symbolic output of a stage's layer; a cut only where the backbone is nested."""
    try:
        return model.get_layer(layer).output
    except ValueError:
        return surgery.cut(model, layer).output


def write_report(
    out_dir, *, config, classes, result, objective, evaluation, analysis, cv, timings, plots, splits
):
    """`report.md`: data and splits, the best trial, the held-out figures, errors, timings, plots."""
    lines = ["# Transfer-learning run", ""]
    lines += _data_section(config, classes, result, splits)
    lines += _best_trial_section(result, objective)
    lines += _budget_section(config, result.budget)
    lines += _held_out_section(evaluation, cv)
    lines += _errors_section(analysis)
    lines += ["", "## Timings", ""] + [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots]
    path = os.path.join(out_dir, "report.md")
    from tuning.files import write_text

    write_text(path, "\n".join(lines) + "\n")
    return path


def _data_section(config, classes, result, splits):
    images = [
        f"- {name}: {splits[name]['images']} images, {splits[name]['source']}"
        for name in ("train", "val", "test")
    ]
    counts = splits.get("class_counts")
    searched = ",".join(config.backbone)
    return [
        "## Data",
        "",
        f"- classes ({len(classes)}): {', '.join(classes)}",
        *images,
        *([f"- training images per class: {dict(zip(classes, counts))}"] if counts else []),
        f"- image size {config.image_size}x{config.image_size}, "
        + (
            f"backbones searched `{searched}` (best: `{result.hyperparameters['backbone']}`), "
            if "backbone" in result.hyperparameters
            else f"backbone `{searched}`, "
        )
        + f"weights `{config.weights}`, recipe `{config.recipe}`, precision {config.precision}, "
        f"class weight `{config.class_weight}`",
        "",
    ]


def _best_trial_section(result, objective):
    lines = [
        "## Best trial",
        "",
        f"- objective {objective}: {result.score:.4f} (on the validation split, which chose it)",
        "",
        "| hyperparameter | value |",
        "|---|---|",
    ]
    return lines + [f"| {k} | {_label(v)} |" for k, v in result.hyperparameters.items()]


def _budget_section(config, budget):
    if not config.time_budget or not budget:
        return []
    stopped = budget.get("trials_stopped") or {}
    refused = budget.get("stopped_search")
    lines = [
        "",
        "## Time budget",
        "",
        f"- budget {config.time_budget:.0f} s for the search; the search took {budget['search_seconds']:.0f} s "
        f"and finished {budget['trials_finished']} trials"
        + (f" of the {budget['trials_asked']} asked" if budget.get("trials_asked") else ""),
    ]
    if refused:
        lines.append(
            f"- cut: no further trial started with {refused['seconds_left']:.0f} s left "
            f"(a trial took {refused['trial_estimate']:.0f} s on average)"
        )
    for trial_id, stop in stopped.items():
        lines.append(
            f"- cut: trial {trial_id} stopped at the budget in epoch {stop['epoch']} (its best epoch kept)"
        )
    if not refused and not stopped:
        lines.append("- nothing was cut")
    return lines


def _held_out_section(evaluation, cv):
    if evaluation.get("split", "test") == "test":
        title = f"## Test set: accuracy {evaluation['accuracy']:.4f}"
        where = "Measured on images that no trial saw"
    else:
        title = f"## Validation (used for selection): accuracy {evaluation['accuracy']:.4f}"
        where = (
            "No test split (--test-fraction 0 and no test/ folder): this is the validation "
            "split that chose the best trial, an optimistic figure"
        )
    source = f" ({evaluation['source']})" if evaluation.get("source") else ""
    lines = ["", title, "", f"{where}{source}.", "", "| figure | plain |"]
    tta = evaluation.get("tta")
    if tta:
        lines[-1] += f" {'+'.join(tta['views'])} TTA |"
    lines[-1] += " CV mean +- sd |" if cv else ""
    lines.append("|---" * (2 + bool(tta) + bool(cv)) + "|")
    for key, name in (
        ("accuracy", "accuracy"),
        ("balanced_accuracy", "balanced accuracy"),
        ("macro_f1", "macro-F1"),
    ):
        row = f"| {name} | {evaluation[key]:.4f} |"
        if tta:
            row += f" {tta[key]:.4f} |"
        if cv:
            row += f" {cv[key]['mean']:.4f} +- {cv[key]['sd']:.4f} ({cv['folds']} folds of train+val) |"
        lines.append(row)
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
        for r in evaluation["per_class"]
    ]
    return lines


def _errors_section(analysis):
    lines = ["", "## Errors", ""]
    if analysis["confused"]:
        lines += ["Most confused (true -> predicted, images):", ""]
        lines += [f"- {t} -> {p}: {n}" for t, p, n in analysis["confused"]]
    else:
        lines.append("No image of the held-out split was misclassified.")
    if analysis["top_losses"]:
        lines += ["", "Most confidently wrong (plots/top_losses.png):", ""]
        lines += [
            f"- `{r['path']}`: {r['true']} predicted as {r['predicted']} ({r['probability']:.2f})"
            for r in analysis["top_losses"]
        ]
    lines += [
        "",
        "Suspect labels: the training and validation images whose given label the best model "
        "rates lowest (all of them ranked in suspects.csv; check the first ones by eye):",
        "",
    ]
    lines += [
        f"- `{r['path']}` ({r['split']}): labelled {r['label']} ({r['p_label']:.2f}), "
        f"looks like {r['predicted']} ({r['p_predicted']:.2f})"
        for r in analysis["suspects"]
    ]
    dups = analysis["duplicates"]
    lines += ["", f"Leakage: {len(dups)} image pairs appear in two splits" + (":" if dups else "."), ""]
    lines += [
        f"- {d['kind']} ({d['similarity']:.3f}): `{d['path_a']}` ({d['split_a']}) = `{d['path_b']}` ({d['split_b']})"
        for d in dups[:20]
    ]
    return lines
