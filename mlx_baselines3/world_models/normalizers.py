"""Running normalisers whose statistics are explicit training state.

Both classes keep their statistics in a dict of ``mx.array`` exposed as ``.state``. Declare that
dict in a compiled step (``mx.compile(step, inputs=[..., norm.state], outputs=[..., norm.state])``)
or the statistics are frozen as constants of the compiled graph. Save them with
``state_dict()`` and restore them with ``load_state_dict()`` (strict), or a resumed run
normalises differently. Neither class is an ``nn.Module``: their arrays are not parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import mlx.core as mx

from mlx_baselines3.world_models._state import check_state_dict


class _StatefulNormalizer:
    _state: dict[str, mx.array]

    @property
    def state(self) -> dict[str, mx.array]:
        """The live state dict (the same object every time), for ``mx.compile(inputs=..., outputs=...)``."""
        return self._state

    def state_dict(self) -> dict[str, mx.array]:
        """A copy of the state, name -> array."""
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Restore the state (strict: missing / extra / mis-shaped keys raise ``ValueError`` naming them).

        The arrays are written into the live :attr:`state` dict, so compiled functions that declared
        it see the loaded values.
        """
        loaded = check_state_dict(type(self).__name__, self._state, state, strict=strict)
        self._state.update(loaded)


class RunningRMS(_StatefulNormalizer):
    """Normalise a loss by the root of a debiased EMA of its square.

    On each call with ``update=True``::

        ema   <- decay * ema + (1 - decay) * mean(stop_gradient(loss) ** 2)
        count <- count + 1
        rms    = sqrt(ema / (1 - decay ** count))        # debiased; stop-gradient
        out    = loss / max(rms, eps)

    The EMA starts at 0 with ``count = 0``; the debiasing makes the first estimate exactly the
    first batch's mean square (so the first output has magnitude ~1, never ``1 / sqrt(1 - decay)``
    or ``loss / eps``), and later estimates weigh past batches with the EMA's weights. No gradient
    flows through the denominator.

    :param decay: EMA decay in ``[0, 1)``.
    :param eps: lower bound of the denominator.
    """

    def __init__(self, decay: float = 0.95, eps: float = 1e-8) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"RunningRMS: decay must be in [0, 1), got {decay!r}")
        if not eps > 0:
            raise ValueError(f"RunningRMS: eps must be > 0, got {eps!r}")
        self.decay = float(decay)
        self.eps = float(eps)
        self._state = {"ema": mx.zeros((), dtype=mx.float32), "count": mx.zeros((), dtype=mx.int32)}

    def __repr__(self) -> str:
        return f"RunningRMS(decay={self.decay}, eps={self.eps})"

    def update(self, loss: mx.array) -> None:
        """Fold ``mean(loss ** 2)`` into the EMA (no gradient)."""
        square = mx.mean(mx.square(mx.stop_gradient(loss).astype(mx.float32)))
        self._state["ema"] = self.decay * self._state["ema"] + (1.0 - self.decay) * square
        self._state["count"] = self._state["count"] + 1

    def rms(self) -> mx.array:
        """Current debiased RMS (scalar); 1 before the first update."""
        count = self._state["count"]
        correction = 1.0 - mx.power(mx.array(self.decay, dtype=mx.float32), count.astype(mx.float32))
        started = count > 0
        mean_square = mx.where(started, self._state["ema"] / mx.where(started, correction, 1.0), 1.0)
        return mx.sqrt(mean_square)

    def __call__(self, loss: mx.array, update: bool = True) -> mx.array:
        """Return ``loss / max(rms, eps)`` (after folding ``loss`` into the statistics if ``update``)."""
        if update:
            self.update(loss)
        return loss / mx.stop_gradient(mx.maximum(self.rms(), self.eps))


