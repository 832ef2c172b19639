"""`python -m tuning bench`: what cached features buy in head-only trials, measured side by side.

Both paths train the same heads on the same backbone (first trained on the
demo's training split, so its features carry information), several seeds
each; the speed-up and the largest accuracy gap between the paths are
printed.
"""

from __future__ import annotations

import os
import time


def _pretrained_backbone(args, x, y, xv, yv) -> str:
    """Train the whole model on the demo's training split; the weights file its backbone loads."""
    import tempfile

    import keras

    import zoo

    model = zoo.build(
        args.backbone,
        num_classes=len(zoo.datasets.CLASSES),
        input_shape=(args.image_size,) * 2 + (3,),
        include_preprocessing=True,
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    h = model.fit(x, y, batch_size=32, epochs=args.pretrain_epochs, verbose=0)
    _recalibrate_batch_norm(model, x)
    _, val = model.evaluate(xv, yv, verbose=0)
    print(
        f"backbone: {args.backbone} trained {args.pretrain_epochs} epochs on the demo training split "
        f"in {time.perf_counter() - start:.0f} s (train acc {h.history['accuracy'][-1]:.3f}, val acc {val:.3f})"
    )
    path = os.path.join(tempfile.mkdtemp(prefix="tuning_bench_"), "backbone.weights.h5")
    model.save_weights(path)
    return path


def _recalibrate_batch_norm(model, x, batch_size: int = 32) -> None:
    """Moving statistics of every BatchNormalization = the mean over `x`'s batches.

    A few epochs on a small set leave them near their initial values
    (momentum 0.99 over a few dozen steps), so the trained backbone would
    give chance-level features in inference mode. Each batch in training
    mode with momentum k/(k+1) makes them a running mean of the batch
    statistics, as SWA's `bn_update` does.
    """
    import keras

    import zoo

    layers = [l for l in zoo.layers.leaf_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in layers]
    try:
        for k, i in enumerate(range(0, len(x), batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(x[i : i + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


def _spread(values) -> str:
    import statistics

    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def bench(args) -> int:
    """`python -m tuning bench`: head-only trials on cached features against the naive path."""
    import keras
    import keras_tuner as kt

    import tuning
    import zoo
    from tuning._keras import custom_gradient_names, release_custom_gradients

    for flag, value, low in (
        ("--image-size", args.image_size, 32),
        ("--per-class", args.per_class, 2),
        ("--epochs", args.epochs, 1),
        ("--trials", args.trials, 1),
        ("--seeds", args.seeds, 1),
        ("--pretrain-epochs", args.pretrain_epochs, 1),
    ):
        if value < low:
            raise ValueError(f"{flag} must be at least {low}. Received: {flag} {value}")
    zoo.get_spec(args.backbone)  # an unknown name fails here, with suggestions
    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.image_size, split="train")
    xv, yv, _ = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.image_size, split="val")
    weights = args.backbone_weights or _pretrained_backbone(args, x, y, xv, yv)
    space = {
        "finetune/stages": 0,
        "finetune/augment": False,
        "head/pooling": "avg",
        "head/dense_layers": 1,
        "head/units": 128,
        "head/dropout": 0.2,
        "head/batch_norm": False,
        "head/optimizer": "adam",
        "head/learning_rate": 1e-3,
    }
    rows = []
    for cached in (False, True):
        hm = tuning.TransferHyperModel(
            args.backbone,
            num_classes=len(zoo.datasets.CLASSES),
            input_shape=(args.image_size,) * 2 + (3,),
            weights=weights,
            cache_features=cached,
        )
        first, later, scores = [], [], []
        for seed in range(args.seeds):
            for trial in range(args.trials):
                hp = kt.HyperParameters()
                for k, v in space.items():
                    hp.Fixed(k, v)
                keras.utils.set_random_seed(seed)
                gradients = custom_gradient_names()
                model = hm.build(hp)
                start = time.perf_counter()
                h = hm.fit(
                    hp, model, x, y, epochs=args.epochs, validation_data=(xv, yv), verbose=0, batch_size=32
                )
                (first if seed == 0 and trial == 0 else later).append(time.perf_counter() - start)
                del model
                release_custom_gradients(gradients)  # each trial's model is freed (TensorFlow)
                if trial == args.trials - 1:
                    scores.append(h.history["val_accuracy"][-1])
        rows.append(("cached" if cached else "naive", first, later, scores))
    print(
        f"{args.backbone} {args.image_size}px, {len(x)} train / {len(xv)} val images, {args.epochs} epochs, "
        f"{args.trials} head-only trials x {args.seeds} seeds per path (keras backend {keras.backend.backend()})"
    )
    print(f"{'path':<8} {'first trial s':>14} {'later trials s':>15}   val acc (mean +- sd over seeds)")
    for name, first, later, scores in rows:
        mean_later = sum(later) / max(1, len(later))
        print(f"{name:<8} {first[0]:>14.2f} {mean_later:>15.2f}   {_spread(scores)}")
    (_, nf, nl, ns), (_, cf, cl, cs) = rows
    gap = max(abs(a - b) for a, b in zip(ns, cs))
    print(
        f"speed-up: {(sum(nf) + sum(nl)) / (sum(cf) + sum(cl)):.1f}x over all trials, "
        f"{(sum(nl) / max(1, len(nl))) / max(1e-9, sum(cl) / max(1, len(cl))):.1f}x per later trial; "
        f"largest val-accuracy gap between the paths on one seed: {gap:.3f}"
    )
    return 0
