"""RAdam and the learning-rate pieces the seeds teach, as Keras 3 objects."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tuning")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2019, https://arxiv.org/abs/1908.03265).

    Adam whose adaptive step is switched on only once the variance of the
    adaptive learning rate is tractable (the length of the approximated
    simple moving average `rho_t` exceeds `sma_threshold`) and then scaled by
    the rectification term `r_t`; before that it takes plain momentum-SGD
    steps with the bias-corrected first moment. Keras has no RAdam.

    Args:
        learning_rate: float or schedule. Defaults to 0.001.
        beta_1: float. First-moment decay. Defaults to 0.9.
        beta_2: float. Second-moment decay. Defaults to 0.999.
        epsilon: float. Added to the root of the second moment. Defaults to
            1e-7.
        sma_threshold: float. `rho_t` above which the rectified adaptive step
            is used: 5.0 as in the authors' code and PyTorch (the paper's
            Algorithm 2 writes 4). Defaults to 5.0.
        **kwargs: the base optimizer's arguments (`weight_decay`,
            `clipnorm`, `use_ema`, `gradient_accumulation_steps`, ...).

    Example:

        >>> import keras, numpy as np, tuning
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer=tuning.RAdam(1e-2), loss="mse")
        >>> h = model.fit(np.ones((8, 3)), np.zeros((8, 1)), epochs=2, verbose=0)
        >>> h.history["loss"][1] < h.history["loss"][0]
        True
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        sma_threshold: float = 5.0,
        name: str = "radam",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.sma_threshold = sma_threshold

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient: Any, variable: keras.Variable, learning_rate: Any) -> None:
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        beta_1_power = ops.power(beta_1, t)
        beta_2_power = ops.power(beta_2, t)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
        m_hat = m / (1 - beta_1_power)
        rho_inf = 2 / (1 - beta_2) - 1
        rho_t = rho_inf - 2 * t * beta_2_power / (1 - beta_2_power)
        rect = ops.sqrt(
            ops.maximum((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.0)
        )
        adaptive = ops.sqrt(1 - beta_2_power) / (ops.sqrt(v) + self.epsilon)
        step = ops.where(rho_t > self.sma_threshold, rect * m_hat * adaptive, m_hat)
        self.assign_sub(variable, lr * step)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "sma_threshold": self.sma_threshold,
        }


def warmup_cosine(
    learning_rate: float, *, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.0
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to `learning_rate`, then cosine decay: Keras' `CosineDecay`.

    Args:
        learning_rate: float. Peak learning rate (reached after warm-up).
        total_steps: int. Steps of warm-up plus decay.
        warmup_steps: int. Linear warm-up steps from 0. Defaults to 0.
        final_fraction: float. Final rate as a fraction of the peak.

    Example:

        >>> import tuning
        >>> s = tuning.warmup_cosine(1e-3, total_steps=100, warmup_steps=10)
        >>> [round(float(s(i)), 6) for i in (0, 10, 100)]
        [0.0, 0.001, 0.0]
    """
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=final_fraction,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


@keras.saving.register_keras_serializable(package="tuning")
class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs as `lr`.

    With a `MultiOptimizer` (per-stage rates) it logs the largest rate.

    So it shows in the progress bar, the History, CSV and TensorBoard logs
    (put it before those callbacks).

    Example:

        >>> import keras, numpy as np, tuning
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> m.compile(keras.optimizers.SGD(tuning.warmup_cosine(0.1, total_steps=4)), "mse")
        >>> h = m.fit(np.ones((4, 2)), np.ones((4, 1)), batch_size=2, epochs=2,
        ...           callbacks=[tuning.LearningRateLogger()], verbose=0)
        >>> [round(x, 4) for x in h.history["lr"]]
        [0.05, 0.0]
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None or self.model is None:
            return
        optimizer = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        # A MultiOptimizer (per-stage rates) logs its largest rate: the head's.
        parts = getattr(optimizer, "optimizers", None) or [optimizer]
        logs["lr"] = max(float(keras.ops.convert_to_numpy(o.learning_rate)) for o in parts)

    def get_config(self) -> dict:
        return {}
