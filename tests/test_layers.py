"""The MLP building block: ``Linear`` computes nn.Linear's function and the right gradients."""

import io
import re
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_baselines3.common.layers import Linear, Mlp, create_mlp


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


def _numpy_mlp(params, x, activation, derivative_from_output):
    """Forward and backward of Linear-act-Linear-act-Linear in float64 NumPy (loss: mean square)."""
    w = [np.asarray(params[f"layers.{i}.{name}"], np.float64) for i in (0, 2, 4) for name in ("weight", "bias")]
    h0 = x.astype(np.float64)
    h1 = activation(h0 @ w[0].T + w[1])
    h2 = activation(h1 @ w[2].T + w[3])
    out = h2 @ w[4].T + w[5]
    g_out = 2 * out / out.size
    g_z2 = (g_out @ w[4]) * derivative_from_output(h2)
    g_z1 = (g_z2 @ w[2]) * derivative_from_output(h1)
    grads = {
        "layers.4.weight": g_out.T @ h2, "layers.4.bias": g_out.sum(0),
        "layers.2.weight": g_z2.T @ h1, "layers.2.bias": g_z2.sum(0),
        "layers.0.weight": g_z1.T @ h0, "layers.0.bias": g_z1.sum(0),
    }
    return out, grads, g_z1 @ w[0]


def _numpy_tanh_mlp(params, x):
    return _numpy_mlp(params, x, np.tanh, lambda y: 1 - y**2)


def _numpy_relu_mlp(params, x):
    # ReLU's derivative is 0 where the pre-activation is <= 0 (PyTorch's convention), i.e. where y == 0
    return _numpy_mlp(params, x, lambda z: np.maximum(z, 0.0), lambda y: (y > 0).astype(np.float64))


def _assert_mlp_matches(mlp, x, expected_out, expected_grads, expected_input_grad):
    """Output, parameter gradients (plain and compiled) and input gradient of ``mlp`` (loss: mean square)."""

    def loss(module, inputs):
        return mx.mean(mx.square(module(inputs)))

    np.testing.assert_allclose(np.array(mlp(mx.array(x))), expected_out, rtol=1e-5, atol=2e-6)
    plain = nn.value_and_grad(mlp, loss)(mlp, mx.array(x))[1]
    compiled = mx.compile(lambda inputs: nn.value_and_grad(mlp, loss)(mlp, inputs)[1])(mx.array(x))
    for got in (plain, compiled):
        flat = dict(tree_flatten(got))
        assert set(flat) == set(expected_grads)
        for name, value in expected_grads.items():
            np.testing.assert_allclose(np.array(flat[name]), value, rtol=1e-4, atol=2e-6, err_msg=name)
    input_grad = mx.grad(lambda inputs: loss(mlp, inputs))(mx.array(x))
    np.testing.assert_allclose(np.array(input_grad), expected_input_grad, rtol=1e-4, atol=2e-6)


def test_fused_tanh_mlp_matches_numpy_and_keeps_sequential_names():
    mx.random.seed(3)
    mlp = Mlp(*create_mlp(5, 3, [16, 8], nn.Tanh))
    sequential = nn.Sequential(*mlp.layers)
    assert [name for name, _ in tree_flatten(mlp.parameters())] == [
        name for name, _ in tree_flatten(sequential.parameters())
    ]
    x = np.random.default_rng(0).normal(size=(11, 5)).astype(np.float32) * 2
    params = dict(tree_flatten(mlp.parameters()))
    _assert_mlp_matches(mlp, x, *_numpy_tanh_mlp(params, x))
    # Same function as running the same layers one by one
    np.testing.assert_allclose(np.array(mlp(mx.array(x))), np.array(sequential(mx.array(x))), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [5, 96])  # 96 x 256 outputs take the rank-1 bias path
