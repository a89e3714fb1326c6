"""Helpers for compiled training steps: guarded optimizer updates and tree utilities.

A compiled step declares everything it reads and writes as state (``mx.compile(fn, inputs=state,
outputs=state)``). State containers (module parameter dicts, optimizer state dicts, small dicts
of counters) must be *mutated in place*: the compiled function keeps references to the exact
objects it was given, so replacing a dict with a new one would silently detach it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_map


def tree_snapshot(tree: Any) -> Any:
    """A structural copy of a tree of arrays (the arrays themselves are immutable, so not copied).

    Taken before every ``train()`` call; array leaves are kept without a recursive call.
    """
    if isinstance(tree, dict):
        return {
            key: value if type(value) is mx.array else tree_snapshot(value) for key, value in tree.items()
        }
    if isinstance(tree, list):
        return [value if type(value) is mx.array else tree_snapshot(value) for value in tree]
    if isinstance(tree, tuple):
        return tuple(value if type(value) is mx.array else tree_snapshot(value) for value in tree)
    return tree


def assign_where_in_place(condition: mx.array, new: Any, old: Any) -> Any:
    """Mutate the container ``new`` so that each array becomes ``where(condition, new, old)``."""
    if isinstance(new, dict):
        for key in list(new.keys()):
            if key in old:
                new[key] = assign_where_in_place(condition, new[key], old[key])
        return new
    if isinstance(new, list):
        for index in range(len(new)):
            if index < len(old):
                new[index] = assign_where_in_place(condition, new[index], old[index])
        return new
    if isinstance(new, mx.array) and isinstance(old, mx.array):
        return mx.where(condition, new, old)
    return new


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient norm became NaN or infinite during ``train()``.

    The whole ``train()`` call is undone (networks, target networks and optimizer states are
    restored to what they were before it; keeping references to MLX's immutable arrays makes that
    free), so the model is still usable and can be saved. The message names the term that went bad.
    """


def snapshot_state(state: list[Any]) -> list[Any]:
    """References to the arrays of a compiled step's declared state, to roll back to (free: arrays are immutable)."""
    return [tree_snapshot(item) for item in state]


def restore_state(state: list[Any], snapshot: list[Any]) -> None:
    """Put the arrays of ``snapshot`` (:func:`snapshot_state`) back into ``state``'s containers."""
    for item, saved in zip(state, snapshot):
        assign_in_place(item, saved)


@contextmanager
def restored_on_error(state: list[Any], snapshot: list[Any]) -> Iterator[None]:
    """Within the block, an exception first puts ``snapshot`` back into ``state``, then propagates.

    An error while a compiled step is traced (a bad observation shape, say) would otherwise leave
    MLX's placeholder arrays in the declared state, and the model could not be trained or saved.
    """
    try:
        yield
    except Exception:
        restore_state(state, snapshot)
        raise


def raise_if_not_finite(
    names: Sequence[str], finite: np.ndarray, state: list[Any], snapshot: list[Any], num_timesteps: int
) -> None:
    """Roll ``state`` back to ``snapshot`` and raise ``NonFiniteLossError`` if any step had a non-finite value.

    :param names: the checked values, in the order a step computes them (the first bad one is named
        as the cause)
    :param finite: ``[steps, len(names)]`` booleans
    """
    finite = np.asarray(finite).astype(bool)
    if finite.size == 0 or finite.all():
        return
    restore_state(state, snapshot)
    first_bad = int(np.flatnonzero(~finite.all(axis=1))[0])
    bad_terms = [name for name, ok in zip(names, finite[first_bad]) if not ok]
    also = f" (then also {', '.join(bad_terms[1:])})" if len(bad_terms) > 1 else ""
    raise NonFiniteLossError(
        f"Non-finite value in {bad_terms[0]} at gradient step {first_bad} of this train() call{also} "
        f"(total timesteps {num_timesteps}). This update was undone: every network, optimizer and target "
        "network is as it was before it. Lower the learning rate, check rewards/observations for NaN or "
        "huge values (VecCheckNan, VecNormalize), or clip gradients (max_grad_norm)."
    )


def chunk_size(n_steps: int, limit: int) -> int:
    """Steps per compiled call: all of them when ``n_steps <= limit``, else a divisor of ``n_steps``
    (so every call has one shape and compiles once) when one above ``limit / 2`` exists, else ``limit``."""
    limit = max(1, limit)
    if n_steps <= limit:
        return max(1, n_steps)
    divisor = max(d for d in range(1, limit + 1) if n_steps % d == 0)
    return divisor if divisor * 2 > limit else limit


