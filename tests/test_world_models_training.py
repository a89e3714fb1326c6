"""RunningRMS, PercentileReturnNormalizer, lambda_returns, EMA copies, and compiled training steps."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_baselines3.world_models import (
    MTPHead,
    PercentileReturnNormalizer,
    RewardHead,
    RunningRMS,
    TwoHot,
    ValueHead,
    ema_update,
    lambda_returns,
    slow_copy,
    symexp,
    symlog,
    twohot_value_loss,
    twohot_values,
)


def np_running_rms(losses, decay=0.95, eps=1e-8):
    ema, out = 0.0, []
    for count, x in enumerate(losses, start=1):
        x = np.asarray(x, np.float64)
        ema = decay * ema + (1 - decay) * np.mean(x**2)
        out.append(x / max(np.sqrt(ema / (1 - decay**count)), eps))
    return out


def test_running_rms_matches_numpy_and_first_call_is_well_scaled():
    rms = RunningRMS(decay=0.95)
    losses = [1000.0, 3.0, 250.0, 0.5, 40.0]
    outs = [float(rms(mx.array(v))) for v in losses]
    assert outs[0] == pytest.approx(1.0, rel=1e-6)  # debiased: first loss / its own RMS
    np.testing.assert_allclose(outs, np_running_rms(losses), rtol=1e-5)
    assert int(rms.state["count"]) == 5
    # vector losses: the EMA tracks their mean square
    vec = RunningRMS(decay=0.9)
    batches = [np.array([1.0, -3.0]), np.array([0.5, 2.0])]
    got = [np.array(vec(mx.array(b.astype(np.float32)))) for b in batches]
    for g, e in zip(got, np_running_rms(batches, decay=0.9)):
        np.testing.assert_allclose(g, e, rtol=1e-5)
    zero = RunningRMS()
    assert float(zero(mx.array(0.0))) == 0.0  # no 0/0
    assert float(RunningRMS().rms()) == 1.0  # before any update


def test_running_rms_denominator_carries_no_gradient():
    rms = RunningRMS(decay=0.5)
    rms(mx.array(2.0))
    scale = float(rms.rms())
    snapshot = rms.state_dict()
    grad = mx.grad(lambda x: rms(x))(mx.array(4.0))
    rms.load_state_dict(snapshot)
    expected_scale = float(np.sqrt((0.5 * 0.5 * 4 + 0.5 * 16) / (1 - 0.25)))
    assert float(grad) == pytest.approx(1.0 / expected_scale, rel=1e-6)
    assert scale == pytest.approx(2.0)


@pytest.mark.parametrize("norm_cls", [RunningRMS, PercentileReturnNormalizer])
def test_normaliser_save_load_reproduces_next_output(norm_cls):
    rng = np.random.default_rng(0)
    norm = norm_cls()
    for _ in range(3):
        norm(mx.array(rng.normal(0, 5, (4, 8)).astype(np.float32)))
    saved = {k: np.array(v) for k, v in norm.state_dict().items()}  # what a file holds
    fresh = norm_cls()
    fresh.load_state_dict(saved)
    x = mx.array(rng.normal(0, 5, (4, 8)).astype(np.float32))
    a, b = norm(x), fresh(x)
    for u, v in zip(a if isinstance(a, tuple) else [a], b if isinstance(b, tuple) else [b]):
        np.testing.assert_array_equal(np.array(u), np.array(v))
    key = next(iter(saved))
    with pytest.raises(ValueError, match=f"missing keys.*{key}"):
        fresh.load_state_dict({k: v for k, v in saved.items() if k != key})
    with pytest.raises(ValueError, match="unexpected keys.*extra"):
        fresh.load_state_dict({**saved, "extra": np.zeros(())})
    with pytest.raises(ValueError, match=f"mis-shaped keys.*{key}"):
        fresh.load_state_dict({**saved, key: np.zeros(3)})


@pytest.mark.parametrize("size", [1, 2, 7, 100, 1001])
def test_percentiles_match_numpy_linear_interpolation(size):
    x = np.random.default_rng(size).normal(0, 10, size).astype(np.float32)
    norm = PercentileReturnNormalizer(rate=1.0, limit=1e-3)
    offset, scale = norm(mx.array(x.reshape(1, -1)))
    lo, hi = np.percentile(x.astype(np.float64), [5.0, 95.0])
    assert float(offset) == pytest.approx(lo, rel=1e-5, abs=1e-5)
    assert float(scale) == pytest.approx(max(1e-3, hi - lo), rel=1e-5, abs=1e-5)


def test_percentile_normaliser_ema_against_numpy():
    rng = np.random.default_rng(7)
    norm = PercentileReturnNormalizer(rate=0.01, low=5.0, high=95.0, limit=1.0)
    lo = hi = 0.0
    for i in range(30):
        batch = rng.normal(i, 20, (16, 15)).astype(np.float32)
        offset, scale = norm(mx.array(batch))
        qlo, qhi = np.percentile(batch.astype(np.float64), [5.0, 95.0])
        lo, hi = 0.99 * lo + 0.01 * qlo, 0.99 * hi + 0.01 * qhi
        assert float(offset) == pytest.approx(lo, rel=1e-4, abs=1e-5)
        assert float(scale) == pytest.approx(max(1.0, hi - lo), rel=1e-4)
    assert hi - lo > 1.0  # the range branch of max() was exercised
    small = PercentileReturnNormalizer(rate=0.5)
    assert float(small(mx.array([0.0, 0.1, 0.2]))[1]) == 1.0  # limit branch
    x = mx.array([3.0, -1.0])
    offset, scale = norm.stats()
    np.testing.assert_allclose(
        np.array(norm.normalize(x)), (np.array(x) - float(offset)) / float(scale), rtol=1e-6
    )
    with pytest.raises(ValueError, match="rate"):
        PercentileReturnNormalizer(rate=0.0)
    with pytest.raises(ValueError, match="decay"):
        RunningRMS(decay=1.0)


def np_lambda_returns(r, v, c, gamma, lam):
    b, t = r.shape
    out = np.zeros((b, t))
    nxt = v[:, t]
    for i in reversed(range(t)):
        nxt = r[:, i] + gamma * c[:, i] * ((1 - lam) * v[:, i + 1] + lam * nxt)
        out[:, i] = nxt
    return out


def test_lambda_returns_against_numpy():
    rng = np.random.default_rng(8)
    r = rng.normal(size=(3, 6)).astype(np.float32)
    v = rng.normal(size=(3, 7)).astype(np.float32)
    c = (rng.uniform(size=(3, 6)) > 0.2).astype(np.float32)
    for gamma, lam in [(0.99, 0.95), (0.9, 0.0), (0.97, 1.0)]:
        got = np.array(lambda_returns(mx.array(r), mx.array(v), mx.array(c), gamma, lam))
        np.testing.assert_allclose(got, np_lambda_returns(r, v, c, gamma, lam), rtol=1e-5, atol=1e-6)
    td = np.array(lambda_returns(mx.array(r), mx.array(v), mx.array(c), 0.9, 0.0))
    np.testing.assert_allclose(td, r + 0.9 * c * v[:, 1:], rtol=1e-6)  # lam = 0: one-step TD
    got = lambda_returns(mx.array(r), mx.array(v), mx.array(c), mx.array(0.99), mx.array(0.95))
    np.testing.assert_allclose(np.array(got), np_lambda_returns(r, v, c, 0.99, 0.95), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="bootstrap"):
        lambda_returns(mx.array(r), mx.array(v[:, :6]), mx.array(c), 0.99, 0.95)


def test_ema_update_and_slow_copy():
    mx.random.seed(0)
    online = ValueHead(4, hidden_sizes=(8,), output_init="normal", two_hot=TwoHot(num_bins=5))
    slow = slow_copy(online)
    assert dict(tree_flatten(slow.trainable_parameters())) == {}
    before = {k: np.array(v) for k, v in slow.state_dict().items()}
    online.update({"out": {"bias": online.out.bias + 1.0}})
    assert np.all(np.array(slow.out.bias) == before["out.bias"])  # separate arrays
    ema_update(slow, online, 0.25)
    for k, v in slow.state_dict().items():
        o = np.array(online.state_dict()[k])
        np.testing.assert_allclose(np.array(v), 0.75 * before[k] + 0.25 * o, rtol=1e-6, atol=1e-7)
    ema_update(slow, online, 1.0)
    for k, v in slow.state_dict().items():
        np.testing.assert_array_equal(np.array(v), np.array(online.state_dict()[k]))
    other = ValueHead(4, hidden_sizes=(9,), two_hot=TwoHot(num_bins=5))
    with pytest.raises(ValueError, match=r"mis-shaped.*trunk.layers.0.weight"):
        ema_update(slow, other, 0.1)


class WorldModel(nn.Module):
    def __init__(self, dims, two_hot):
        super().__init__()
        self.reward = RewardHead(dims, hidden_sizes=(16,), two_hot=two_hot)
        self.value = ValueHead(dims, hidden_sizes=(16,), two_hot=two_hot, output_init="normal")
        self.mtp = MTPHead(dims, horizon=3, hidden_sizes=(16,), two_hot=two_hot)


def build(seed):
    mx.random.seed(seed)
    two_hot = TwoHot(num_bins=41, low=-10.0, high=10.0)
    model = WorldModel(6, two_hot)
    slow = slow_copy(model.value)
    opt = optim.Adam(learning_rate=1e-2)
    opt.init(model.trainable_parameters())
    norms = dict(reward=RunningRMS(), mtp=RunningRMS(), ret=PercentileReturnNormalizer(rate=0.1))

    def loss_fn(m, feats, rewards, continues):
        ret = lambda_returns(
            rewards[:, :-1], mx.stop_gradient(slow.predict(feats)), continues[:, :-1], 0.99, 0.95
        )
        offset, scale = norms["ret"](ret)
        terms = {
            "reward": mx.mean(m.reward.loss(feats, rewards)),
            "mtp": m.mtp.loss(feats, rewards),
            "value": twohot_value_loss(m.value(feats[:, :-1]), mx.stop_gradient(ret), two_hot),
        }
        total = norms["reward"](terms["reward"]) + norms["mtp"](terms["mtp"]) + terms["value"]
        terms["scale"] = scale
        terms["pred"] = mx.mean(twohot_values(m.value(feats), two_hot) - symexp(symlog(offset)))
        return total, terms

    def step(feats, rewards, continues):
        (loss, terms), grads = nn.value_and_grad(model, loss_fn)(model, feats, rewards, continues)
        opt.update(model, grads)
        ema_update(slow, model.value, 0.02)
        return loss, terms

    state = [model.state, opt.state, slow.state] + [n.state for n in norms.values()]
    return model, slow, norms, step, state


def test_compiled_step_equals_uncompiled_and_updates_state():
    rng = np.random.default_rng(9)
    batch = (
        mx.array(rng.normal(size=(2, 5, 6)).astype(np.float32)),
        mx.array(rng.normal(0, 3, (2, 5)).astype(np.float32)),
        mx.array((rng.uniform(size=(2, 5)) > 0.1).astype(np.float32)),
    )
    results = {}
    for compiled in (False, True):
        model, slow, norms, step, state = build(seed=1)
        fn = mx.compile(step, inputs=state, outputs=state) if compiled else step
        history = []
        for _ in range(2):
            loss, terms = fn(*batch)
            mx.eval(loss, terms, state)
            history.append(
                {
                    "loss": np.array(loss),
                    **{k: np.array(v) for k, v in terms.items()},
                    **{f"p.{k}": np.array(v) for k, v in tree_flatten(model.parameters())},
                    **{f"slow.{k}": np.array(v) for k, v in slow.state_dict().items()},
                    **{f"{n}.{k}": np.array(v) for n, norm in norms.items() for k, v in norm.state.items()},
                }
            )
        results[compiled] = history
    eager, comp = results[False], results[True]
    for i in range(2):
        assert eager[i].keys() == comp[i].keys()
        for k in eager[i]:
            np.testing.assert_allclose(
                comp[i][k], eager[i][k], rtol=2e-4, atol=1e-6, err_msg=f"step {i}: {k}"
            )
    # the compiled step really updated every piece of state, twice
    assert comp[1]["reward.count"] == 2 and comp[1]["mtp.count"] == 2
    for k in ("p.reward.out.weight", "p.mtp.out.weight", "p.value.out.weight", "slow.out.weight", "ret.high"):
        assert not np.array_equal(comp[0][k], comp[1][k]), k
    assert np.all(np.isfinite(comp[1]["loss"]))
