"""MLX optimizers with the same update rules, arranged to run fast on MLX's CPU backend.

Under ``mx.compile`` MLX fuses chains of elementwise operations into one kernel, including
operations on scalars. In ``mlx.optimizers.Adam`` the bias-correction factors
``lr / (1 - beta1**step)`` and ``1 / sqrt(1 - beta2**step)`` are computed inside each parameter's
update, so the fused kernel evaluates two ``pow`` calls *per element*: on the CPU that made an Adam
step on a 256x256 weight ~2x slower than needed (measured 295 us against 140 us). Here the factors
are computed once per update, behind a reduction that the compiler does not fuse, and shared by
every parameter. The arithmetic is that of ``mlx.optimizers.Adam``/``AdamW`` (and so PyTorch's with
``bias_correction=True``).

Gradient clipping is taken into the same kernel: :meth:`update_scaled` applies the update of
``scale * gradients`` without materialising the scaled gradients (``(1 - beta1) * scale`` and
``(1 - beta2) * scale^2`` are computed once per update and multiply the raw gradient). On MLX's
CPU backend every kernel costs a few microseconds of dispatch whatever its size, and a separate
``g * scale`` per parameter was 12 of a PPO step's ~130 kernels.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.optimizers as optim

# Moments below this are set to 0. A parameter whose gradient is 0 for a while (a dead ReLU unit)
# has its first moment decay by beta1 = 0.9 per step into float32's subnormal range within ~800
# steps, and arithmetic on subnormals is ~100x slower on x86 CPUs: a DQN step slowed from 1.2 ms
# to 3.8 ms. Such a moment moves the parameter by less than 1e-30 / eps: nothing.
TINY = 1e-30


def flush_tiny(value: mx.array) -> mx.array:
    """``value`` with entries smaller than ``TINY`` in magnitude set to 0 (keeps them out of the subnormals)."""
    return mx.where(mx.abs(value) < TINY, 0.0, value)  # a scalar 0 fuses into the update kernel


def _unfused(value: mx.array) -> mx.array:
    """``value`` itself, computed once: a reduction is never fused into elementwise kernels."""
    return mx.sum(value.reshape(1))


class _PerUpdateWeights:
    """Mixin: scalars computed once per update and read by every parameter's ``apply_single``, and
    :meth:`update_scaled`, the update of ``scale * gradients`` with ``scale`` inside those scalars.

    Subclasses return the scalars from :meth:`_update_weights`; they are in ``self._weights`` while
    ``apply_gradients`` runs, and dropped after it (no reference to an update's arrays is kept).
    """

    _gradient_scale: mx.array | None = None
    _weights: tuple[Any, ...] = ()

    def update_scaled(self, model: Any, gradients: dict, scale: mx.array) -> None:
        """``update(model, tree_map(lambda g: g * scale, gradients))``, with ``scale`` applied in the kernel."""
        self._gradient_scale = scale
        try:
            self.update(model, gradients)  # type: ignore[attr-defined]
        finally:
            self._gradient_scale = None

    def _scaled(self, coefficient: Any, power: int) -> Any:
        """``coefficient * scale**power`` (a float or an array), computed once per update;
        ``coefficient`` itself when not scaling."""
        if self._gradient_scale is None:
            return coefficient
        scale = self._gradient_scale.astype(mx.float32)
        return _unfused(coefficient * scale * scale if power == 2 else coefficient * scale)

    def _update_weights(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def apply_gradients(self, gradients: dict, parameters: dict) -> Any:
        if not self._initialized:  # type: ignore[attr-defined]
            self.init(gradients)  # type: ignore[attr-defined]
        self._weights = self._update_weights()
        try:
            return super().apply_gradients(gradients, parameters)  # type: ignore[misc]
        finally:
            self._weights = ()


def _in_dtype(weight: Any, dtype: mx.Dtype) -> Any:
    """A per-update weight ready to multiply a ``dtype`` array (Python floats are left as they are)."""
    return weight if isinstance(weight, float) else weight.astype(dtype)


class _SharedBiasCorrection(_PerUpdateWeights):
    """Mixin: Adam's (scaled) moment coefficients and bias-correction factors, once per update."""

    def _update_weights(self) -> tuple[Any, ...]:
        b1, b2 = self.betas  # type: ignore[attr-defined]
        moment_weights = (self._scaled(1 - b1, 1), self._scaled(1 - b2, 2))
        if not self.bias_correction:  # type: ignore[attr-defined]
            return moment_weights
        step = self.step + 1  # type: ignore[attr-defined]  # the step this update will have
        return moment_weights + (
            _unfused(self.learning_rate / (1 - b1**step)),  # type: ignore[attr-defined]
            _unfused(mx.rsqrt(1 - b2**step)),
        )

    def _adam_update(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        b1, b2 = self.betas  # type: ignore[attr-defined]
        w1, w2, *factors = (_in_dtype(weight, gradient.dtype) for weight in self._weights)
        m = flush_tiny(b1 * state["m"] + w1 * gradient)
        v = flush_tiny(b2 * state["v"] + w2 * mx.square(gradient))
        state["m"] = m
        state["v"] = v
        if factors:
            c1, c2 = factors
            return parameter - c1 * m / (mx.sqrt(v) * c2 + self.eps)  # type: ignore[attr-defined]
        lr = self.learning_rate.astype(gradient.dtype)  # type: ignore[attr-defined]
        return parameter - lr * m / (mx.sqrt(v) + self.eps)  # type: ignore[attr-defined]


class Adam(_SharedBiasCorrection, optim.Adam):
    """``mlx.optimizers.Adam`` with the bias correction computed once per update (same results)."""

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        return self._adam_update(gradient, parameter, state)


class AdamW(_SharedBiasCorrection, optim.AdamW):
    """``mlx.optimizers.AdamW`` with the bias correction computed once per update (same results)."""

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        parameter = parameter * (1 - lr * self.weight_decay)
        return self._adam_update(gradient, parameter, state)


class RMSprop(_PerUpdateWeights, optim.RMSprop):
    """``mlx.optimizers.RMSprop`` (PyTorch's rule) with subnormal squared averages flushed to 0."""

    def _update_weights(self) -> tuple[Any, ...]:
        # (1 - alpha) * scale^2 for the average, lr * scale for the step (the plain values unscaled)
        return (self._scaled(1 - self.alpha, 2), self._scaled(self.learning_rate, 1))

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        average_weight, lr = (_in_dtype(weight, gradient.dtype) for weight in self._weights)
        v = flush_tiny(self.alpha * state["v"] + average_weight * mx.square(gradient))
        state["v"] = v
        return parameter - lr * gradient / (mx.sqrt(v) + self.eps)


FAST_EQUIVALENTS: dict[type, type] = {optim.Adam: Adam, optim.AdamW: AdamW, optim.RMSprop: RMSprop}
