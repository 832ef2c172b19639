"""Search classifier heads and unfreeze depth with KerasTuner, then reload the best.

`tuning.search` runs a KerasTuner search over `tuning.TransferHyperModel`'s
space: pooling, dense layers, dropout, optimiser and learning rate of the
head, and how many of the backbone's stages to unfreeze. Trials whose
backbone stays frozen train on cached features (computed once), so they
take seconds. Run it twice: the second run resumes and repeats nothing.

    python examples/tuner_search.py             # a few minutes on a 2-core CPU
    python examples/tuner_search.py --quick     # seconds, for the tests
"""

import argparse
import os
import tempfile
import time

import tuning
import zoo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--directory", default=os.path.join(tempfile.gettempdir(), "tuner_search"))
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.size, args.trials, args.epochs = 3, 32, 2, 1
        args.directory = tempfile.mkdtemp()

    train = zoo.datasets.shapes(args.per_class, size=args.size, split="train")[:2]
    val = zoo.datasets.shapes(max(2, args.per_class // 3), size=args.size, split="val")[:2]
    start = time.time()
    result = tuning.search(
        train,
        val,
        backbone=args.backbone,
        tuner="random",
        max_trials=args.trials,
        epochs=args.epochs,
        directory=args.directory,
        project_name="shapes",
        # Mostly frozen trials (cached features), some unfreezing the last stage.
        unfreeze_space={"stages": [0, 0, 1], "augment": [False]},
        print_trials=True,
    )
    print(f"\n{len(result.leaderboard)} trials in {time.time() - start:.0f} s; leaderboard:")
    print(tuning.format_leaderboard(result.leaderboard, limit=5))
    print("best hyperparameters:", result.hyperparameters)
    again = tuning.load_best(args.directory, "shapes")
    print(f"reloaded from {again.directory}: score {again.score:.4f}")
    return result.score


if __name__ == "__main__":
    main()
