"""RewardHead / ValueHead / MTPHead: init, gradients, state dicts; MTP targets, mask and loss."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_baselines3.world_models import MTPHead, RewardHead, TwoHot, ValueHead, mtp_loss, mtp_targets
from mlx_baselines3.world_models.mtp import mtp_loss_per_offset

D = 12
SMALL = dict(hidden_sizes=(16, 16), two_hot=TwoHot(num_bins=41, low=-8.0, high=8.0))


def grads_of(head, h, y):
    return dict(tree_flatten(nn.value_and_grad(head, lambda m: mx.mean(m.loss(h, y)))(head)[1]))


def features(shape, seed=0):
    return mx.array(np.random.default_rng(seed).normal(size=(*shape, D)).astype(np.float32))


@pytest.mark.parametrize("cls", [RewardHead, ValueHead])
@pytest.mark.parametrize("space", ["symlog", "raw"])
def test_zero_init_predicts_exact_zero_and_trunk_waits_one_step(cls, space):
    mx.random.seed(0)
    head = cls(D, hidden_sizes=(16, 16), two_hot=TwoHot(num_bins=41, low=-8.0, high=8.0, space=space))
    h = features((8,))
    y = mx.array(np.linspace(-5, 5, 8).astype(np.float32))
    assert np.all(np.array(head.predict(h)) == 0.0)
    grads = grads_of(head, h, y)
    assert np.abs(np.array(grads["out.weight"])).max() > 0
    trunk = {k: v for k, v in grads.items() if k.startswith("trunk.")}
    assert trunk and all(np.all(np.array(g) == 0.0) for g in trunk.values())
    # once the output layer has moved, the trunk gets a gradient
    opt = optim.Adam(learning_rate=1e-2)
    opt.update(head, nn.value_and_grad(head, lambda m: mx.mean(m.loss(h, y)))(head)[1])
    grads = grads_of(head, h, y)
    assert all(np.abs(np.array(g)).max() > 0 for k, g in grads.items() if k.startswith("trunk."))


def test_normal_init_trains_trunk_from_the_first_step_and_starts_small():
    mx.random.seed(1)
    head = RewardHead(D, output_init="normal", output_std=0.01, **SMALL)
    h = features((8,))
    pred = np.array(head.predict(h))
    assert np.all(pred != 0.0) and np.abs(pred).max() < 0.5
    grads = grads_of(head, h, mx.ones((8,)))
    assert all(np.abs(np.array(g)).max() > 0 for g in grads.values())
    weight = np.array(head.out.weight)
    assert 0.005 < weight.std() < 0.02 and np.all(np.array(head.out.bias) == 0)
    with pytest.raises(ValueError, match="output_init"):
        RewardHead(D, output_init="xavier", **SMALL)  # type: ignore[arg-type]


def test_head_parameters_and_options():
    head = RewardHead(D, hidden_sizes=(16, 8), activation_fn=nn.ReLU, norm=False, two_hot=TwoHot(num_bins=11))
    names = dict(tree_flatten(head.trainable_parameters()))
    assert sorted(names) == sorted(
        [
            "trunk.layers.0.weight",
            "trunk.layers.0.bias",
            "trunk.layers.2.weight",
            "trunk.layers.2.bias",
            "out.weight",
            "out.bias",
        ]
    )  # no bins among the parameters
    assert isinstance(head.trunk.layers[1], nn.ReLU)
    normed = ValueHead(D, **SMALL)
    assert any(isinstance(layer, nn.RMSNorm) for layer in normed.trunk.layers)
    assert normed(features((3, 5))).shape == (3, 5, 41)
    assert normed.predict(features((3, 5))).shape == (3, 5)
    bare = ValueHead(D, hidden_sizes=(), two_hot=TwoHot(num_bins=7))
    assert sorted(dict(tree_flatten(bare.parameters()))) == ["out.bias", "out.weight"]
    with pytest.raises(ValueError, match="last axis 12"):
        normed(mx.zeros((3, 5)))
    with pytest.raises(ValueError, match="hidden_sizes"):
        ValueHead(D, hidden_sizes=(0,))


@pytest.mark.parametrize("cls", [RewardHead, MTPHead])
def test_state_dict_roundtrip_and_strict_load(cls):
    args = (D, 3) if cls is MTPHead else (D,)
    mx.random.seed(2)
    src = cls(*args, output_init="normal", **SMALL)
    dst = cls(*args, **SMALL)
    state = {k: np.array(v) for k, v in src.state_dict().items()}  # as read back from a file
    dst.load_state_dict(state)
    h = features((2, 4))
    np.testing.assert_array_equal(np.array(dst(h)), np.array(src(h)))

    before = {k: np.array(v) for k, v in dst.state_dict().items()}
    missing = dict(state)
    del missing["out.bias"]
    with pytest.raises(ValueError, match="missing keys.*out.bias"):
        dst.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected keys.*bins"):
        dst.load_state_dict({**state, "bins": np.zeros(41)})
    bad = {**state, "out.weight": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match=r"mis-shaped keys.*out.weight"):
        dst.load_state_dict(bad)
    for k, v in dst.state_dict().items():  # a failed load changed nothing
        np.testing.assert_array_equal(np.array(v), before[k])
    dst.load_state_dict(missing, strict=False)


def reference_targets(x, horizon):
    b, t = x.shape
    targets = np.zeros((b, t, horizon), x.dtype)
    mask = np.zeros((b, t, horizon), bool)
    for i in range(t):
        for n in range(1, horizon + 1):
            if i + n < t:
                targets[:, i, n - 1] = x[:, i + n]
                mask[:, i, n - 1] = True
    return targets, mask


@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_mtp_targets_on_arange(steps):
    x = np.arange(2 * steps, dtype=np.float32).reshape(2, steps)
    targets, mask = mtp_targets(mx.array(x), 4)
    assert targets.shape == (2, steps, 4) and mask.shape == (2, steps, 4) and mask.dtype == mx.bool_
    ref_t, ref_m = reference_targets(x, 4)
    np.testing.assert_array_equal(np.array(mask), ref_m)
    np.testing.assert_array_equal(np.array(targets), ref_t)
    if steps == 8:  # spelled out: offset n at time t is x[t + n]
        assert np.array(targets)[0, 2].tolist() == [3, 4, 5, 6]
        assert np.array(mask)[0, 5].tolist() == [True, True, False, False]


@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_mtp_loss_is_sum_of_masked_means_and_finite(steps):
    two_hot = TwoHot(num_bins=41, low=-8.0, high=8.0)
    rng = np.random.default_rng(steps)
    x = rng.normal(0, 3, (3, steps)).astype(np.float32)
    logits = mx.array(rng.normal(0, 2, (3, steps, 4, 41)).astype(np.float32))
    targets, mask = mtp_targets(mx.array(x), 4)
    per_entry = np.array(two_hot.loss(logits, targets))
    ref_t, ref_m = reference_targets(x, 4)
    expected = [per_entry[..., n][ref_m[..., n]].mean() if ref_m[..., n].any() else 0.0 for n in range(4)]
    per_offset = np.array(mtp_loss_per_offset(logits, targets, mask, two_hot))
    np.testing.assert_allclose(per_offset, expected, rtol=1e-6)
    total = mtp_loss(logits, targets, mask, two_hot)
    assert np.isfinite(float(total)) and float(total) == pytest.approx(sum(expected), rel=1e-6)

    grad = np.array(mx.grad(lambda z: mtp_loss(z, targets, mask, two_hot))(logits))
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~ref_m] == 0.0)  # no gradient into masked slots
    for n in range(4):  # every offset with data gets a gradient, also when T <= L
        assert (np.abs(grad[..., n, :]).max() > 0) == ref_m[..., n].any()


def test_mtp_loss_masks_non_finite_entries_and_weights():
    two_hot = TwoHot(num_bins=41, low=-8.0, high=8.0)
    targets, mask = mtp_targets(mx.zeros((1, 2)), 2)
    logits = mx.zeros((1, 2, 2, 41))
    bad_targets = mx.where(mask, targets, mx.array(float("nan")))
    assert np.isfinite(float(mtp_loss(logits, bad_targets, mask, two_hot)))
    with pytest.raises(ValueError, match="must both have shape"):
        mtp_loss(logits, targets[:, :1], mask, two_hot)


def test_mtp_head_one_output_layer_per_offset():
    mx.random.seed(3)
    head = MTPHead(D, horizon=4, **SMALL)
    assert head.out.weight.shape == (4, 41, 16) and head.out.bias.shape == (4, 41)
    h = features((2, 2), seed=4)  # T = 2 < L = 4: only offset 1 has a target
    logits = head(h)
    assert logits.shape == (2, 2, 4, 41)
    assert np.all(np.array(head.predict(h)) == 0.0)
    x = mx.array([[1.0, 2.0], [3.0, -4.0]])
    grads = dict(tree_flatten(nn.value_and_grad(head, lambda m: m.loss(h, x))(head)[1]))
    gw = np.array(grads["out.weight"])
    assert np.abs(gw[0]).max() > 0 and np.all(gw[1:] == 0.0)
    # offset l only reads weight[l]: perturbing offset 2's layer changes only offset 2's logits
    mx.random.seed(5)
    normal = MTPHead(D, horizon=4, output_init="normal", **SMALL)
    base = np.array(normal(h))
    w = np.array(normal.out.weight)
    w[2] += 1.0
    normal.out.weight = mx.array(w)
    moved = np.abs(np.array(normal(h)) - base).max(axis=(0, 1, 3))
    assert moved[2] > 0 and np.all(moved[[0, 1, 3]] == 0)


def test_package_imports_nothing_else_from_mlx_baselines3():
    import ast
    import pathlib

    import mlx_baselines3.world_models as wm

    for path in pathlib.Path(wm.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("mlx_baselines3") or name.startswith(
                    "mlx_baselines3.world_models"
                ), f"{path.name} imports {name}"
