"""Plot learning curves from Monitor files, following Stable-Baselines3's ``results_plotter``.

Needs matplotlib (``pip install mlx-baselines3[extra]``) for the plotting functions and pandas for
:func:`~mlx_baselines3.common.monitor.load_results`.

Command line::

    python -m mlx_baselines3.common.results_plotter LOG_DIR [LOG_DIR ...] --save-path curve.png
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlx_baselines3.common.monitor import load_results

X_TIMESTEPS = "timesteps"
X_EPISODES = "episodes"
X_WALLTIME = "walltime_hrs"
POSSIBLE_X_AXES = [X_TIMESTEPS, X_EPISODES, X_WALLTIME]
EPISODES_WINDOW = 100


def rolling_window(array: np.ndarray, window: int) -> np.ndarray:
    """All windows of ``window`` consecutive elements along the last axis (a read-only view).

    :param array: input array, shape ``(..., n)``
    :param window: window length (1 <= window <= n)
    :return: array of shape ``(..., n - window + 1, window)``
    """
    array = np.asarray(array)
    if window < 1 or window > array.shape[-1]:
        raise ValueError(f"window must be between 1 and {array.shape[-1]} (the array length), got {window}")
    return np.lib.stride_tricks.sliding_window_view(array, window, axis=-1)


def window_func(
    var_1: np.ndarray, var_2: np.ndarray, window: int, func: Callable[..., np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``func`` over a sliding window of ``var_2``; ``var_1`` is cut to match.

    :param var_1: x values
    :param var_2: y values (same length)
    :param window: window length
    :param func: reduction taking an ``axis`` argument (e.g. ``np.mean``)
    :return: ``(var_1[window - 1:], func(windows of var_2))``
    """
    var_2_window = rolling_window(var_2, window)
    function_on_var2 = func(var_2_window, axis=-1)
    return np.asarray(var_1)[window - 1 :], function_on_var2


def _column(data_frame: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(data_frame[name])
    except KeyError as exc:
        raise KeyError(f"Monitor data has no column {name!r} (expected columns r, l, t)") from exc


def ts2xy(data_frame: Any, x_axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Turn Monitor data into ``(x, episode rewards)``.

    :param data_frame: what ``load_results`` returns (a DataFrame, or any mapping with ``r``, ``l``, ``t``)
    :param x_axis: ``X_TIMESTEPS`` (cumulative episode lengths), ``X_EPISODES`` (episode index) or
        ``X_WALLTIME`` (hours since the start)
    :return: x and y arrays
    """
    if x_axis == X_TIMESTEPS:
        x_var = np.cumsum(_column(data_frame, "l"))
    elif x_axis == X_EPISODES:
        x_var = np.arange(len(_column(data_frame, "r")))
    elif x_axis == X_WALLTIME:
        x_var = _column(data_frame, "t") / 3600.0
    else:
        raise NotImplementedError(f"Unknown x_axis {x_axis!r}; use one of {POSSIBLE_X_AXES}")
    return x_var, _column(data_frame, "r")


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "Plotting needs matplotlib: pip install 'mlx-baselines3[extra]' (or pip install matplotlib)"
        ) from exc
    return plt


def plot_curves(
    xy_list: list[tuple[np.ndarray, np.ndarray]],
    x_axis: str,
    title: str,
    figsize: tuple[int, int] = (8, 2),
    save_path: str | None = None,
) -> Any:
    """Plot one or more reward curves: a dot per episode and, with at least ``EPISODES_WINDOW``
    episodes, the mean over a sliding window of that many episodes.

    :param xy_list: ``(x, y)`` pairs, one per curve
    :param x_axis: label of the x axis
    :param title: figure title
    :param figsize: figure size in inches
    :param save_path: when given, the figure is written there (PNG for a ``.png`` name)
    :return: the matplotlib figure
    """
    non_empty = [(np.asarray(x), np.asarray(y)) for x, y in xy_list if len(x) > 0]
    if not non_empty:
        raise ValueError("No episode to plot: every curve is empty")
    plt = _pyplot()
    fig = plt.figure(title, figsize=figsize)
    max_x = max(float(x[-1]) for x, _ in non_empty)
    min_x = 0
    for x, y in non_empty:
        plt.scatter(x, y, s=2)
        if x.shape[0] >= EPISODES_WINDOW:
            x_mean, y_mean = window_func(x, y, EPISODES_WINDOW, np.mean)
            plt.plot(x_mean, y_mean)
    plt.xlim(min_x, max_x)
    plt.title(title)
    plt.xlabel(x_axis)
    plt.ylabel("Episode Rewards")
    plt.tight_layout()
    if save_path is not None:
        fig.savefig(save_path)
    return fig


def plot_results(
    dirs: list[str],
    num_timesteps: int | None,
    x_axis: str,
    task_name: str,
    figsize: tuple[int, int] = (8, 2),
    save_path: str | None = None,
) -> Any:
    """Plot the Monitor results of each folder in ``dirs``, one curve per folder.

    :param dirs: folders holding ``*monitor.csv`` files
    :param num_timesteps: only plot the episodes within the first ``num_timesteps`` steps (None: all)
    :param x_axis: ``X_TIMESTEPS``, ``X_EPISODES`` or ``X_WALLTIME``
    :param task_name: figure title
    :param figsize: figure size in inches
    :param save_path: when given, the figure is written there (PNG for a ``.png`` name)
    :return: the matplotlib figure
    """
    xy_list = []
    for folder in dirs:
        data_frame = load_results(folder)
        if num_timesteps is not None:
            data_frame = data_frame[data_frame.l.cumsum() <= num_timesteps]
        xy_list.append(ts2xy(data_frame, x_axis))
    return plot_curves(xy_list, x_axis, task_name, figsize, save_path=save_path)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: plot Monitor logs to a file."""
    parser = argparse.ArgumentParser(description="Plot learning curves from Monitor log folders.")
    parser.add_argument("dirs", nargs="+", help="folders holding *monitor.csv files")
    parser.add_argument(
        "--save-path", default="learning_curve.png", help="output image (default: %(default)s)"
    )
    parser.add_argument("--x-axis", default=X_TIMESTEPS, choices=POSSIBLE_X_AXES)
    parser.add_argument("--num-timesteps", type=int, default=None)
    parser.add_argument("--title", default="Learning curve")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    plot_results(args.dirs, args.num_timesteps, args.x_axis, args.title, save_path=args.save_path)
    print(f"Saved {args.save_path}")


if __name__ == "__main__":
    main()
