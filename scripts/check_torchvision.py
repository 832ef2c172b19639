"""Compare every torchvision-layout zoo model with torchvision itself, on the same weights.

For each model: a torchvision network with He-initialised weights and real
BatchNorm statistics (one calibration pass), its state dict saved to a
`.pth` file, `zoo.build(name, weights=that file)` (the real loading path),
and the logits of both on the same images. The check only counts when it
can fail. The reference runs in float64; zoo (float32) must be within 3x
torchvision's own float32 error (deep random networks amplify round-off:
about 1e-3 for ResNet-152), the reference logits must differ between images
by 100 times the tolerance, and the
same comparison on a corrupted state dict (two output channels of the first
convolution swapped) must miss by 100 times that too.

Needs torch and torchvision, which CI does not install (a large download).
On a CPU machine:

    pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu
    KERAS_BACKEND=jax python scripts/check_torchvision.py            # every model
    KERAS_BACKEND=jax python scripts/check_torchvision.py resnet18   # some

torchvision is imported before Keras: importing it after TensorFlow
segfaults, so the TensorFlow backend works too. Exit status 0 when every
model matches, 1 otherwise.
"""

import copy
import os
import sys
import tempfile

try:  # before keras/TensorFlow, see above
    import torch
    import torchvision
except ImportError:  # pragma: no cover - reported in main()
    torch = torchvision = None

import numpy as np  # noqa: E402

# zoo name -> (torchvision constructor, its keyword arguments)
MODELS = {
    "resnet18": ("resnet18", {}),
    "resnet34": ("resnet34", {}),
    "resnet50_tv": ("resnet50", {}),
    "resnet101_tv": ("resnet101", {}),
    "resnet152_tv": ("resnet152", {}),
    **{f"vgg{d}{bn}": (f"vgg{d}{bn}", {}) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "googlenet": ("googlenet", {"aux_logits": False, "transform_input": False, "init_weights": False}),
}
TOLERANCE = 1e-5  # at least; else 3x torchvision's own float32 error against float64


def reference(name, seed=0):
    constructor, kwargs = MODELS[name]
    torch.manual_seed(seed)
    net = getattr(torchvision.models, constructor)(weights=None, **kwargs)
    for m in net.modules():  # He init: the signal reaches the logits
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.uniform_(m.bias, -0.1, 0.1)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    net.train()
    with torch.no_grad():  # real statistics: normalised activations, input-dependent logits
        net(torch.rand(8, 3, 224, 224) * 4 - 2)
    return net.eval()


def compare(name, state_dict, net, x, folder, tag):
    import keras

    import zoo

    path = os.path.join(folder, f"{name}-{tag}.pth")
    torch.save(state_dict, path)
    model = zoo.build(name, weights=path, classifier_activation=None, input_shape=x.shape[1:])
    ours = keras.ops.convert_to_numpy(model(x, training=False))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():  # float64: torchvision's own float32 round-off is measured, not assumed
        ref = copy.deepcopy(net).double()(xt.double()).numpy()
        noise = float(np.abs(net(xt).numpy() - ref).max())
    spread = float(np.abs(ref[0] - ref[1]).max())
    return float(np.abs(ours - ref).max()), spread, noise


def main(names) -> int:
    if torchvision is None:
        print("torch and torchvision are needed for this check (see the docstring); skipped.")
        return 0
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {sorted(MODELS)}")
        return 2
    failed = []
    x = np.random.default_rng(0).uniform(-2, 2, (2, 224, 224, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        for name in names or MODELS:
            net = reference(name)
            sd = {k: v.clone() for k, v in net.state_dict().items()}
            diff, spread, noise = compare(name, sd, net, x, folder, "ok")
            first = next(k for k, v in sd.items() if k.endswith("weight") and v.ndim == 4)
            bad = dict(sd)
            bad[first] = sd[first][[1, 0, *range(2, sd[first].shape[0])]]
            bad_diff, _, _ = compare(name, bad, net, x, folder, "corrupt")
            tolerance = max(3 * noise, TOLERANCE)
            # It bites: the logits depend on the image far beyond the
            # tolerance, and wrong weights are caught.
            ok = diff <= tolerance and spread > 100 * tolerance and bad_diff > 100 * tolerance
            print(
                f"{name:14s} max |zoo - torchvision fp64| {diff:.2e} (torchvision fp32: {noise:.2e})  "
                f"spread between images {spread:.2e}  corrupted weights {bad_diff:.2e}  "
                f"{'OK' if ok else 'MISMATCH'}",
                flush=True,
            )
            if not ok:
                failed.append(name)
    print("OK" if not failed else f"MISMATCH: {failed}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
