"""Fine-tune VGG16 the seeds' way: train a new head, then unfreeze the last block.

The book's recipe, with the zoo's VGG16 and one `surgery` call per step:

1. `conv_base = zoo.build("vgg16", include_top=False, weights=...)` in a
   `Sequential` with a new classifier on top, the base frozen
   (`surgery.freeze(conv_base)`);
2. train the head;
3. `surgery.freeze_until(conv_base, -4)`: the same layers as
   `for layer in conv_base.layers[:-4]: layer.trainable = False`, i.e.
   block5_conv1..3 and block5_pool train, the rest stays frozen; recompile
   with a 10x lower learning rate and continue.

    python examples/vgg16_freeze_until.py                       # random init, offline
    python examples/vgg16_freeze_until.py --weights imagenet    # the real recipe (downloads 58 MB)
    python examples/vgg16_freeze_until.py --quick               # seconds, for the tests

With random weights (the offline default) the frozen base is a random
feature extractor, so expect modest accuracy: the point is the mechanics.
With `--weights imagenet` this is transfer learning as the book teaches it.
"""

import argparse
import time

import keras

import surgery
import zoo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="None (random), 'imagenet' or a path")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per phase")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.epochs = 4, 32, 1

    keras.utils.set_random_seed(0)
    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.size, split="train")
    xv, yv, _ = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.size, split="val")

    conv_base = zoo.build(
        "vgg16",
        include_top=False,
        weights=args.weights,
        input_shape=(args.size, args.size, 3),
        include_preprocessing=True,
    )
    # The book's model: the convolutional base nested in a Sequential, a new
    # classifier on top.
    model = keras.Sequential(
        [
            conv_base,
            keras.layers.Flatten(),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(len(zoo.datasets.CLASSES), activation="softmax"),
        ],
        name="vgg16_transfer",
    )

    print("phase 1, head only:", surgery.freeze(conv_base))
    model.compile(keras.optimizers.RMSprop(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.time()
    model.fit(x, y, epochs=args.epochs, batch_size=32, validation_data=(xv, yv), verbose=2)

    print("phase 2, block5 too:", surgery.freeze_until(conv_base, -4))
    print("trainable in conv_base:", [l.name for l in conv_base.layers if l.trainable and l.weights])
    model.compile(keras.optimizers.RMSprop(1e-5), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=args.epochs, batch_size=32, validation_data=(xv, yv), verbose=2)
    accuracy = history.history["val_accuracy"][-1]
    print(f"val accuracy after fine-tuning block5: {accuracy:.3f} ({time.time() - start:.0f} s)")
    return accuracy


if __name__ == "__main__":
    main()
