"""FCN-8s semantic segmentation on the demo shapes (masks come with the data).

Seven classes per pixel (background + six shapes), a ResNet-18 backbone from
scratch, mean IoU and pixel accuracy from Keras' own metrics.

    python examples/fcn8s_shapes.py             # a few minutes on a 2-core CPU
    python examples/fcn8s_shapes.py --quick     # seconds, for the tests
"""

import argparse
import time

import keras

import zoo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.epochs = 3, 32, 1

    keras.utils.set_random_seed(0)
    num_classes = len(zoo.datasets.CLASSES) + 1  # + background
    x, _, masks = zoo.datasets.shapes(args.per_class, size=args.size, split="train")
    x_test, _, masks_test = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.size, split="test")

    # Per-pixel logits with a from_logits loss: numerically better, and the
    # path that trains on every backend (Keras 3.15's torch backend fails in
    # backward for probabilities on 4D outputs).
    model = zoo.build(
        "fcn8s",
        backbone=args.backbone,
        num_classes=num_classes,
        include_preprocessing=True,
        classifier_activation=None,
    )
    # Cosine decay to zero: the last epochs barely move the weights, so the
    # BatchNorm moving statistics catch up with them (train/test agree).
    steps = args.epochs * -(-len(x) // 16)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=zoo.tasks.fcn.segmentation_metrics(num_classes),
    )
    start = time.time()
    model.fit(x, masks, epochs=args.epochs, batch_size=16, verbose=2)
    seconds = time.time() - start
    result = model.evaluate(x_test, masks_test, verbose=0, return_dict=True)
    print(
        f"test mean IoU {result['mean_iou']:.3f}, pixel accuracy "
        f"{result['pixel_accuracy']:.3f} after {args.epochs} epochs ({seconds:.0f} s)"
    )
    return result


if __name__ == "__main__":
    main()
