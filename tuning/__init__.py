"""tuning: KerasTuner searches over transfer-learning heads and unfreeze depth.

Composes `zoo` (backbones, stage metadata) and `surgery` (graft, freeze)
with KerasTuner; adds RAdam, a warm-up cosine schedule, a learning-rate
logger, cached features for frozen trials, a best-model keeper and a
leaderboard.

>>> import tuning
>>> sorted(tuning.TUNERS)
['bayesian', 'hyperband', 'random']
"""

from tuning import losses
from tuning.hypermodel import TransferHyperModel, augmentation_layers
from tuning.optimizers import LearningRateLogger, RAdam, warmup_cosine
from tuning.search import TUNERS, SearchResult, format_leaderboard, load_best, make_tuner, search

__all__ = [
    "LearningRateLogger", "RAdam", "SearchResult", "TUNERS", "TransferHyperModel",
    "augmentation_layers", "format_leaderboard", "load_best", "losses", "make_tuner", "search", "warmup_cosine",
]
