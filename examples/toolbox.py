"""The seeds' toolbox, the Keras 3 way: Mish, RAdam, warm-up + cosine, an LR logger, F1, model averaging.

Two small ResNet-18s with Mish activations (`zoo.build(..., activation="mish")`,
Keras' own `keras.activations.mish`) are trained with `tuning.RAdam` under a
warm-up + cosine schedule (`tuning.warmup_cosine`, Keras' `CosineDecay`), the
learning rate logged each epoch (`tuning.LearningRateLogger`), precision,
recall and F1 from `keras.metrics`; then `zoo.ensemble` averages them into
one model that is saved and loaded like any other.

    python examples/toolbox.py            # a few minutes on a 2-core CPU
    python examples/toolbox.py --quick    # seconds, for the tests
"""

import argparse
import os
import tempfile

import keras
import numpy as np

import tuning
import zoo


def train_member(seed, x, y, xv, yv, args):
    keras.utils.set_random_seed(seed)
    model = zoo.build(
        "resnet18",
        num_classes=len(zoo.datasets.CLASSES),
        activation="mish",
        input_shape=x.shape[1:],
        include_preprocessing=True,
    )
    steps = int(np.ceil(len(x) / 32)) * args.epochs
    model.compile(
        optimizer=tuning.RAdam(tuning.warmup_cosine(2e-3, total_steps=steps, warmup_steps=steps // 10)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        x,
        y,
        batch_size=32,
        epochs=args.epochs,
        validation_data=(xv, yv),
        callbacks=[tuning.LearningRateLogger()],
        verbose=2,
    )
    print(f"member{seed}: learning rate per epoch {[f'{v:.1e}' for v in history.history['lr']]}")
    return model


def scores(model, x, y, classes):
    """Accuracy and macro precision/recall/F1 with Keras metrics."""
    probs = model.predict(x, verbose=0)
    onehot = keras.ops.one_hot(y, classes)
    f1 = keras.metrics.F1Score(average="macro")
    f1.update_state(onehot, probs)
    pred = keras.ops.one_hot(np.argmax(probs, -1), classes)
    precision, recall = keras.metrics.Precision(), keras.metrics.Recall()
    precision.update_state(onehot, pred)
    recall.update_state(onehot, pred)
    return {
        "accuracy": float(np.mean(np.argmax(probs, -1) == y)),
        "precision": float(precision.result()),
        "recall": float(recall.result()),
        "f1_macro": float(f1.result()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.epochs = 4, 32, 1

    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.size, split="train")
    xv, yv, _ = zoo.datasets.shapes(max(2, args.per_class // 5), size=args.size, split="val")
    xt, yt, _ = zoo.datasets.shapes(max(2, args.per_class // 5), size=args.size, split="test")
    classes = len(zoo.datasets.CLASSES)
    members = [train_member(seed, x, y, xv, yv, args) for seed in (1, 2)]
    averaged = zoo.ensemble(members, mode="mean")
    for label, m in (("member 1", members[0]), ("member 2", members[1]), ("ensemble", averaged)):
        print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores(m, xt, yt, classes).items()))

    path = os.path.join(tempfile.mkdtemp(), "ensemble.keras")
    averaged.save(path)
    reloaded = keras.saving.load_model(path)
    same = np.allclose(reloaded.predict(xt, verbose=0), averaged.predict(xt, verbose=0), atol=1e-5)
    print(f"saved and reloaded {path}: identical predictions: {same}")
    return same


if __name__ == "__main__":
    main()
