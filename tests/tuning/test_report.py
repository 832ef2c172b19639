"""report.trials_figure: only what varied, numeric axes, sorted categories, true/false."""

import pytest

from tuning import report
from tuning.tuners import format_leaderboard


@pytest.mark.one_backend  # matplotlib only
def test_trials_figure_shows_what_varied_readably():
    rows = [
        {
            "trial_id": "0",
            "score": 0.5,
            "backbone": "resnet18",
            "head/learning_rate": 1e-4,
            "head/optimizer": "sgd",
            "finetune/augment": True,
            "head/pooling": "avg",
        },
        {
            "trial_id": "1",
            "score": 0.7,
            "backbone": "mobilenetv3small",
            "head/learning_rate": 3e-3,
            "head/optimizer": "adam",
            "finetune/augment": False,
            "head/pooling": "avg",
        },
    ]
    fig = report.trials_figure(rows)
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in shown] == [
        "backbone",
        "head/learning_rate",
        "head/optimizer",
        "finetune/augment",
    ]  # head/pooling was fixed
    by = {ax.get_title(): ax for ax in shown}
    assert by["head/learning_rate"].get_xscale() == "log"
    assert [t.get_text() for t in by["finetune/augment"].get_xticklabels()] == ["false", "true"]
    assert [t.get_text() for t in by["backbone"].get_xticklabels()] == ["mobilenetv3small", "resnet18"]
    single = report.trials_figure(rows[:1])
    assert "no hyperparameter varied" in single.axes[0].get_title()
    assert "true" in format_leaderboard(rows) and "True" not in format_leaderboard(rows)
