"""FCN-8s on every staged classification backbone: build, one forward pass, one line each.

    python scripts/check_fcn_backbones.py                 # all of `zoo.list_models()`
    python scripts/check_fcn_backbones.py resnet18 xception

CI builds one backbone per family and layout (`tests/zoo/test_fcn.py`: the
members of a family share their body code); this is the full sweep (about
4 minutes on a 2-core CPU), for the closing note of a change to `zoo.tasks.fcn`
or to a family. Each backbone is built at its smallest multiple of 32 from
64 px (NASNet at its fixed default size), with an odd width so the padding
and crops are exercised, and must give a `(1, H, W, 3)` score map. Exits 1
when any fails.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
    import keras
    import numpy as np

    import zoo

    names = list(argv if argv is not None else sys.argv[1:]) or zoo.list_models(task="classification")
    failed = []
    for name in names:
        start = time.perf_counter()
        spec = zoo.get_spec(name)
        side = max(64, -(-spec.min_size // 32) * 32)
        try:
            shape = None if spec.hooks.static_input else (side, side + 32, 3)
            model = zoo.build("fcn8s", backbone=name, num_classes=3, input_shape=shape)
            h, w = (d or side for d in model.input_shape[1:3])
            y = keras.ops.convert_to_numpy(model(np.zeros((1, h, w, 3), "float32")))
            ok = y.shape == (1, h, w, 3)
            print(
                f"{name}: {'ok' if ok else 'WRONG SHAPE'} {h}x{w} -> {y.shape} ({time.perf_counter() - start:.1f} s)"
            )
            if not ok:
                failed.append(name)
        except Exception as e:  # the sweep reports every failure and goes on
            print(f"{name}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            failed.append(name)
        keras.backend.clear_session()
    print(
        f"{len(names) - len(failed)}/{len(names)} backbones build as FCN-8s"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
