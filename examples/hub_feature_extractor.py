"""A TF Hub / SavedModel feature extractor inside a Keras 3 model (TensorFlow backend).

The seeds' transfer-learning chapter wrote
`Sequential([hub.KerasLayer(url, input_shape=(224, 224, 3)), Dense(n)])`, which
Keras 3 rejects. `surgery.hub_layer` is the drop-in replacement:

    # a model downloaded from TF Hub / Kaggle (cached under $TFHUB_CACHE_DIR)
    python examples/hub_feature_extractor.py \\
        --handle https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5 --size 224
    # offline: export a zoo ResNet-18 as a local SavedModel first, then wrap that
    python examples/hub_feature_extractor.py
    python examples/hub_feature_extractor.py --quick      # seconds, for the tests

Hub image models expect floats in [0, 1]; the local export takes 0-255 (its
normalisation is built in): `--scale` picks the input rescaling.
"""

import argparse
import os
import tempfile
import time

import keras

import surgery
import zoo

TF_ONLY = True  # SavedModels run on TensorFlow only


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--handle", default=None, help="hub URL/handle or SavedModel directory (default: export one)"
    )
    parser.add_argument(
        "--sha256",
        default=None,
        help="pin the model: refuse a download whose surgery.hub.saved_model_sha256 differs",
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="input rescaling (default 1/255 for hub handles, 1 for the local export)",
    )
    parser.add_argument("--fine-tune", action="store_true", help="train the extractor too")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.epochs = 4, 32, 1

    handle = args.handle
    if handle is None:
        # What a hub publisher does: write a feature extractor as a reusable
        # SavedModel (`__call__(x, training)`, variables, signatures).
        base = zoo.build(
            "resnet18",
            include_top=False,
            pooling="avg",
            include_preprocessing=True,
            input_shape=(None, None, 3),
        )
        handle = surgery.export_feature_extractor(
            base, os.path.join(tempfile.mkdtemp(), "resnet18_feature_vector")
        )
        print(f"exported a zoo resnet18 feature extractor to {handle}")
    scale = args.scale if args.scale is not None else (1.0 if args.handle is None else 1 / 255)

    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.size, split="train")
    xv, yv, _ = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.size, split="val")
    model = keras.Sequential(
        [
            keras.Input((args.size, args.size, 3)),
            keras.layers.Rescaling(scale),
            surgery.hub_layer(handle, trainable=args.fine_tune, sha256=args.sha256, name="feature_extractor"),
            keras.layers.Dense(len(zoo.datasets.CLASSES), activation="softmax"),
        ]
    )
    model.summary()
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.time()
    history = model.fit(x, y, epochs=args.epochs, batch_size=32, validation_data=(xv, yv), verbose=2)
    path = os.path.join(tempfile.mkdtemp(), "hub_classifier.keras")
    model.save(path)
    back = keras.saving.load_model(path, safe_mode=False)  # re-resolves the handle
    print(
        f"val accuracy {history.history['val_accuracy'][-1]:.3f} in {time.time() - start:.0f} s; "
        f"saved {path} and loaded it back ({back.count_params():,} parameters)"
    )
    return history.history["val_accuracy"][-1]


if __name__ == "__main__":
    main()
