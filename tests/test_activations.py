"""The fast CPU tanh against exact tanh: values, gradient, compiled, and its use in policies."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3.common.activations import Tanh, fast_tanh
from mlx_baselines3.common.policies import ActorCriticPolicy
from mlx_baselines3.common.utils import ConstantSchedule


def test_fast_tanh_matches_float64_tanh_everywhere():
    x = np.concatenate([np.linspace(-30, 30, 400_001), [0.0, 1e-8, -1e-8, 1e30, -1e30]]).astype(np.float32)
    y = np.array(fast_tanh(mx.array(x)))
    error = np.abs(y.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert error.max() < 4e-7
    assert np.all(np.abs(y) <= 1.0)
    np.testing.assert_array_equal(np.sign(y), np.sign(x))


def test_fast_tanh_gradient_is_one_minus_tanh_squared():
    x = mx.array(np.linspace(-8, 8, 2001).astype(np.float32))
    grad = np.array(mx.grad(lambda v: fast_tanh(v).sum())(x))
    expected = 1 - np.tanh(np.array(x).astype(np.float64)) ** 2
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_fast_tanh_compiled_equals_eager():
    x = mx.array(np.random.default_rng(0).normal(scale=3, size=(64, 64)).astype(np.float32))
    compiled = mx.compile(lambda v: fast_tanh(v) * 2.0)
    np.testing.assert_array_equal(np.array(compiled(x)), np.array(fast_tanh(x) * 2.0))


def test_policies_built_with_nn_tanh_use_it_and_keep_parameter_names():
    policy = ActorCriticPolicy(spaces.Box(-1, 1, (3,)), spaces.Discrete(2), ConstantSchedule(1e-3),
                               activation_fn=nn.Tanh)
    assert isinstance(policy.mlp_extractor.policy_net.layers[1], Tanh)
    assert isinstance(policy.mlp_extractor.policy_net.layers[1], nn.Tanh)
    assert "mlp_extractor.policy_net.layers.2.weight" in policy.state_dict()
    assert policy.activation_fn is nn.Tanh  # what the user asked for is what is saved


def test_clip_by_global_norm_matches_pytorch_rule():
    from mlx_baselines3.common.compile import clip_by_global_norm

    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": [rng.normal(size=5).astype(np.float32)]}
    norm = np.sqrt(sum((g**2).sum() for g in [grads["a"], grads["b"][0]]))
    tree = {"a": mx.array(grads["a"]), "b": [mx.array(grads["b"][0])]}
    clipped, got_norm = clip_by_global_norm(tree, mx.array(0.5))
    assert float(got_norm) == pytest.approx(norm, rel=1e-5)
    scale = min(0.5 / (norm + 1e-6), 1.0)
    np.testing.assert_allclose(np.array(clipped["a"]), grads["a"] * scale, rtol=1e-5)
    unclipped, _ = clip_by_global_norm(tree, mx.array(1e6))
    np.testing.assert_allclose(np.array(unclipped["b"][0]), grads["b"][0], rtol=1e-6)


def _compiled_kernels(fn, x):
    import io
    import re

    out = mx.compile(fn)(x)
    dot = io.StringIO()
    mx.export_to_dot(dot, out)
    return re.findall(r'label ="([^"]+)"', dot.getvalue())


def test_fast_tanh_compiles_to_one_kernel():
    """MLX fuses at most 11 chained operations: the polynomials must stay shallow enough for one
    kernel (Horner's rule gave three, the last one through MLX's scalar strided loop)."""
    x = mx.array(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32))
    mx.eval(x)
    kernels = _compiled_kernels(lambda v: fast_tanh(v), x)
    assert len([k for k in kernels if k.startswith("Compiled")]) == 1, kernels
    assert all(k.startswith("Compiled") or k == "CustomTransforms" for k in kernels), kernels
