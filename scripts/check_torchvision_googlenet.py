"""Compare zoo's GoogLeNet with torchvision.models.googlenet on the same random weights.

Needs torch and torchvision (the GPU machine has both; there is no CPU build
of torchvision on the dev machines, where tests/zoo/test_googlenet.py checks a
plain-torch copy of the architecture instead). Runs on any Keras backend:

    KERAS_BACKEND=jax python scripts/check_torchvision_googlenet.py
"""

import sys

import keras
import numpy as np

import zoo


def main() -> int:
    try:
        import torch
        import torchvision
    except ImportError:
        print("torch and torchvision are needed for this check; skipped.")
        return 0
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True,
                                       transform_input=False).eval()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    worst = 0.0
    for size in (224, 199):
        model = zoo.build("googlenet", aux_logits=True, classifier_activation=None,
                          input_shape=(size, size, 3))
        zoo.weights.load_weights(model, zoo.googlenet.from_torchvision(sd))
        x = np.random.default_rng(size).standard_normal((4, size, size, 3)).astype("float32")
        with torch.no_grad():
            ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        ours = keras.ops.convert_to_numpy(model(x, training=False)["main"])
        diff = float(np.abs(ours - ref).max())
        worst = max(worst, diff)
        print(f"googlenet {size}x{size}: max |zoo - torchvision| = {diff:.2e}")
    print("OK" if worst < 1e-4 else "MISMATCH")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
