"""The CPU-tuned Adam/AdamW give the same updates as MLX's (and PyTorch's) rule."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_baselines3.common.optimizers import Adam, AdamW
from mlx_baselines3.common.policies import make_optimizer


def numpy_adam(param, grads, lr, b1, b2, eps, weight_decay=0.0):
    m = np.zeros_like(param)
    v = np.zeros_like(param)
    for step, grad in enumerate(grads, start=1):
        param = param * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        param = param - lr / (1 - b1**step) * m / (np.sqrt(v) / np.sqrt(1 - b2**step) + eps)
    return param


@pytest.mark.parametrize("cls,weight_decay", [(Adam, 0.0), (AdamW, 0.01)])
@pytest.mark.parametrize("compiled", [False, True])
def test_matches_numpy_reference_and_mlx(cls, weight_decay, compiled):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4)]
    kwargs = dict(learning_rate=0.01, betas=[0.9, 0.99], eps=1e-5, bias_correction=True)
    if cls is AdamW:
        kwargs["weight_decay"] = weight_decay
    ours = cls(**kwargs)
    theirs = (optim.AdamW if cls is AdamW else optim.Adam)(**kwargs)
    results = []
    for opt in (ours, theirs):
        layer = nn.Linear(3, 5, bias=False)
        layer.weight = mx.array(start)
        state = [layer.state, opt.state]

        def step(grad, layer=layer, opt=opt):
            opt.update(layer, {"weight": grad})

        fn = mx.compile(step, inputs=state, outputs=state) if compiled else step
        for grad in grads:
            fn(mx.array(grad))
            mx.eval(state)
        results.append(np.array(layer.weight))
    reference = numpy_adam(start.astype(np.float64), grads, 0.01, 0.9, 0.99, 1e-5, weight_decay)
    np.testing.assert_allclose(results[0], reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-7)


def test_make_optimizer_uses_the_fast_equivalent_with_pytorch_defaults():
    opt = make_optimizer(optim.Adam, 3e-4, {"eps": 1e-5})
    assert isinstance(opt, Adam) and isinstance(opt, optim.Adam)
    assert opt.bias_correction and opt.eps == 1e-5
    layer = nn.Linear(2, 2)
    opt.init(layer.trainable_parameters())
    assert sorted(k for k, _ in tree_flatten(opt.state)) == sorted(
        ["step", "learning_rate", "weight.m", "weight.v", "bias.m", "bias.v"])


def _subnormal_after_idle_steps(opt, n_steps):
    layer = nn.Linear(4, 4)
    opt.init(layer.trainable_parameters())
    state = [layer.state, opt.state]
    step = mx.compile(lambda g: opt.update(layer, g), inputs=state, outputs=state)
    step({"weight": mx.full((4, 4), 1e-3), "bias": mx.zeros((4,))})
    zero = {"weight": mx.zeros((4, 4)), "bias": mx.zeros((4,))}
    for _ in range(n_steps):
        step(zero)
    mx.eval(state)
    tiny = np.finfo(np.float32).tiny
    return [name for name, value in tree_flatten(opt.state)
            if ((np.abs(np.array(value, np.float32)) > 0) & (np.abs(np.array(value, np.float32)) < tiny)).any()]


@pytest.mark.parametrize("cls,kwargs,n_steps", [(optim.Adam, None, 800), (optim.RMSprop, {"alpha": 0.9}, 750)])
def test_moments_of_idle_parameters_never_become_subnormal(cls, kwargs, n_steps):
    """A dead unit's moments decay geometrically into float32's subnormal range (~100x slower on x86)
    after these many steps with MLX's own optimizers; ours flush them to 0 first."""
    assert _subnormal_after_idle_steps(cls(learning_rate=1e-3, **(kwargs or {})), n_steps)  # the hazard is real
    assert _subnormal_after_idle_steps(make_optimizer(cls, 1e-3, kwargs), n_steps) == []



