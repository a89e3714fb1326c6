"""Two-hot critic helpers for actor-critic algorithms (e.g. PPO with ``value_head="twohot"``).

A critic with ``K`` output logits (instead of one scalar) is trained on the two-hot encoding of
its return targets and predicts the decoded expected value. With a ``TwoHot`` in symlog space
(the default) the regression happens on ``symlog(returns)``, which makes the critic insensitive
to the scale of the rewards.
"""

from __future__ import annotations

import mlx.core as mx

from mlx_baselines3.world_models.twohot import TwoHot


def twohot_value_loss(logits: mx.array, returns: mx.array, two_hot: TwoHot) -> mx.array:
    """Mean two-hot soft cross-entropy of a critic's logits against raw return targets.

    :param logits: critic output, ``[B, K]`` (any leading shape ``[...]`` works).
    :param returns: raw (unnormalised) return targets, ``[B]`` (the logits' shape without the last
        axis). No gradient flows into them.
    :param two_hot: the :class:`TwoHot` defining the bins (its ``space`` decides whether the
        returns are regressed in symlog or raw space).
    :return: scalar: the loss averaged over all elements (like SB3's ``F.mse_loss`` on values).
    """
    return mx.mean(two_hot.loss(logits, returns))


def twohot_values(logits: mx.array, two_hot: TwoHot) -> mx.array:
    """Decoded value predictions of a critic's ``[..., K]`` logits, raw scale, shape ``[...]``."""
    return two_hot.decode(logits)
