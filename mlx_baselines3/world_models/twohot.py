"""Two-hot encoding of scalars over a fixed grid of bins (Dreamer-style distributional regression).

A scalar target ``y`` is written as a distribution over ``K`` fixed bin centres that puts all
its mass on the two bins around ``y`` (linear interpolation weights), so that the expected
value of that distribution is ``y`` again. A head predicts ``K`` logits and is trained with the
soft cross-entropy against that target; its prediction is the expected value under
``softmax(logits)``.

Bin spaces
----------
``space="symlog"`` (default): the bins are ``linspace(low, high, K)`` *in symlog space*.
``encode`` maps ``y`` through :func:`symlog` before placing it between bins and ``decode``
takes the expectation in symlog space, then maps it back with :func:`symexp`. With the default
range ±20 the bins cover raw values up to ``symexp(20) ≈ 4.9e8``.

``space="raw"``: the bins are ``symexp(linspace(low, high, K))``, i.e. the same grid mapped to
raw space. Encoding and the expectation are done on raw values. Such bins reach ±4.9e8, so a
head with random output weights predicts values of order 1e4..1e8; zero-initialise its output
layer (the heads of this package do so by default).

Whenever the range is symmetric (``low == -high``) the bins are built exactly antisymmetric
(``bins[i] == -bins[K - 1 - i]`` bit for bit) and the expectation adds mirrored pairs
``p_i * b_i + p_j * b_j`` before summing them, so uniform probabilities (all-equal logits, e.g.
a zero-initialised output layer) decode to exactly 0 in both spaces.
"""

from __future__ import annotations

from typing import Literal

import mlx.core as mx
import numpy as np

from mlx_baselines3.world_models.symlog import symexp, symlog

BinSpace = Literal["symlog", "raw"]


