"""Prune ResNet-18 on the demo data: train, delete channels, fine-tune, compare.

1. Train `zoo.build("resnet18")` on the demo shapes, from random
   initialisation (offline).
2. `surgery.prune(model, amount, layers=...)`: the chosen channel groups
   lose the filters with the smallest L1 norm (or the most zeros after the
   ReLU with `--criterion apoz`), in one rewrite. By default, as in Li et
   al. 2017 ("Pruning Filters for Efficient ConvNets"), the first
   convolution of every residual block: its filters and the next
   convolution's input channels go, the residual stream keeps its width.
   `--layers all` prunes every group, the residual streams included (each
   stream once, for all the layers that add into it).
   `surgery.size_report` says what changed.
3. Fine-tune the pruned model briefly at a lower learning rate.

Printed at the end: parameters, GMACs, CPU inference images/s and test
accuracy before pruning, right after, and after the fine-tune.

    python examples/prune_resnet18.py                 # a few minutes on a 2-core CPU
    python examples/prune_resnet18.py --layers all --amount 0.3 --criterion apoz
    python examples/prune_resnet18.py --quick         # seconds, for the tests
"""

import argparse
import time

import keras

import surgery
import zoo


def images_per_second(model, x, *, batch=64, repeats=3):
    """Best of `repeats` timed `predict` passes over `x` (after a warm-up)."""
    batch = min(batch, len(x))
    x = x[: len(x) // batch * batch]  # whole batches: one traced shape
    model.predict(x[:batch], batch_size=batch, verbose=0)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(x, batch_size=batch, verbose=0)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def measure(model, x_test, y_test, *, repeats=3):
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, accuracy = model.evaluate(x_test, y_test, batch_size=64, verbose=0)
    return {
        "params": model.count_params(),
        "gmacs": zoo.count_macs(model) / 1e9,
        "img/s": images_per_second(model, x_test, repeats=repeats),
        "test acc": accuracy,
    }


def train(model, x, y, xv, yv, *, epochs, learning_rate):
    """Adam with a cosine decay to 0 over the epochs, so each phase ends converged."""
    steps = epochs * -(-len(x) // 32)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, validation_data=(xv, yv), verbose=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300, help="training images per class")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of the first training")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="epochs after pruning")
    parser.add_argument(
        "--amount", type=float, default=0.5, help="fraction of each group's channels to delete"
    )
    parser.add_argument(
        "--layers",
        default="conv*_block*_1_conv",
        help="layers whose channel groups are pruned (glob), or 'all' (default: %(default)s)",
    )
    parser.add_argument("--criterion", default="l1", choices=("l1", "apoz"))
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.epochs, args.finetune_epochs = 4, 32, 1, 1

    keras.utils.set_random_seed(0)
    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.size, split="train")
    xv, yv, _ = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.size, split="val")
    xt, yt, _ = zoo.datasets.shapes(max(2, args.per_class // 2), size=args.size, split="test")
    classes = len(zoo.datasets.CLASSES)

    model = zoo.build(
        "resnet18", num_classes=classes, input_shape=(args.size,) * 2 + (3,), include_preprocessing=True
    )
    train(model, x, y, xv, yv, epochs=args.epochs, learning_rate=1e-3)
    repeats = 1 if args.quick else 3
    rows = {"trained": measure(model, xt, yt, repeats=repeats)}

    start = time.perf_counter()
    data = x[: 16 * classes] if args.criterion == "apoz" else None
    layers = None if args.layers == "all" else args.layers
    pruned = surgery.prune(model, args.amount, criterion=args.criterion, data=data, layers=layers)
    print(f"pruned in {time.perf_counter() - start:.1f} s")
    report = surgery.size_report(model, pruned)
    print(report)
    before, after = (surgery.trainable_summary(m, by="stage") for m in (model, pruned))
    print(f"{'stage':<8}{'trainable before':>18}{'after':>12}")
    for (stage, _, a, _), (_, _, b, _) in zip(before.rows, after.rows):
        print(f"{stage:<8}{a:>18,}{b:>12,}")
    rows["pruned"] = measure(pruned, xt, yt, repeats=repeats)

    train(pruned, x, y, xv, yv, epochs=args.finetune_epochs, learning_rate=2e-4)
    rows["fine-tuned"] = measure(pruned, xt, yt, repeats=repeats)

    print(
        f"\nresnet18, demo data {args.size}px, prune {args.amount} of {args.layers} ({args.criterion}), "
        f"backend {keras.backend.backend()}"
    )
    print(f"{'':<12}{'params':>12}{'GMACs':>9}{'img/s':>9}{'test acc':>10}")
    for name, r in rows.items():
        print(f"{name:<12}{r['params']:>12,}{r['gmacs']:>9.3f}{r['img/s']:>9.0f}{r['test acc']:>10.3f}")
    base, final = rows["trained"], rows["fine-tuned"]
    print(
        f"MACs {100 * (1 - final['gmacs'] / base['gmacs']):.1f}% fewer, "
        f"{final['img/s'] / base['img/s']:.2f}x the images/s, "
        f"test accuracy {100 * (final['test acc'] - base['test acc']):+.1f} points"
    )
    return rows


if __name__ == "__main__":
    main()
