"""Strict state-dict checks shared by the world-model heads and normalisers.

The world-model package is independent of the rest of :mod:`mlx_baselines3`, so it carries
its own small helper instead of importing ``common.save_util``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import numpy as np


def to_mx(value: Any, dtype: mx.Dtype) -> mx.array:
    """Convert an ``mx.array`` / numpy array / scalar to an ``mx.array`` of ``dtype``."""
    if isinstance(value, mx.array):
        return value.astype(dtype)
    return mx.array(np.asarray(value)).astype(dtype)


def check_state_dict(
    owner: str,
    expected: Mapping[str, mx.array],
    given: Mapping[str, Any],
    strict: bool = True,
) -> dict[str, mx.array]:
    """Check ``given`` against ``expected`` and return the arrays to load, cast to the expected dtypes.

    :param owner: name used in error messages (e.g. ``"RunningRMS"``).
    :param expected: the current state, name -> array (gives the expected keys, shapes and dtypes).
    :param given: the state to load (``mx.array``, numpy arrays or Python scalars).
    :param strict: if True, a missing or an unexpected key is an error. Shapes are always checked.
    :return: name -> ``mx.array`` for every key of ``given`` that is in ``expected``.
    :raises ValueError: naming every missing, unexpected or mis-shaped key.
    """
    if not isinstance(given, Mapping):
        raise ValueError(f"{owner}.load_state_dict expects a mapping of name -> array, got {type(given)!r}")
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    problems = []
    if strict and missing:
        problems.append(f"missing keys: {missing}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    out: dict[str, mx.array] = {}
    misshaped = []
    for name, value in given.items():
        if name not in expected:
            continue
        shape = tuple(np.shape(value)) if not isinstance(value, mx.array) else tuple(value.shape)
        want = tuple(expected[name].shape)
        if shape != want:
            misshaped.append(f"{name} (expected shape {want}, got {shape})")
            continue
        out[name] = to_mx(value, expected[name].dtype)
    if misshaped:
        problems.append(f"mis-shaped keys: {misshaped}")
    if problems:
        raise ValueError(f"{owner}.load_state_dict: " + "; ".join(problems))
    return out
