"""Train a module's parameters as one flat array inside a compiled chunk of gradient steps.

On MLX's CPU backend every kernel costs a few microseconds of dispatch whatever its size, and an
optimizer updates each parameter array with a kernel of its own: inside a compiled chunk of K
steps, three per parameter in the first K - 1 steps (MLX fuses an array into a kernel only when
all its consumers are in it, and step j's moments also feed step j + 1). For PPO's twelve
parameter arrays that was ~33 of a minibatch step's ~212 graph nodes.

:class:`FlatTraining` packs the trainable parameters and the optimizer's per-parameter state into
one flat array each at the start of a chunk, updates them with one call of the optimizer's own
rule per step, gives the module views of the flat parameters to run its next step with, and
writes everything back in the module's and the optimizer's own layout at the end of the chunk.
Outside a chunk nothing changes: names, shapes, saving and loading are those of SB3's layout.

Only optimizers whose rule is elementwise are packed (:data:`ELEMENTWISE_OPTIMIZERS`): each
element then goes through the same arithmetic as before, so the results are bit-identical.
Measured (PPO CartPole-v1, 8 envs, one model alternating the two paths): a minibatch step
1.10-1.12x faster, ``learn`` 1.07-1.15x (medians of per-round ratios over 10-12 rounds).

The on-policy algorithms use it when a compiled call runs several steps (PPO's chunks of
minibatches). Packing costs a copy of the parameters and moments per call, so a single step per
call gains nothing: A2C measured 0.98x and is left alone. The off-policy algorithms do not use it:
DQN (chunks of 8 steps on two 256-unit layers) measured 1.03x, within noise, and SAC (one step
per call) 0.97x.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from mlx_baselines3.common.compile import as_vector, assign_where_in_place, tree_flatten_arrays
from mlx_baselines3.common.optimizers import Adam, AdamW, RMSprop

__all__ = ["ELEMENTWISE_OPTIMIZERS", "FlatTraining"]

ELEMENTWISE_OPTIMIZERS: tuple[type, ...] = (Adam, AdamW, RMSprop)
"""Optimizers whose update of a parameter is elementwise (this package's fast versions of MLX's
Adam, AdamW and RMSprop): the same rule on a flat array gives the same numbers."""

_FLAT = "flat"  # the one parameter name of the packed tree


def _per_parameter_states(parameters: Any, state: Any) -> list[dict[str, Any]]:
    """The optimizer's state dict of each parameter (``{"m": ..., "v": ...}`` for Adam), in the
    order of ``tree_flatten(parameters)``: the state tree mirrors the parameter tree.

    :raises KeyError, IndexError, TypeError: the state has no entry for a parameter
    """
    states: list[dict[str, Any]] = []
    tree_map(lambda _, parameter_state: states.append(parameter_state), parameters, state)
    return states


class FlatTraining:
    """The trainable parameters of ``module`` and ``optimizer``'s state for them, as flat arrays,
    for the gradient steps of one traced chunk.

    Create it inside the traced function, before the first step; in each step call :meth:`update`
    (instead of ``optimizer.update``) with the gradients as one array (:func:`as_vector` of the
    gradient tree, which has the parameters' structure), and :meth:`finish` after the last one.
    Check :meth:`supports` first.

    :param module: the module whose trainable parameters the optimizer updates
    :param optimizer: its (initialised) optimizer
    """

    def __init__(self, module: nn.Module, optimizer: optim.Optimizer) -> None:
        self.module = module
        self.optimizer = optimizer
        # The module's own tree, to put views back in (not rebuilt from dotted paths: a dict key
        # made of digits, say a Dict observation space's "0", would come back as a list index)
        self._template = module.trainable_parameters()
        parameters = tree_flatten_arrays(self._template)
        self._shapes = [array.shape for array in parameters]
        self._state = optimizer.state  # the optimizer's own tree: written back by finish()
        # Its per-parameter dicts, updated in place by finish()
        self._parameter_states = _per_parameter_states(self._template, self._state)
        self.parameters = as_vector(parameters)
        flat_state: dict[str, Any] = {
            key: value for key, value in self._state.items() if isinstance(value, mx.array)
        }
        flat_state[_FLAT] = {
            key: as_vector([state[key] for state in self._parameter_states])
            for key in self._parameter_states[0]
        }
        self._flat_state: dict[str, Any] = flat_state

    @staticmethod
    def supports(module: nn.Module, optimizer: optim.Optimizer) -> bool:
        """Whether the module's parameters can be trained flat with this optimizer: an elementwise
        optimizer (:data:`ELEMENTWISE_OPTIMIZERS`), initialised, float32 parameters, and the same
        kinds of state, each shaped as its parameter, for every parameter."""
        # Exactly these classes: a subclass may have a rule that is not elementwise. The state is
        # swapped through MLX's private `_state` (see update): fall back if it is not there.
        if (
            type(optimizer) not in ELEMENTWISE_OPTIMIZERS
            or getattr(optimizer, "_state", None) is not optimizer.state
        ):
            return False
        template = module.trainable_parameters()
        parameters = tree_flatten_arrays(template)
        if not parameters:
            return False
        try:
            states = _per_parameter_states(template, optimizer.state)
        except (KeyError, IndexError, TypeError):
            return False  # not initialised for these parameters
        keys = set(states[0]) if isinstance(states[0], dict) else set()
        return all(
            array.dtype == mx.float32
            and isinstance(state, dict)
            and set(state) == keys
            and all(isinstance(value, mx.array) and value.shape == array.shape for value in state.values())
            for array, state in zip(parameters, states)
        )

    def unpack(self, flat: mx.array) -> list[mx.array]:
        """Views of ``flat`` in the parameters' shapes, in their order."""
        views, offset = [], 0
        for shape in self._shapes:
            size = math.prod(shape)
            views.append(flat[offset : offset + size].reshape(shape))
            offset += size
        return views

    def update(
        self, gradient: mx.array, scale: mx.array | None = None, apply: mx.array | None = None
    ) -> None:
        """One optimizer step on the flat parameters with the flat ``gradient``; the module then
        holds views of the new parameters.

        :param scale: a factor for the gradient (clipping), taken into the optimizer's kernel
        :param apply: a scalar bool: where false, the parameters and the optimizer's state keep
            their values (a guarded step)
        """
        old_parameters, old_state = self.parameters, self._flat_state
        optimizer = self.optimizer
        # The optimizer's rule runs on a copy of the flat state (its own tree stays in place: it is
        # the compiled function's declared state). Assigning `_state` rather than `state` keeps MLX
        # from marking the optimizer uninitialised.
        new_state: dict[str, Any] = {**old_state, _FLAT: dict(old_state[_FLAT])}
        optimizer._state = new_state  # type: ignore[attr-defined]
        optimizer._gradient_scale = scale  # type: ignore[attr-defined]
        try:
            parameters = optimizer.apply_gradients({_FLAT: gradient}, {_FLAT: old_parameters})[_FLAT]
        finally:
            optimizer._gradient_scale = None  # type: ignore[attr-defined]
            optimizer._state = self._state  # type: ignore[attr-defined]
        if apply is not None:
            parameters = mx.where(apply, parameters, old_parameters)
            assign_where_in_place(apply, new_state, old_state)  # new_state's containers are fresh
        self.parameters, self._flat_state = parameters, new_state
        self._give_module(parameters)

    def _give_module(self, flat: mx.array) -> None:
        views = iter(self.unpack(flat))
        self.module.update(tree_map(lambda _: next(views), self._template))

    def finish(self) -> None:
        """Give the optimizer its final state in its own layout (the module already holds views of
        the final parameters)."""
        for key, flat in self._flat_state[_FLAT].items():
            for state, view in zip(self._parameter_states, self.unpack(flat)):
                state[key] = view
        for key, value in self._flat_state.items():
            if key != _FLAT:
                self._state[key] = value
