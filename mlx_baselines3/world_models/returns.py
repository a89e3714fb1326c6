"""TD(lambda) returns over imagined or replayed trajectories (batch-first)."""

from __future__ import annotations

import mlx.core as mx


def lambda_returns(
    rewards: mx.array,
    values: mx.array,
    continues: mx.array,
    gamma: float | mx.array,
    lam: float | mx.array,
) -> mx.array:
    """Bootstrapped lambda-returns, computed backwards in time.

    With ``T`` steps, ``R_T = V_T`` and for ``t = T-1 .. 0``::

        R_t = r_t + gamma * c_t * ((1 - lam) * V_{t+1} + lam * R_{t+1})

    where ``r_t`` and ``c_t`` are the reward and the continuation flag (0 at a terminal state,
    1 otherwise, or a probability) of the transition ``t -> t+1``. ``lam = 1`` gives discounted
    Monte-Carlo returns bootstrapped at the end, ``lam = 0`` one-step TD targets.

    :param rewards: ``[B, T, ...]``.
    :param values: ``[B, T + 1, ...]``: ``V_0 .. V_T`` (the last one is the bootstrap value).
    :param continues: ``[B, T, ...]``.
    :param gamma: discount (a Python float, or an ``mx.array`` to avoid recompiling when it changes).
    :param lam: lambda (same).
    :return: ``[B, T, ...]`` returns ``R_0 .. R_{T-1}``. Gradients flow into every input; wrap the
        result in ``mx.stop_gradient`` to use it as a target.
    """
    if rewards.ndim < 2:
        raise ValueError(f"lambda_returns: rewards must have shape [B, T, ...], got {tuple(rewards.shape)}")
    batch, steps = rewards.shape[:2]
    expected_values = (batch, steps + 1, *rewards.shape[2:])
    if tuple(values.shape) != expected_values:
        raise ValueError(
            f"lambda_returns: values must have shape {expected_values} (one more step than rewards "
            f"{tuple(rewards.shape)}: the last entry is the bootstrap value), got {tuple(values.shape)}"
        )
    if tuple(continues.shape) != tuple(rewards.shape):
        raise ValueError(
            f"lambda_returns: continues {tuple(continues.shape)} must have the shape of rewards "
            f"{tuple(rewards.shape)}"
        )
    discount = gamma * continues
    # r_t + gamma c_t (1 - lam) V_{t+1}: everything but the recursive term, in one vectorised op.
    base = rewards + discount * (1 - lam) * values[:, 1:]
    carry_weight = discount * lam
    ret = values[:, steps]
    out = []
    for t in range(steps - 1, -1, -1):
        ret = base[:, t] + carry_weight[:, t] * ret
        out.append(ret)
    if not out:
        return mx.zeros(rewards.shape, dtype=values.dtype)
    return mx.stack(out[::-1], axis=1)
