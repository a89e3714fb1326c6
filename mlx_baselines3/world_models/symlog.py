"""The symmetric log transform used by Dreamer-style heads and its inverse."""

from __future__ import annotations

import mlx.core as mx


def symlog(x: mx.array) -> mx.array:
    """``sign(x) * log(1 + |x|)``, computed with ``log1p`` so small values keep full precision.

    :param x: any shape; integer inputs are promoted to float32.
    :return: float array of the same shape (float32 unless ``x`` is a wider float type).
    """
    x = _as_float(x)
    return mx.sign(x) * mx.log1p(mx.abs(x))


def symexp(x: mx.array) -> mx.array:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``, computed with ``expm1``.

    :param x: any shape; integer inputs are promoted to float32.
    :return: float array of the same shape.
    """
    x = _as_float(x)
    return mx.sign(x) * mx.expm1(mx.abs(x))


def _as_float(x: mx.array) -> mx.array:
    if not isinstance(x, mx.array):
        x = mx.array(x, dtype=mx.float32)
    if not mx.issubdtype(x.dtype, mx.floating):
        x = x.astype(mx.float32)
    return x
