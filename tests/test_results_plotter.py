"""Tests of mlx_baselines3.common.results_plotter on hand-written Monitor files."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pandas")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from mlx_baselines3.common import results_plotter  # noqa: E402
from mlx_baselines3.common.results_plotter import (  # noqa: E402
    EPISODES_WINDOW,
    X_EPISODES,
    X_TIMESTEPS,
    X_WALLTIME,
    plot_curves,
    plot_results,
    ts2xy,
    window_func,
)


def write_monitor(folder, rewards, lengths, times, t_start=1000.0, name="0.monitor.csv"):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["#" + json.dumps({"t_start": t_start, "env_id": "Test-v0"}), "r,l,t"]
    lines += [f"{r},{n},{t}" for r, n, t in zip(rewards, lengths, times)]
    (folder / name).write_text("\n".join(lines) + "\n")


def test_window_func_matches_manual_moving_average():
    x = np.arange(10.0)
    y = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 0.0, 7.0, 1.0, 2.0, 9.0])
    x_out, y_out = window_func(x, y, 3, np.mean)
    expected = [np.mean(y[i : i + 3]) for i in range(8)]
    np.testing.assert_allclose(y_out, expected)
    np.testing.assert_array_equal(x_out, x[2:])
    _, y_max = window_func(x, y, 4, np.max)
    np.testing.assert_array_equal(y_max, [max(y[i : i + 4]) for i in range(7)])
    with pytest.raises(ValueError, match="window"):
        window_func(x, y, 11, np.mean)


def test_ts2xy_axes(tmp_path):
    write_monitor(tmp_path, rewards=[1.0, 2.0, 3.0], lengths=[10, 20, 5], times=[3600.0, 7200.0, 9000.0])
    data = results_plotter.load_results(str(tmp_path))
    x, y = ts2xy(data, X_TIMESTEPS)
    np.testing.assert_array_equal(x, [10, 30, 35])
    np.testing.assert_array_equal(y, [1.0, 2.0, 3.0])
    x, _ = ts2xy(data, X_EPISODES)
    np.testing.assert_array_equal(x, [0, 1, 2])
    x, _ = ts2xy(data, X_WALLTIME)
    np.testing.assert_allclose(x, [1.0, 2.0, 2.5])
    with pytest.raises(NotImplementedError, match="x_axis"):
        ts2xy(data, "steps")
    # A plain mapping of arrays works too.
    x, y = ts2xy({"r": np.array([5.0]), "l": np.array([7]), "t": np.array([1.0])}, X_TIMESTEPS)
    assert list(x) == [7] and list(y) == [5.0]


def test_plot_results_writes_png(tmp_path):
    n = EPISODES_WINDOW + 20
    rng = np.random.default_rng(0)
    write_monitor(tmp_path / "run1", rng.normal(size=n), np.full(n, 10), np.arange(n, dtype=float))
    write_monitor(tmp_path / "run2", rng.normal(size=5), np.full(5, 10), np.arange(5, dtype=float))
    out = tmp_path / "curve.png"
    fig = plot_results(
        [str(tmp_path / "run1"), str(tmp_path / "run2")],
        num_timesteps=1000,
        x_axis=X_TIMESTEPS,
        task_name="Test",
        save_path=str(out),
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    # Two scatter plots; run1 is cut to 100 episodes (1000 steps), enough for one moving-average line.
    offsets = [c.get_offsets() for c in ax.collections]
    assert [len(o) for o in offsets] == [100, 5]
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 100 - EPISODES_WINDOW + 1
    assert ax.get_xlim() == (0.0, 1000.0)
    assert ax.get_ylabel() == "Episode Rewards" and ax.get_xlabel() == X_TIMESTEPS
    matplotlib.pyplot.close(fig)


def test_plot_curves_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        plot_curves([(np.array([]), np.array([]))], X_TIMESTEPS, "t")


def test_command_line(tmp_path, capsys):
    write_monitor(tmp_path / "run", [1.0, 2.0], [3, 4], [0.5, 1.0])
    out = tmp_path / "cli.png"
    results_plotter.main([str(tmp_path / "run"), "--save-path", str(out), "--x-axis", X_EPISODES])
    assert out.exists() and "Saved" in capsys.readouterr().out
