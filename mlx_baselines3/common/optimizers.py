"""MLX optimizers with the same update rules, arranged to run fast on MLX's CPU backend.

Under ``mx.compile`` MLX fuses chains of elementwise operations into one kernel, including
operations on scalars. In ``mlx.optimizers.Adam`` the bias-correction factors
``lr / (1 - beta1**step)`` and ``1 / sqrt(1 - beta2**step)`` are computed inside each parameter's
update, so the fused kernel evaluates two ``pow`` calls *per element*: on the CPU that made an Adam
step on a 256x256 weight ~2x slower than needed (measured 295 us against 140 us). Here the factors
are computed once per update, behind a reduction that the compiler does not fuse, and shared by
every parameter. The arithmetic is that of ``mlx.optimizers.Adam``/``AdamW`` (and so PyTorch's with
``bias_correction=True``).
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


class _SharedBiasCorrection:
    """Mixin: compute Adam's bias-correction factors once per ``apply_gradients``."""

    _factors: tuple[mx.array, mx.array] | None = None

    def apply_gradients(self, gradients: dict, parameters: dict) -> Any:  # type: ignore[override]
        if not self._initialized:  # type: ignore[attr-defined]
            self.init(gradients)  # type: ignore[attr-defined]
        if self.bias_correction:  # type: ignore[attr-defined]
            b1, b2 = self.betas  # type: ignore[attr-defined]
            step = self.step + 1  # type: ignore[attr-defined]  # the step this update will have
            self._factors = (
                _unfused(self.learning_rate / (1 - b1**step)),  # type: ignore[attr-defined]
                _unfused(mx.rsqrt(1 - b2**step)),
            )
        try:
            return super().apply_gradients(gradients, parameters)  # type: ignore[misc]
        finally:
            self._factors = None

    def _adam_update(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        b1, b2 = self.betas  # type: ignore[attr-defined]
        m = flush_tiny(b1 * state["m"] + (1 - b1) * gradient)
        v = flush_tiny(b2 * state["v"] + (1 - b2) * mx.square(gradient))
        state["m"] = m
        state["v"] = v
        if self._factors is not None:
            c1, c2 = (factor.astype(gradient.dtype) for factor in self._factors)
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


class RMSprop(optim.RMSprop):
    """``mlx.optimizers.RMSprop`` (PyTorch's rule) with subnormal squared averages flushed to 0."""

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        v = flush_tiny(self.alpha * state["v"] + (1 - self.alpha) * mx.square(gradient))
        state["v"] = v
        return parameter - lr * gradient / (mx.sqrt(v) + self.eps)


FAST_EQUIVALENTS: dict[type, type] = {optim.Adam: Adam, optim.AdamW: AdamW, optim.RMSprop: RMSprop}