def test_flush_tiny_sets_tiny_moments_to_exactly_zero():
    """Not merely out of the subnormal range: a moment left at a tiny *normal* value (~4e-37, as an
    add-and-subtract flush leaves it) still makes ``lr * m`` subnormal inside every later Adam update,
    which slowed TD3 training from ~125 to ~52 FPS after 2000 steps."""
    from mlx_baselines3.common.optimizers import TINY, flush_tiny

    values = np.array([1e-45, 1e-39, 3.76e-37, 1e-31, -5e-31, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(np.array(flush_tiny(mx.array(values))), 0.0)
    normal = np.array([TINY * 1.01, -1e-20, 3e-8, 0.5, -7.0, 1e10], dtype=np.float32)
    np.testing.assert_array_equal(np.array(flush_tiny(mx.array(normal))), normal)


def numpy_rmsprop(param, grads, lr, alpha, eps):
    v = np.zeros_like(param)
    for grad in grads:
        v = alpha * v + (1 - alpha) * grad**2
        param = param - lr * grad / (np.sqrt(v) + eps)
    return param


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "sgd"])
def test_scaled_update_is_the_update_of_the_scaled_gradients(name):
    """Gradient clipping's factor, applied inside the update (or to the gradients for other optimizers)."""
    from mlx_baselines3.common.compile import scaled_update
    from mlx_baselines3.common.optimizers import RMSprop

    rng = np.random.default_rng(1)
    start = rng.normal(size=(4, 6)).astype(np.float32)
    grads = [rng.normal(scale=3.0, size=(4, 6)).astype(np.float32) for _ in range(5)]
    scales = [0.1, 1.0, 0.37, 0.02, 0.8]
    scaled = [g.astype(np.float64) * s for g, s in zip(grads, scales)]
    p64 = start.astype(np.float64)
    if name == "adam":
        opt, reference = Adam(learning_rate=0.01, eps=1e-8), numpy_adam(p64, scaled, 0.01, 0.9, 0.999, 1e-8)
    elif name == "adamw":
        opt = AdamW(learning_rate=0.01, eps=1e-8, weight_decay=0.05)
        reference = numpy_adam(p64, scaled, 0.01, 0.9, 0.999, 1e-8, 0.05)
    elif name == "rmsprop":
        opt, reference = RMSprop(learning_rate=0.01, alpha=0.99, eps=1e-5), numpy_rmsprop(p64, scaled, 0.01, 0.99, 1e-5)
    else:
        opt, reference = optim.SGD(learning_rate=0.5), p64 - 0.5 * sum(scaled)
    if isinstance(opt, (Adam, AdamW)):
        opt.bias_correction = True
    layer = nn.Linear(6, 4, bias=False)
    layer.weight = mx.array(start)
    state = [layer.state, opt.state]

    def step(grad, scale):
        scaled_update(layer, opt, {"weight": grad}, scale)

    fn = mx.compile(step, inputs=state, outputs=state)
    for grad, scale in zip(grads, scales):
        fn(mx.array(grad), mx.array(scale, dtype=mx.float32))
        mx.eval(state)
    np.testing.assert_allclose(np.array(layer.weight), reference, rtol=1e-5, atol=1e-6)
    if hasattr(opt, "update_scaled"):
        assert opt._gradient_scale is None  # the scale does not leak into a later plain update


def test_scaled_update_with_no_scale_is_bit_identical_to_update():
    from mlx_baselines3.common.compile import scaled_update

    rng = np.random.default_rng(2)
    grad = mx.array(rng.normal(size=(3, 3)).astype(np.float32))
    results = []
    for scaled in (False, True):
        layer = nn.Linear(3, 3, bias=False)
        layer.weight = mx.array(np.eye(3, dtype=np.float32))
        opt = Adam(learning_rate=0.1)
        if scaled:
            scaled_update(layer, opt, {"weight": grad}, None)
        else:
            opt.update(layer, {"weight": grad})
        results.append(np.array(layer.weight))
    np.testing.assert_array_equal(results[0], results[1])
