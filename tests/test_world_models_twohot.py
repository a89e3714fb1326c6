"""symlog / symexp and TwoHot: encode, decode, loss, against numpy references."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_baselines3.world_models import TwoHot, symexp, symlog, twohot_value_loss, twohot_values


def np_symlog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def np_symexp(x):
    return np.sign(x) * np.expm1(np.abs(x))


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


EDGE_VALUES = np.array([0.0, 1e-6, -1e-6, 1.0, -1.0, 1e6, -1e6], dtype=np.float32)


def test_symlog_symexp_roundtrip_and_reference():
    x = mx.array(EDGE_VALUES)
    y = symlog(x)
    assert y.dtype == mx.float32
    np.testing.assert_allclose(np.array(y), np_symlog(EDGE_VALUES.astype(np.float64)), rtol=1e-6)
    back = np.array(symexp(y))
    np.testing.assert_allclose(back, EDGE_VALUES, rtol=1e-6, atol=0)
    assert back[0] == 0.0
    # log1p form: tiny inputs keep full precision (log(1 + x) in float32 would give 0 or 1.19e-6)
    np.testing.assert_allclose(np.array(symlog(mx.array([1e-7], dtype=mx.float32))), [1e-7], rtol=1e-6)
    assert symlog(mx.array([1, -2])).dtype == mx.float32


@pytest.mark.parametrize("num_bins", [255, 256])
def test_bins_symlog_and_raw(num_bins):
    grid = np.linspace(-20.0, 20.0, num_bins)
    sym = np.array(TwoHot(num_bins).bins)
    raw = np.array(TwoHot(num_bins, space="raw").bins)
    np.testing.assert_allclose(sym, grid, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(raw, np_symexp(grid), rtol=1e-5)
    for bins in (sym, raw):
        assert np.array_equal(bins, -bins[::-1])  # exactly antisymmetric
        assert np.all(np.diff(bins) > 0)
    if num_bins % 2:
        assert sym[num_bins // 2] == 0.0 and raw[num_bins // 2] == 0.0


def test_bins_are_a_parameter_range():
    two_hot = TwoHot(num_bins=41, low=-5.0, high=3.0)
    np.testing.assert_allclose(np.array(two_hot.bins), np.linspace(-5, 3, 41), rtol=1e-6, atol=1e-6)
    assert float(two_hot.decode_probs(two_hot.encode(mx.array([1e9])))[0]) == pytest.approx(np_symexp(3.0))


def test_encode_hand_worked_example():
    # bins (symlog space) = [-2, -1, 0, 1, 2]; symlog(y) = 0.25 -> 0.75 on bin 0 and 0.25 on bin 1
    two_hot = TwoHot(num_bins=5, low=-2.0, high=2.0)
    y = mx.array([np_symexp(0.25), np_symexp(-1.5)], dtype=mx.float32)
    np.testing.assert_allclose(
        np.array(two_hot.encode(y)), [[0, 0, 0.75, 0.25, 0], [0.5, 0.5, 0, 0, 0]], rtol=1e-5, atol=1e-6
    )
    raw = TwoHot(
        num_bins=5, low=-2.0, high=2.0, space="raw"
    )  # bins = symexp([-2..2]) = [.., -e+1, 0, e-1, ..]
    b1 = np.e - 1
    np.testing.assert_allclose(
        np.array(raw.encode(mx.array([0.25 * b1]))), [[0, 0, 0.75, 0.25, 0]], rtol=1e-5
    )


@pytest.mark.parametrize("space", ["symlog", "raw"])
def test_encode_rows_are_two_hot(space):
    two_hot = TwoHot(space=space)
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(0, 10, 200), rng.normal(0, 1e6, 50), [0.0, 1e12, -1e12, 4.85e8]])
    enc = np.array(two_hot.encode(mx.array(y.astype(np.float32))))
    assert enc.shape == (y.size, 255)
    np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-6)
    assert np.all(enc >= 0)
    assert np.all((enc > 0).sum(-1) <= 2)
    nz = [np.flatnonzero(row) for row in enc]
    assert all(len(i) < 2 or i[1] == i[0] + 1 for i in nz)  # neighbouring bins


@pytest.mark.parametrize("space", ["symlog", "raw"])
def test_encode_decode_roundtrip(space):
    two_hot = TwoHot(space=space)
    bins = np.array(two_hot.bins)
    raw_bins = np_symexp(bins.astype(np.float64)).astype(np.float32) if space == "symlog" else bins
    # exact bin values -> a one-hot row on that bin
    sel = raw_bins[[0, 3, 100, 127, 128, 200, 254]]
    enc = np.array(two_hot.encode(mx.array(sel)))
    np.testing.assert_array_equal(enc.argmax(-1), [0, 3, 100, 127, 128, 200, 254])
    assert np.all(enc.max(-1) > 1 - 1e-4)
    np.testing.assert_allclose(np.array(two_hot.decode_probs(mx.array(enc))), sel, rtol=1e-4, atol=1e-6)
    # 0 exactly, in-range values, and clamped out-of-range values
    rng = np.random.default_rng(1)
    y = np.concatenate([[0.0], rng.normal(0, 50, 100), [3.0e4, -7.5e5]]).astype(np.float32)
    enc = two_hot.encode(mx.array(y))
    dec = np.array(two_hot.decode_probs(enc))
    assert dec[0] == 0.0
    np.testing.assert_allclose(dec, y, rtol=2e-5, atol=1e-6)
    # decode() of log(encode) (logits with -inf) gives the same values
    np.testing.assert_allclose(np.array(two_hot.decode(mx.log(enc))), y, rtol=2e-5, atol=1e-6)
    top = float(np_symexp(20.0))
    clamped = np.array(two_hot.decode_probs(two_hot.encode(mx.array([1e12, -1e30, 1e9], dtype=mx.float32))))
    np.testing.assert_allclose(clamped, [top, -top, top], rtol=1e-5)


@pytest.mark.parametrize("num_bins", [255, 256])
@pytest.mark.parametrize("space", ["symlog", "raw"])
def test_uniform_and_mirrored_probabilities_decode_to_exact_zero(space, num_bins):
    two_hot = TwoHot(num_bins, space=space)
    assert np.all(np.array(two_hot.decode(mx.zeros((4, num_bins)))) == 0.0)
    assert np.all(np.array(two_hot.decode(mx.full((2, num_bins), 7.3))) == 0.0)
    half = np.random.default_rng(2).normal(size=(3, num_bins // 2)).astype(np.float32)
    mid = np.zeros((3, num_bins % 2), np.float32)
    mirrored = np.concatenate([half, mid, half[:, ::-1]], axis=-1)
    assert np.all(np.array(two_hot.decode(mx.array(mirrored))) == 0.0)


def test_decode_matches_numpy_expectation():
    for space in ("symlog", "raw"):
        two_hot = TwoHot(space=space)
        logits = np.random.default_rng(3).normal(0, 3, (5, 255)).astype(np.float32)
        probs = np.exp(np_log_softmax(logits.astype(np.float64)))
        expected = probs @ np.array(two_hot.bins, dtype=np.float64)
        if space == "symlog":
            expected = np_symexp(expected)
        np.testing.assert_allclose(np.array(two_hot.decode(mx.array(logits))), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_loss_value_and_gradient_match_reference(scale):
    two_hot = TwoHot()
    rng = np.random.default_rng(4)
    logits = (np.sign(rng.normal(size=(6, 255))) * scale).astype(np.float32)
    y = np.array([0.0, 1.0, -2.5, 1e3, 1e12, -40.0], np.float32)
    target = np.array(two_hot.encode(mx.array(y)), dtype=np.float64)
    expected = -(target * np_log_softmax(logits.astype(np.float64))).sum(-1)
    loss = np.array(two_hot.loss(mx.array(logits), mx.array(y)))
    assert np.all(np.isfinite(loss))
    # float32 spacing at 1e4 is ~1e-3: the log-softmax of such logits is exact only to that
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=scale * 1e-7)

    grad_logits, grad_y = mx.grad(lambda z, t: mx.sum(two_hot.loss(z, t)), argnums=(0, 1))(
        mx.array(logits), mx.array(y)
    )
    grad_logits = np.array(grad_logits)
    assert np.all(np.isfinite(grad_logits))
    softmax = np.exp(np_log_softmax(logits.astype(np.float64)))
    np.testing.assert_allclose(grad_logits, softmax - target, atol=1e-6)
    assert np.all(np.array(grad_y) == 0.0)  # targets carry no gradient


def test_twohot_value_loss_and_values():
    two_hot = TwoHot()
    logits = mx.array(np.random.default_rng(5).normal(size=(8, 255)).astype(np.float32))
    returns = mx.array(np.linspace(-100, 100, 8).astype(np.float32))
    expected = np.mean(np.array(two_hot.loss(logits, returns)))
    assert float(twohot_value_loss(logits, returns, two_hot)) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(np.array(twohot_values(logits, two_hot)), np.array(two_hot.decode(logits)))
    with pytest.raises(ValueError, match="targets of shape"):
        twohot_value_loss(logits, returns[:, None], two_hot)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="space"):
        TwoHot(space="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_bins"):
        TwoHot(num_bins=1)
    with pytest.raises(ValueError, match="low < high"):
        TwoHot(low=1.0, high=1.0)
    with pytest.raises(ValueError, match="num_bins=255"):
        TwoHot().decode(mx.zeros((2, 10)))
    with pytest.raises(ValueError, match="num_bins=255"):
        TwoHot().loss(mx.zeros((2, 10)), mx.zeros((2,)))


@pytest.mark.parametrize(
    "two_hot",
    [
        TwoHot(),
        TwoHot(space="raw"),
        TwoHot(num_bins=50, low=-3.0, high=7.0),
        TwoHot(num_bins=1001, low=-0.25, high=0.25),
    ],
    ids=["symlog", "raw", "asymmetric", "fine-grid"],
)
def test_neighbour_bins_match_searchsorted(two_hot):
    bins = np.array(two_hot.bins)
    raw_bins = np_symexp(bins.astype(np.float64)) if two_hot.space == "symlog" else bins.astype(np.float64)
    rng = np.random.default_rng(11)
    y = np.concatenate(
        [
            raw_bins,
            raw_bins * (1 + 1e-6),
            raw_bins * (1 - 1e-6),
            rng.normal(0, 30, 500),
            [1e15, -1e15, np.nan],
        ]
    ).astype(np.float32)
    below, above, w_lo, w_hi = (np.array(a) for a in two_hot.neighbours(mx.array(y)))
    yb = np.clip(np.array(two_hot.to_bin_space(mx.array(y))), bins[0], bins[-1])
    ok = np.isfinite(yb)
    ref = np.clip(np.searchsorted(bins, yb[ok], side="right") - 1, 0, bins.size - 1)
    np.testing.assert_array_equal(below[ok], ref)
    np.testing.assert_array_equal(above[ok], np.minimum(ref + 1, bins.size - 1))
    np.testing.assert_allclose(
        w_lo[ok] * bins[below[ok]] + w_hi[ok] * bins[above[ok]], yb[ok], rtol=1e-5, atol=1e-6
    )
    assert 0 <= below[~ok].min() and below[~ok].max() < bins.size  # NaN: garbage but in-bounds indices
