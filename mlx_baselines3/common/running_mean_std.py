"""RunningMeanStd: running mean and variance of a stream of arrays (numpy, float64)."""

from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """Track the mean and (population) variance of batches of samples.

    Batches are merged with the parallel-variance formula of Chan et al., so the result
    equals the statistics of all samples seen so far (plus a tiny prior of weight
    ``epsilon`` at mean 0, variance 1, which avoids dividing by zero at the start).

    :param epsilon: weight of the prior (initial count)
    :param shape: shape of one sample
    """

    def __init__(self, epsilon: float = 1e-4, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon

    def copy(self) -> RunningMeanStd:
        """Return an independent copy."""
        new_object = RunningMeanStd(shape=self.mean.shape)
        new_object.mean = self.mean.copy()
        new_object.var = self.var.copy()
        new_object.count = float(self.count)
        return new_object

    def combine(self, other: RunningMeanStd) -> None:
        """Merge the statistics of another instance into this one.

        :param other: statistics of other samples, of the same shape
        """
        self.update_from_moments(other.mean, other.var, other.count)

    def update(self, arr: np.ndarray) -> None:
        """Add a batch of samples (first axis: samples).

        :param arr: array of shape ``(batch, *shape)``
        """
        arr = np.asarray(arr)
        if arr.shape[1:] != self.mean.shape:
            raise ValueError(
                f"RunningMeanStd of sample shape {self.mean.shape} got a batch of shape {arr.shape}; "
                f"expected (batch, {', '.join(map(str, self.mean.shape))})"
            )
        batch_mean = np.asarray(np.mean(arr, axis=0, dtype=np.float64))
        batch_var = np.asarray(np.var(arr, axis=0, dtype=np.float64))
        batch_count = arr.shape[0]
        self.update_from_moments(batch_mean, batch_var, batch_count)

    def update_from_moments(self, batch_mean: np.ndarray, batch_var: np.ndarray, batch_count: float) -> None:
        """Add a batch given by its mean, population variance and size.

        :param batch_mean: mean of the batch
        :param batch_var: population variance of the batch
        :param batch_count: number of samples in the batch
        """
        delta = batch_mean - self.mean
        tot_count = self.count + batch_count

        new_mean = self.mean + delta * batch_count / tot_count
        m_a = self.var * self.count
        m_b = batch_var * batch_count
        m_2 = m_a + m_b + np.square(delta) * self.count * batch_count / tot_count
        new_var = m_2 / tot_count

        self.mean = new_mean
        self.var = new_var
        self.count = float(tot_count)
