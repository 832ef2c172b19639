"""Parameter restoration with a report: `surgery.restore`.

Reading and matching are the zoo's (`zoo.weights`): one reader for every
format in the toolkit. This module adds the report and the strict mode.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from zoo import weights as zw


@dataclasses.dataclass
class RestoreReport:
    """What `restore` loaded, and what it could not.

    Attributes:
        loaded: layer names that received weights.
        missing: layers with weights in the model but not in the source.
        unexpected: source entries no model layer took.
        mismatched: `(layer, model shapes, source shapes)` triples.
        match: the matching rule used.
    """

    loaded: list
    missing: list
    unexpected: list
    mismatched: list
    match: str

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self):
        rows = [
            ("loaded", self.loaded),
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched", [f"{n} {m}≠{s}" for n, m, s in self.mismatched]),
        ]
        lines = [f"restore (matched by {self.match})", f"{'status':<17} {'count':>5}  layers"]
        for status, items in rows:
            shown = ", ".join(map(str, items[:6])) + (f", … (+{len(items) - 6})" if len(items) > 6 else "")
            lines.append(f"{status:<17} {len(items):>5}  {shown}")
        return "\n".join(lines)


def restore(
    model: keras.Model, source: keras.Model | str | os.PathLike, *, match: str = "auto", strict: bool = False
) -> RestoreReport:
    """Load what fits from `source` into `model`, and report the rest.

    Validation happens before any assignment: with `strict=True`, anything
    missing, unexpected or mismatched raises and the model's weights stay
    exactly as they were; otherwise every matched, shape-checked layer is
    loaded and the report lists the rest (a new head shows up as missing).

    Args:
        model: keras.Model.
        source: `.weights.h5`, legacy `.h5` (keras.applications files),
            `.keras`, `.npz`, another model, or a dict `"<layer>/<i>" -> array`.
        match: str. `"auto"`, `"name"`, `"path"` (Keras 3 storage order),
            `"order"` or `"shape"`; see `zoo.weights.plan_assignment`.
        strict: bool. Raise unless the source and model fit exactly.

    Example:

        >>> import keras, zoo, surgery
        >>> base = zoo.build("resnet18", include_top=False, input_shape=(32, 32, 3))
        >>> clf = surgery.graft(base, [keras.layers.GlobalAveragePooling2D(),
        ...                            keras.layers.Dense(3, name="new_head")])
        >>> report = surgery.restore(clf, base)
        >>> report.missing
        ['new_head']
    """
    entries = zw.read_weights(source)
    plan = zw.plan_assignment(model, entries, match)
    report = RestoreReport(plan.loaded, plan.missing, plan.unexpected, plan.mismatched, plan.match)
    if strict and not report.complete:
        where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
        raise zw.WeightFileError(
            f"strict restore of {where} into {model.name!r} failed; nothing was "
            f"loaded.\n{report}\nUse strict=False to load what fits, or "
            "match='order'/'shape' when layer names differ."
        )
    plan.apply()
    return report
