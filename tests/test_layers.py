"""The MLP building block: ``Linear`` computes nn.Linear's function and the right gradients."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_baselines3.common.layers import Linear, create_mlp


@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_gradients_match_numpy(bias):
    rng = np.random.default_rng(0)
    layer = Linear(5, 3, bias=bias)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    upstream = rng.normal(size=(7, 3)).astype(np.float32)  # d loss / d output
    weight = np.array(layer.weight)
    bias_value = np.array(layer.bias) if bias else np.zeros(3, np.float32)

    expected = x @ weight.T + bias_value
    np.testing.assert_allclose(np.array(layer(mx.array(x))), expected, rtol=1e-5, atol=1e-6)

    def loss(module, inputs):
        return (module(inputs) * mx.array(upstream)).sum()

    grads = nn.value_and_grad(layer, loss)(layer, mx.array(x))[1]
    np.testing.assert_allclose(np.array(grads["weight"]), upstream.T @ x, rtol=1e-5, atol=1e-5)
    if bias:
        np.testing.assert_allclose(np.array(grads["bias"]), upstream.sum(axis=0), rtol=1e-5, atol=1e-5)
    input_grad = mx.grad(lambda inputs: loss(layer, inputs))(mx.array(x))
    np.testing.assert_allclose(np.array(input_grad), upstream @ weight, rtol=1e-5, atol=1e-5)


def test_mlp_gradients_equal_nn_linear_compiled_and_not():
    mx.random.seed(1)
    layers = create_mlp(4, 2, [16, 16], nn.ReLU)
    assert all(type(layer) is Linear for layer in layers if isinstance(layer, nn.Linear))
    ours = nn.Sequential(*layers)
    reference = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    reference.update(ours.parameters())
    x = mx.random.normal((32, 4))

    def loss(module, inputs):
        return mx.mean(mx.square(module(inputs)))

    expected = nn.value_and_grad(reference, loss)(reference, x)[1]
    plain = nn.value_and_grad(ours, loss)(ours, x)[1]
    compiled = mx.compile(lambda inputs: nn.value_and_grad(ours, loss)(ours, inputs)[1])(x)
    for got in (plain, compiled):
        for (name, a), (_, b) in zip(
            sorted(nn.utils.tree_flatten(got)), sorted(nn.utils.tree_flatten(expected))
        ):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6, err_msg=name)
