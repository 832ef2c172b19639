"""GoogLeNet with its two auxiliary classifiers, trained from one label.

The training model has outputs `main`, `aux1`, `aux2`; one `compile` with one
loss trains all three (main + 0.3 * aux1 + 0.3 * aux2, as in the paper), and
`zoo.strip_auxiliary` gives the single-output model for inference.

    python examples/googlenet_aux.py            # about 3 minutes on a 2-core CPU
    python examples/googlenet_aux.py --quick    # seconds, for the tests
"""

import argparse
import time

import keras

import zoo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.epochs = 4, 48, 1

    keras.utils.set_random_seed(0)
    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.size, split="train")
    x_test, y_test, _ = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.size, split="test")

    model = zoo.build(
        "googlenet",
        num_classes=len(zoo.datasets.CLASSES),
        aux_logits=True,
        input_shape=(args.size, args.size, 3),
        include_preprocessing=True,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    start = time.time()
    history = model.fit(x, y, epochs=args.epochs, batch_size=32, validation_split=0.1, verbose=2)
    print(
        "loss = main + 0.3 * (aux1 + aux2); last epoch:",
        {k: round(v[-1], 4) for k, v in history.history.items() if k.endswith("loss")},
    )

    inference = zoo.strip_auxiliary(model)
    inference.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy")
    _, accuracy = inference.evaluate(x_test, y_test, verbose=0)
    print(
        f"test accuracy of the stripped model: {accuracy:.3f} "
        f"({len(inference.outputs)} output, trained in {time.time() - start:.0f} s)"
    )
    return accuracy


if __name__ == "__main__":
    main()