class TwoHot:
    """Fixed bins, two-hot ``encode``, expected-value ``decode`` and the soft cross-entropy ``loss``.

    Not an ``nn.Module``: it holds no trainable state, and its bins are a private array so that a
    module holding a ``TwoHot`` does not count them as parameters.

    :param num_bins: number of bins ``K`` (at least 2).
    :param low: lowest bin centre, in symlog units (the same number is used for both spaces:
        with ``space="raw"`` the lowest raw bin is ``symexp(low)``).
    :param high: highest bin centre, in symlog units.
    :param space: ``"symlog"`` (bins live in symlog space) or ``"raw"`` (bins are ``symexp`` of the
        symlog grid and live in raw space). See the module docstring.
    """

    def __init__(
        self,
        num_bins: int = 255,
        low: float = -20.0,
        high: float = 20.0,
        space: BinSpace = "symlog",
    ) -> None:
        if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
            raise ValueError(f"TwoHot: num_bins must be an integer >= 2, got {num_bins!r}")
        if not (np.isfinite(low) and np.isfinite(high)) or not low < high:
            raise ValueError(f"TwoHot: need finite low < high, got low={low!r}, high={high!r}")
        if space not in ("symlog", "raw"):
            raise ValueError(f"TwoHot: space must be 'symlog' or 'raw', got {space!r}")
        self.num_bins = int(num_bins)
        self.low = float(low)
        self.high = float(high)
        self.space: BinSpace = space

        grid = np.linspace(self.low, self.high, self.num_bins, dtype=np.float64)
        if self.low == -self.high:
            # Exactly antisymmetric grid (a - b == -(b - a) in floating point; the middle is 0).
            grid = 0.5 * (grid - grid[::-1])
        if space == "raw":
            grid = np.sign(grid) * np.expm1(np.abs(grid))
        bins = grid.astype(np.float32)
        if not np.all(np.diff(bins) > 0):
            raise ValueError(
                f"TwoHot: bins are not strictly increasing in float32 (num_bins={num_bins}, "
                f"low={low}, high={high}, space={space!r}); use fewer bins or a wider range"
            )
        self._symmetric = bool(np.array_equal(bins, -bins[::-1]))
        self._bins = mx.array(bins)

    def __repr__(self) -> str:
        return f"TwoHot(num_bins={self.num_bins}, low={self.low}, high={self.high}, space={self.space!r})"

    @property
    def bins(self) -> mx.array:
        """The ``K`` bin centres, in the bin space (``space``), float32, increasing."""
        return self._bins

    def to_bin_space(self, y: mx.array) -> mx.array:
        """Map raw values into the space the bins live in (``symlog`` or identity)."""
        y = _as_float32(y)
        return symlog(y) if self.space == "symlog" else y

    def from_bin_space(self, v: mx.array) -> mx.array:
        """Map values from the bin space back to raw values (``symexp`` or identity)."""
        return symexp(v) if self.space == "symlog" else v

    def neighbours(self, y: mx.array) -> tuple[mx.array, mx.array, mx.array, mx.array]:
        """The two bins around raw values ``y`` and their weights (the sparse form of :meth:`encode`).

        :param y: raw values, shape ``[...]``.
        :return: ``(below, above, w_below, w_above)``, each of shape ``[...]``: int32 bin indices
            with ``bins[below] <= y_b <= bins[above]`` (``y_b`` = ``y`` in bin space, clamped to
            the bin range; ``above = below + 1`` except at the last bin) and float32 weights
            summing to 1 such that ``w_below * bins[below] + w_above * bins[above] = y_b``.
        """
        bins = self._bins
        k = self.num_bins
        yb = mx.clip(self.to_bin_space(y), bins[0], bins[-1])
        below = self._index_below(yb)
        above = mx.minimum(below + 1, k - 1)
        b_lo = bins[below]
        b_hi = bins[above]
        span = b_hi - b_lo
        has_span = span > 0
        w_hi = mx.where(has_span, (yb - b_lo) / mx.where(has_span, span, 1.0), 0.0)
        w_hi = mx.clip(w_hi, 0.0, 1.0)
        return below, above, 1.0 - w_hi, w_hi

    def _index_below(self, yb: mx.array) -> mx.array:
        """Index of the last bin ``<= yb`` (``yb`` already clamped to the bin range), int32."""
        bins = self._bins
        k = self.num_bins
        step = (self.high - self.low) / (k - 1)
        if step < 1e-3:
            # Fine grids: an O(K) comparison per value (exact whatever the rounding).
            below = mx.sum((bins <= yb[..., None]).astype(mx.int32), axis=-1) - 1
            return mx.clip(below, 0, k - 1)
        # The bins are (symexp of) a uniform grid in symlog units: guess the index from the grid,
        # then correct the guess by one bin either way against the actual float32 bins.
        u = yb if self.space == "symlog" else symlog(yb)
        # Clip again after the cast: a NaN input casts to an arbitrary integer, and an index out of
        # range would read out of bounds.
        guess = mx.clip(mx.clip(mx.floor((u - self.low) / step), 0, k - 1).astype(mx.int32), 0, k - 1)
        guess = mx.where(bins[guess] > yb, mx.maximum(guess - 1, 0), guess)
        nxt = mx.minimum(guess + 1, k - 1)
        return mx.where((nxt > guess) & (bins[nxt] <= yb), nxt, guess)

    def encode(self, y: mx.array) -> mx.array:
        """Two-hot encode raw values.

        :param y: raw values, shape ``[...]``.
        :return: ``[..., K]`` float32 weights on the two bins around ``y`` (in bin space); each row
            sums to 1 and has at most 2 non-zeros. A value on a bin centre puts weight 1 on that
            bin; values beyond the first/last bin are clamped to that edge bin. NaN propagates.
        """
        below, above, w_lo, w_hi = self.neighbours(y)
        idx = mx.arange(self.num_bins)
        return (idx == below[..., None]).astype(mx.float32) * w_lo[..., None] + (
            idx == above[..., None]
        ).astype(mx.float32) * w_hi[..., None]

    def expectation(self, probs: mx.array) -> mx.array:
        """Expected bin value ``sum_i probs_i * bins_i`` (in bin space), shape ``[...]``.

        With symmetric bins, mirrored pairs are added first so uniform probabilities give exactly 0.
        """
        self._check_last_dim(probs, "probs")
        bins = self._bins
        if not self._symmetric:
            return mx.sum(probs * bins, axis=-1)
        k = self.num_bins
        m = k // 2
        neg = probs[..., :m] * bins[:m]
        pos = probs[..., k - m :] * bins[k - m :]
        # neg reversed lines bins[m-1-j] up with its mirror bins[k-m+j]; the middle bin (odd K) is 0.
        return mx.sum(neg[..., ::-1] + pos, axis=-1)

    def decode_probs(self, probs: mx.array) -> mx.array:
        """Raw value of a distribution over the bins (e.g. of :meth:`encode`'s output), shape ``[...]``."""
        return self.from_bin_space(self.expectation(probs))

    def decode(self, logits: mx.array) -> mx.array:
        """Raw predicted value of ``[..., K]`` logits: expectation under ``softmax(logits)``, shape ``[...]``.

        With ``space="symlog"`` the expectation is taken in symlog space and mapped back with
        :func:`symexp`.
        """
        self._check_last_dim(logits, "logits")
        return self.decode_probs(mx.softmax(logits.astype(mx.float32), axis=-1, precise=True))

    def loss(self, logits: mx.array, y: mx.array) -> mx.array:
        """Soft cross-entropy ``-sum_i target_i * log_softmax(logits)_i`` against ``encode(y)``.

        Uses a log-softmax (never ``log(softmax)``), so it stays finite at extreme logits; the
        gradient with respect to ``logits`` is ``softmax(logits) - encode(y)``. No gradient flows
        into ``y``.

        :param logits: ``[..., K]``.
        :param y: raw targets, shape ``[...]`` (the logits' shape without the last axis).
        :return: per-element loss, shape ``[...]``.
        """
        self._check_last_dim(logits, "logits")
        y = _as_float32(y)
        if tuple(y.shape) != tuple(logits.shape[:-1]):
            raise ValueError(
                f"TwoHot.loss: targets of shape {tuple(y.shape)} do not match logits of shape "
                f"{tuple(logits.shape)} (expected targets of shape {tuple(logits.shape[:-1])})"
            )
        below, above, w_lo, w_hi = self.neighbours(mx.stop_gradient(y))
        logits = logits.astype(mx.float32)
        lse = mx.logsumexp(logits, axis=-1)
        # Only the two target bins have non-zero weight: gather their logits instead of forming
        # the dense [..., K] target (same value and gradient, softmax - target).
        picked = mx.take_along_axis(logits, mx.stack([below, above], axis=-1), axis=-1)
        return lse - (w_lo * picked[..., 0] + w_hi * picked[..., 1])

    def _check_last_dim(self, x: mx.array, name: str) -> None:
        if x.ndim == 0 or x.shape[-1] != self.num_bins:
            raise ValueError(
                f"TwoHot: {name} must have a last axis of size num_bins={self.num_bins}, "
                f"got shape {tuple(x.shape)}"
            )


def _as_float32(y: mx.array) -> mx.array:
    if not isinstance(y, mx.array):
        return mx.array(np.asarray(y, dtype=np.float32))
    return y.astype(mx.float32) if y.dtype != mx.float32 else y
