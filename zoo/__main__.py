"""`python -m zoo`: a short demo; `python -m zoo bench`: throughput table.

python -m zoo                      # list models, build one, print its card
python -m zoo list 'resnet*'
python -m zoo info resnet50
python -m zoo bench --models resnet50,vgg16 --batch 16 --steps 10
python -m zoo bench --precision bf16 --torch on   # + torchvision eager / torch.compile
"""

from __future__ import annotations

import argparse
import sys


def _demo(args):
    import numpy as np

    import zoo

    print(f"{len(zoo.list_models())} models: {', '.join(zoo.list_models())}\n")
    name = args.model
    model = zoo.build(name, num_classes=6, input_shape=(64, 64, 3), include_preprocessing=True)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype="uint8")
    probs = np.asarray(model.predict(images, verbose=0))
    print(
        f"built {name}: {len(model.layers)} layers, {model.count_params():,} parameters, "
        f"input {model.input_shape} -> output {model.output_shape}"
    )
    print("class probabilities of a random uint8 image: " + " ".join(f"{p:.3f}" for p in probs[0]) + "\n")
    print(zoo.info(name))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m zoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="list models, build one, print its card (the default)")
    demo.add_argument("--model", default="resnet18", help="model to build (default: resnet18)")
    lst = sub.add_parser("list", help="list registered models")
    lst.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. 'resnet*'")
    inf = sub.add_parser("info", help="print a model card")
    inf.add_argument("name")
    bench = sub.add_parser(
        "bench",
        help="zoo vs keras.applications throughput, side by side",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--models", default="resnet50,vgg16,googlenet", help="comma-separated names")
    bench.add_argument("--batch", type=int, default=16, help="images per step")
    bench.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    bench.add_argument("--size", type=int, default=224, help="input resolution")
    bench.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (median)")
    bench.add_argument("--json", dest="json_path", help="also write the rows as JSON here")
    bench.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: mixed_bfloat16 on every side"
    )
    bench.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s at this precision, for MFU "
        "(e.g. 989 for an H100 SXM in bf16; none: no MFU column)",
    )
    bench.add_argument(
        "--jit-compile",
        default="auto",
        choices=["auto", "true", "false"],
        help="the zoo side's compile(jit_compile=...); auto is Keras' choice",
    )
    bench.add_argument(
        "--torch",
        default="auto",
        choices=["auto", "on", "off"],
        help="torch columns: the zoo model on the Keras torch backend, torchvision eager and "
        "torch.compile; auto: those that import",
    )
    bench.add_argument(
        "--sides",
        default=None,
        help="only these sides, comma-separated: zoo,keras,ceiling,torch,compiled,"
        "input_u8,input_f32 (one per process gives each its own peak memory; none: all)",
    )
    args = parser.parse_args(argv)
    if args.command == "bench":
        import os

        # JAX would otherwise take 75% of a GPU at start: torch (the
        # torchvision columns) needs its share, and peak memory its meaning.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import zoo

    if args.command in (None, "demo"):
        if args.command is None:
            args.model = "resnet18"
        _demo(args)
    elif args.command == "list":
        names = zoo.list_models(args.pattern)
        width = max((len(n) for n in names), default=0) + 1
        for name in names:
            print(f"{name:<{width}} {zoo.get_spec(name).description}")
    elif args.command == "info":
        print(zoo.info(args.name))
    elif args.command == "bench":
        from zoo import _bench as bench_mod

        names = [zoo.get_spec(n).name for n in args.models.split(",") if n]
        bench_mod.main(
            names,
            batch=args.batch,
            steps=args.steps,
            size=args.size,
            repeats=args.repeats,
            json_path=args.json_path,
            precision=args.precision,
            peak_tflops=args.peak_tflops,
            jit_compile={"auto": "auto", "true": True, "false": False}[args.jit_compile],
            torch={"auto": None, "on": True, "off": False}[args.torch],
            sides=args.sides.split(",") if args.sides else None,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