def assign_in_place(target: Any, source: Any) -> None:
    """Make the containers of ``target`` hold the arrays of ``source`` (same structure), in place."""
    if isinstance(target, dict):
        for key in list(target.keys()):
            if isinstance(target[key], (dict, list)):
                assign_in_place(target[key], source[key])
            else:
                target[key] = source[key]
    elif isinstance(target, list):
        for index in range(len(target)):
            if isinstance(target[index], (dict, list)):
                assign_in_place(target[index], source[index])
            else:
                target[index] = source[index]


def scale_gradients(grads: Any, scale: mx.array) -> Any:
    """Every gradient multiplied by the scalar ``scale`` (in the gradient's dtype)."""
    return tree_map(lambda g: g * scale.astype(g.dtype), grads)


def scaled_update(module: nn.Module, optimizer: optim.Optimizer, grads: Any, scale: mx.array | None) -> None:
    """``optimizer.update(module, grads * scale)`` (``scale``: a clipping factor, or None for 1).

    This package's optimizers (:mod:`~mlx_baselines3.common.optimizers`) take ``scale`` into their
    update kernels; any other optimizer gets the scaled gradients.
    """
    if scale is None:
        optimizer.update(module, grads)
    elif hasattr(optimizer, "update_scaled"):
        optimizer.update_scaled(module, grads, scale)
    else:
        optimizer.update(module, scale_gradients(grads, scale))


def guarded_update(
    module: nn.Module,
    optimizer: optim.Optimizer,
    grads: Any,
    apply: mx.array | None,
    scale: mx.array | None = None,
) -> None:
    """``optimizer.update(module, grads * scale)`` that takes effect only where ``apply`` is true
    (always when ``apply`` is None: :func:`scaled_update`).

    When ``apply`` is false (a non-finite loss, or an early stop), the module's parameters and the
    optimizer's state (moments, step count) keep their previous values. Works inside ``mx.compile``
    (no host synchronisation): the choice is an elementwise ``where`` fused into the update.
    """
    if apply is None:
        scaled_update(module, optimizer, grads, scale)
        return
    old_params = module.trainable_parameters()
    old_state = tree_snapshot(optimizer.state)
    scaled_update(module, optimizer, grads, scale)
    new_params = tree_map(
        lambda new, old: mx.where(apply, new, old), module.trainable_parameters(), old_params
    )
    module.update(new_params)
    assign_where_in_place(apply, optimizer.state, old_state)


def global_norm_and_clip_scale(
    grads: Any, max_norm: mx.array | float | None
) -> tuple[mx.array, mx.array | None]:
    """The global L2 norm of ``grads`` and PyTorch's clipping factor ``min(max_norm / (norm + 1e-6), 1)``.

    ``max_norm`` may be an array (so that changing it needs no recompilation) or None (no clipping:
    the factor is None).
    """
    if not tree_flatten_arrays(grads):
        return mx.array(0.0), None
    # One concatenation and one reduction instead of a reduction per parameter: on MLX's CPU
    # backend the number of kernels, not their size, sets the cost (~10% of a PPO step).
    return flat_norm_and_clip_scale(as_vector(grads), max_norm)


def as_vector(tree: Any) -> mx.array:
    """The arrays of a (non-empty) tree, in order, as one flat float32 array."""
    return mx.concatenate([array.reshape(-1).astype(mx.float32) for array in tree_flatten_arrays(tree)])


def flat_norm_and_clip_scale(
    flat: mx.array, max_norm: mx.array | float | None
) -> tuple[mx.array, mx.array | None]:
    """:func:`global_norm_and_clip_scale` of gradients already concatenated into one float32 array."""
    norm = mx.sqrt(mx.sum(flat * flat))
    if max_norm is None:
        return norm, None
    return norm, mx.minimum(max_norm / (norm + 1e-6), 1.0)


def clip_by_global_norm(grads: Any, max_norm: mx.array | float | None) -> tuple[Any, mx.array]:
    """Scale ``grads`` so that their global L2 norm is at most ``max_norm`` (PyTorch's rule).

    See :func:`global_norm_and_clip_scale`; the training steps pass the factor to
    :func:`scaled_update` instead, which applies it inside the optimizer's kernels.

    :return: the (clipped) gradients and the norm before clipping
    """
    norm, scale = global_norm_and_clip_scale(grads, max_norm)
    if scale is None:
        return grads, norm
    return scale_gradients(grads, scale), norm


def tree_flatten_arrays(tree: Any) -> list[mx.array]:
    """The arrays of a tree, in order."""
    from mlx.utils import tree_flatten

    return [item[1] for item in tree_flatten(tree) if isinstance(item[1], mx.array)]


def all_finite(*values: mx.array) -> mx.array:
    """A scalar bool: every given array is finite everywhere."""
    result = mx.array(True)
    for value in values:
        result = mx.logical_and(result, mx.all(mx.isfinite(value)))
    return result
