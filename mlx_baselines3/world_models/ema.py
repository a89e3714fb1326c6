"""Slow (exponential moving average) copies of a module's parameters, e.g. a slow critic."""

from __future__ import annotations

import copy
from typing import TypeVar

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def slow_copy(module: ModuleT) -> ModuleT:
    """A frozen copy of ``module`` with equal (but separate) parameter arrays, to be updated by :func:`ema_update`.

    Frozen means its parameters are not in ``trainable_parameters()``, so an optimizer or
    ``nn.value_and_grad`` over a model that contains it leaves it alone.
    """
    target = copy.deepcopy(module)
    target.update(tree_map(lambda p: mx.array(p), module.parameters()))
    target.freeze()
    return target


def ema_update(target: nn.Module, online: nn.Module, rate: float | mx.array) -> None:
    """In place: ``target <- (1 - rate) * target + rate * online`` for every parameter.

    ``rate = 1`` copies ``online`` exactly; ``rate = 0`` leaves ``target`` unchanged (DreamerV3's
    slow critic uses ``rate = 0.02`` every step). Works inside ``mx.compile`` when
    ``target.state`` is declared as compiled state (a Python float ``rate`` is a compile-time
    constant; pass an ``mx.array`` if it changes).

    :raises ValueError: if the two modules' parameter names or shapes differ (naming them).
    """
    if isinstance(rate, (int, float)) and not 0.0 <= rate <= 1.0:
        raise ValueError(f"ema_update: rate must be in [0, 1], got {rate!r}")
    target_params = dict(tree_flatten(target.parameters()))
    online_params = dict(tree_flatten(online.parameters()))
    missing = sorted(set(target_params) - set(online_params))
    extra = sorted(set(online_params) - set(target_params))
    misshaped = sorted(
        f"{k} (target {tuple(target_params[k].shape)}, online {tuple(online_params[k].shape)})"
        for k in set(target_params) & set(online_params)
        if target_params[k].shape != online_params[k].shape
    )
    if missing or extra or misshaped:
        raise ValueError(
            "ema_update: target and online modules differ: "
            f"only in target: {missing}; only in online: {extra}; mis-shaped: {misshaped}"
        )
    new = [
        (k, ((1 - rate) * target_params[k] + rate * online_params[k]).astype(target_params[k].dtype))
        for k in target_params
    ]
    target.update(tree_unflatten(new))