class PercentileReturnNormalizer(_StatefulNormalizer):
    """DreamerV3's return normaliser: EMAs of the ``low``/``high`` percentiles of returns.

    On each update (``x`` flattened, no gradient)::

        lo <- (1 - rate) * lo + rate * percentile(x, low)
        hi <- (1 - rate) * hi + rate * percentile(x, high)

    with ``percentile`` equal to ``np.percentile``'s default linear interpolation. Both EMAs start
    at 0 (not debiased, as in DreamerV3), so the scale starts at ``limit`` and grows slowly.
    :meth:`stats` returns ``(offset, scale) = (lo, max(limit, hi - lo))``; returns are normalised
    as ``(x - offset) / scale`` and advantages (differences of returns) as ``adv / scale``.
    Dividing by at least ``limit`` keeps small returns from being blown up.

    :param rate: EMA rate in ``(0, 1]`` (DreamerV3: 0.01).
    :param low: lower percentile, in ``[0, 100]``.
    :param high: upper percentile, in ``[low, 100]``.
    :param limit: smallest scale (> 0).
    """

    def __init__(self, rate: float = 0.01, low: float = 5.0, high: float = 95.0, limit: float = 1.0) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"PercentileReturnNormalizer: rate must be in (0, 1], got {rate!r}")
        if not 0.0 <= low <= high <= 100.0:
            raise ValueError(
                f"PercentileReturnNormalizer: need 0 <= low <= high <= 100, got low={low!r}, high={high!r}"
            )
        if not limit > 0:
            raise ValueError(f"PercentileReturnNormalizer: limit must be > 0, got {limit!r}")
        self.rate = float(rate)
        self.low = float(low)
        self.high = float(high)
        self.limit = float(limit)
        self._state = {"low": mx.zeros((), dtype=mx.float32), "high": mx.zeros((), dtype=mx.float32)}

    def __repr__(self) -> str:
        return (
            f"PercentileReturnNormalizer(rate={self.rate}, low={self.low}, high={self.high}, "
            f"limit={self.limit})"
        )

    def update(self, returns: mx.array) -> None:
        """Fold the percentiles of all elements of ``returns`` into the EMAs (no gradient)."""
        x = mx.stop_gradient(returns).astype(mx.float32).reshape(-1)
        if x.size == 0:
            raise ValueError("PercentileReturnNormalizer.update: returns is empty")
        sorted_x = mx.sort(x)
        for key, q in (("low", self.low), ("high", self.high)):
            value = percentile_sorted(sorted_x, q)
            self._state[key] = (1.0 - self.rate) * self._state[key] + self.rate * value

    def stats(self) -> tuple[mx.array, mx.array]:
        """``(offset, scale)`` with ``offset = lo`` and ``scale = max(limit, hi - lo)`` (scalars)."""
        lo = self._state["low"]
        hi = self._state["high"]
        return lo, mx.maximum(hi - lo, self.limit)

    def __call__(self, returns: mx.array, update: bool = True) -> tuple[mx.array, mx.array]:
        """Update with ``returns`` (if ``update``) and return :meth:`stats`."""
        if update:
            self.update(returns)
        return self.stats()

    def normalize(self, x: mx.array) -> mx.array:
        """``(x - offset) / scale`` with the current statistics (no update, no gradient into them)."""
        offset, scale = self.stats()
        return (x - mx.stop_gradient(offset)) / mx.stop_gradient(scale)


def percentile_sorted(sorted_x: mx.array, q: float) -> mx.array:
    """The ``q``-th percentile of an ascending 1-D array, as ``np.percentile(x, q)`` (linear method).

    The interpolation position ``q / 100 * (n - 1)`` is computed in Python (the length is static),
    so it adds no host sync.
    """
    n = sorted_x.shape[0]
    position = q / 100.0 * (n - 1)
    below = min(max(int(math.floor(position)), 0), n - 1)
    above = min(below + 1, n - 1)
    frac = position - below
    a = sorted_x[below]
    b = sorted_x[above]
    # numpy's _lerp: a + (b - a) * t, evaluated from the nearer end for t >= 0.5.
    if frac >= 0.5:
        return b - (b - a) * (1.0 - frac)
    return a + (b - a) * frac