def test_fused_relu_mlp_matches_numpy_with_zero_gradient_at_zero(batch):
    mx.random.seed(5)
    mlp = Mlp(*create_mlp(6, 3, [256, 64], nn.ReLU))
    params = dict(tree_flatten(mlp.parameters()))
    # Pre-activations exactly 0 (a zero input row meets zero biases): the gradient there is 0
    params["layers.0.bias"] = mx.where(mx.arange(256) % 3 == 0, 0.0, params["layers.0.bias"])
    mlp.update(nn.utils.tree_unflatten(list(params.items())))
    x = np.random.default_rng(1).normal(size=(batch, 6)).astype(np.float32)
    x[0] = 0.0
    _assert_mlp_matches(mlp, x, *_numpy_relu_mlp(params, x))
    # The same numbers as the layers run one by one with MLX's own ReLU (bit for bit)
    layer_by_layer = mlp.layers[4](nn.relu(mlp.layers[2](nn.relu(mlp.layers[0](mx.array(x))))))
    assert np.array_equal(np.array(mlp(mx.array(x))), np.array(layer_by_layer))


def test_large_linear_output_equals_addmm_bit_for_bit():
    """Outputs past the rank-1 bias threshold give exactly nn.Linear's numbers."""
    mx.random.seed(6)
    layer = Linear(32, 256)
    x = mx.random.normal((128, 32))
    with mx.stream(mx.cpu):  # the bias-row path is taken on the CPU (also where a GPU is the default)
        expected = mx.addmm(layer.bias, x, layer.weight.T)
        assert np.array_equal(np.array(layer(x)), np.array(expected))
        assert np.array_equal(np.array(mx.compile(layer)(x)), np.array(expected))


def test_relu_mlp_gradient_has_no_bool_to_float_kernel():
    """The fused ReLU's gradient selects with ``where``: no ``cotangent * astype(y > 0)`` kernel,
    which MLX's CPU backend runs one element at a time."""
    mlp = Mlp(*create_mlp(4, 2, [32, 32], nn.ReLU))
    x = mx.random.normal((16, 4))
    mx.eval(mlp.parameters(), x)  # the graph below is then the gradient's only

    def loss(module, inputs):
        return mx.mean(mx.square(module(inputs)))

    grads = mx.compile(lambda inputs: nn.value_and_grad(mlp, loss)(mlp, inputs)[1])(x)
    dot = io.StringIO()
    mx.export_to_dot(dot, *[g for _, g in tree_flatten(grads)])
    labels = re.findall(r'label ="([^"]+)"', dot.getvalue())
    assert sum("GreaterSelect" in label for label in labels) == 2  # one per hidden layer
    assert not any("Greater" in label and "AsType" in label for label in labels), labels


@pytest.mark.parametrize("shape", [(6,), (3, 5, 6)])
def test_fused_layers_take_any_leading_shape(shape):
    """A single observation ``[in]`` or a sequence batch ``[B, T, in]``: same values and gradients
    as the generic layers (the fused backward passes work on rows)."""
    mx.random.seed(7)

    def loss(module, inputs):
        return mx.sum(mx.square(module(inputs)))

    for activation in (nn.ReLU, nn.Tanh):
        mlp = Mlp(*create_mlp(6, 3, [8], activation))
        reference = nn.Sequential(nn.Linear(6, 8), activation(), nn.Linear(8, 3))
        reference.update(mlp.parameters())
        x = mx.random.normal(shape)
        assert mlp(x).shape == (*shape[:-1], 3)
        np.testing.assert_allclose(np.array(mlp(x)), np.array(reference(x)), rtol=1e-5, atol=1e-6)
        got = dict(tree_flatten(nn.value_and_grad(mlp, loss)(mlp, x)[1]))
        expected = dict(tree_flatten(nn.value_and_grad(reference, loss)(reference, x)[1]))
        for name, value in expected.items():
            np.testing.assert_allclose(np.array(got[name]), np.array(value), rtol=1e-4, atol=1e-5, err_msg=name)
        input_grad = mx.grad(partial(loss, mlp))(x)
        expected_input_grad = mx.grad(partial(loss, reference))(x)
        np.testing.assert_allclose(np.array(input_grad), np.array(expected_input_grad), rtol=1e-4, atol=1e-5)


def test_mlp_runs_other_activations_layer_by_layer():
    mx.random.seed(4)
    mlp = Mlp(*create_mlp(3, 2, [8], nn.SiLU))
    x = mx.random.normal((6, 3))
    layer_by_layer = mlp.layers[2](nn.silu(mlp.layers[0](x)))
    np.testing.assert_allclose(np.array(mlp(x)), np.array(layer_by_layer), rtol=1e-6, atol=1e-7)
