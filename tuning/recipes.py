"""The main job's two recipes, named: how a backbone is searched and trained.

`python -m tuning run` uses `from_scratch` without `--weights` and
`pretrained` with them. Each is a function returning a complete
`SearchConfig`; `resolve(config)` fills the recipe settings a config leaves
as None. Every setting below says why it has its value.
"""

from __future__ import annotations

from typing import Any

from tuning.config import SearchConfig

# From random weights there is nothing to protect.
FROM_SCRATCH = {
    # One small head: the backbone learns the features, the head only reads them out.
    "head_space": {
        "pooling": ["avg"],
        "optimizer": ["adam"],
        "dense_layers": [0, 1],
        "dropout": [0.0, 0.3],
        "learning_rate": [1e-3, 2e-3],
    },
    # Every stage trains at the full rate from the first epoch (a frozen
    # random backbone or a 100x smaller phase-2 rate only wastes the
    # budget); BatchNorm trains too (frozen at its initial statistics it
    # would normalise nothing); augmentation is what closes the gap between
    # train and test accuracy on a few hundred images per class.
    "unfreeze_space": {"stages": "all", "augment": [True], "lr_factor": [1.0], "train_bn": [True]},
    # Flips and rotations are what a from-scratch network cannot learn from a
    # few hundred images; zoom and translation mostly slow it down.
    "augmentation": ("flip", "rotation"),
    # A cosine schedule ends on its best epochs: no early stop.
    "schedule": "cosine",
    "patience": 0,
    "phase1_fraction": 0.0,
    # Segmentation (task="segment"): FCN-8s (the finest skips: small shapes
    # need stride-8 detail), every stage training, Adam at 3e-3 (on the demo,
    # 12 epochs: 0.94 validation mean IoU with Dice, 0.87 at 1e-3 without),
    # cross-entropy with and without soft Dice.
    "segment_space": {
        "variant": ["fcn8s"],
        "unfreeze_stages": [None],
        "learning_rate": [3e-3],
        "loss": ["ce+dice", "ce"],
    },
}

# From pretrained weights the features are worth keeping.
PRETRAINED = {
    # The full head space (pooling, depth, width, dropout, BN, smoothing, rate, optimizer).
    "head_space": {},
    # Frozen to every stage unfrozen, at 0.1x or 0.01x the head's rate, BN frozen.
    "unfreeze_space": {},
    # All four kinds for augmented trials: pretrained features generalise further.
    "augmentation": ("flip", "rotation", "zoom", "translation"),
    "schedule": "cosine",
    # Early stopping after 3 epochs without improvement (best epoch kept).
    "patience": 3,
    # Chollet's recipe: half the epochs for the head alone, then fine-tuning.
    "phase1_fraction": 0.5,
    # Segmentation: FCN-8s or -16s; the last two stages or everything trains, at lower rates.
    "segment_space": {
        "variant": ["fcn8s", "fcn16s"],
        "unfreeze_stages": [2, None],
        "learning_rate": [3e-4, 1e-3],
        "loss": ["ce", "ce+dice"],
    },
}


# Multi-label runs. Both recipes: flips only. Rotations, zooms and shifts
# move objects near the border out of the frame while their labels stay: on
# the multi-label demo (12 epochs, from scratch) a trial with flips and
# rotations reached 0.86 validation mAP, the same trial without them 0.99.
MULTILABEL = {"augmentation": ("flip",)}
# From scratch: no hidden layer, binary cross-entropy, 2e-3 to 4e-3. On the
# demo (12 epochs, flips) BCE at 3e-3 straight from the pooled features
# reached 0.974 validation mAP; with a 64-unit hidden layer and dropout 0.2
# the same trial stood at 0.52 after 4 epochs (0.72 without), and asymmetric
# loss at 1e-3 at 0.52 after 5. The pretrained recipe searches the head and
# the loss (`DEFAULT_HEAD_SPACE`: BCE or asymmetric).
MULTILABEL_FROM_SCRATCH_HEAD = {
    "dense_layers": [0, 0],
    "dropout": [0.0, 0.0],
    "loss": ["bce"],
    "learning_rate": [2e-3, 4e-3],
}


def from_scratch(**settings: Any) -> SearchConfig:
    """The recipe for a backbone trained from random weights.

    Example:

        >>> import tuning
        >>> c = tuning.recipes.from_scratch(backbone="resnet18")
        >>> c.recipe, c.unfreeze_space["stages"], c.patience
        ('from_scratch', [5], 0)
    """
    return resolve(SearchConfig(**{**settings, "recipe": "from_scratch"}))


def pretrained(**settings: Any) -> SearchConfig:
    """The recipe for a pretrained backbone (give `weights`, e.g. "imagenet").

    Example:

        >>> import tuning
        >>> tuning.recipes.pretrained(weights="imagenet").phase1_fraction
        0.5
    """
    return resolve(SearchConfig(**{"weights": "imagenet", **settings, "recipe": "pretrained"}))


def name_of(config: SearchConfig) -> str:
    """The recipe a config uses: its own, or for "auto" the one its weights imply.

    Example:

        >>> import tuning
        >>> tuning.recipes.name_of(tuning.SearchConfig(weights="imagenet"))
        'pretrained'
    """
    if config.recipe != "auto":
        return config.recipe
    return "pretrained" if config.weights is not None else "from_scratch"


def resolve(config: SearchConfig) -> SearchConfig:
    """`config` with every recipe setting it leaves as None filled from its recipe.

    Example:

        >>> import tuning
        >>> tuning.recipes.resolve(tuning.SearchConfig(patience=5)).patience
        5
    """
    import zoo

    name = name_of(config)
    recipe = FROM_SCRATCH if name == "from_scratch" else PRETRAINED
    changes = {"recipe": name}
    if config.task == "multilabel":
        recipe = {**recipe, **MULTILABEL}
        if name == "from_scratch":
            recipe["head_space"] = {**recipe["head_space"], **MULTILABEL_FROM_SCRATCH_HEAD}
    for key, value in recipe.items():
        if key == "segment_space":
            if config.task == "segment":  # the keys a config leaves out come from the recipe
                changes[key] = {**value, **(config.segment_space or {})}
            continue  # a classification run.json keeps the settings it always had
        if getattr(config, key) is None:
            changes[key] = value
    unfreeze = dict(changes.get("unfreeze_space", config.unfreeze_space) or {})
    if unfreeze.get("stages") == "all":  # every stage of the deepest backbone
        unfreeze["stages"] = [max(len(zoo.get_spec(n).stages) for n in config.backbone)]
        changes["unfreeze_space"] = unfreeze
    return config.replace(**changes)
