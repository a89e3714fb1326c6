"""Tests of mlx_baselines3.common.callbacks, driven by a small fake model (and a tiny PPO end to end)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from mlx_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    ConvertCallback,
    EvalCallback,
    EventCallback,
    EveryNTimesteps,
    LogEveryNTimesteps,
    ProgressBarCallback,
    StopTrainingOnMaxEpisodes,
    StopTrainingOnNoModelImprovement,
    StopTrainingOnRewardThreshold,
)
from mlx_baselines3.common.logger import configure
from mlx_baselines3.common.vec_env import DummyVecEnv


class CountEnv(gym.Env):
    """Episodes of ``length`` steps; reward = action (0 or 1); ``is_success`` when every action was 1."""

    def __init__(self, length: int = 4):
        self.length = length
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0
        self._total = 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t, self._total = 0, 0.0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self._t += 1
        self._total += float(action)
        terminated = self._t >= self.length
        info = {"is_success": self._total == self.length} if terminated else {}
        return np.zeros(1, dtype=np.float32), float(action), terminated, False, info


class FakeModel:
    """Just the attributes of BaseAlgorithm that callbacks use.

    ``schedule(num_timesteps) -> action`` decides what the policy plays, so evaluation rewards are known.
    """

    def __init__(self, env, schedule=lambda t: 1, logger=None):
        self.env = env
        self.num_timesteps = 0
        self.schedule = schedule
        self.logger = logger if logger is not None else configure(None, [])
        self.policy = object()
        self.saved: list[str] = []
        self.dump_count = 0

    def get_env(self):
        return self.env

    def get_vec_normalize_env(self):
        return None

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        n = len(observation)
        return np.full(n, self.schedule(self.num_timesteps), dtype=np.int64), state

    def save(self, path):
        path = os.fspath(path)
        if not path.endswith(".zip"):
            path += ".zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data.json", json.dumps({"num_timesteps": self.num_timesteps}))
        self.saved.append(path)

    def dump_logs(self):
        self.dump_count += 1


def fake_learn(model: FakeModel, callback: BaseCallback, total_timesteps: int) -> int:
    """Drive ``callback`` the way the collect loops do; returns the number of on_step calls made."""
    env = model.get_env()
    callback.init_callback(model)
    tb_log_name = "Fake"
    total_timesteps = total_timesteps + model.num_timesteps
    callback.on_training_start(locals(), globals())
    obs = env.reset()
    steps = 0
    continue_training = True
    while model.num_timesteps < total_timesteps and continue_training:
        callback.on_rollout_start()
        for _ in range(4):
            actions, _ = model.predict(obs)
            new_obs, rewards, dones, infos = env.step(actions)
            model.num_timesteps += env.num_envs
            steps += 1
            callback.update_locals(locals())
            if not callback.on_step():
                continue_training = False
                break
            obs = new_obs
        callback.on_rollout_end()
    callback.on_training_end()
    return steps


class Recorder(BaseCallback):
    def __init__(self, stop_at: int | None = None):
        super().__init__()
        self.events: list[str] = []
        self.seen_dones: list[np.ndarray] = []
        self.stop_at = stop_at

    def _on_training_start(self) -> None:
        self.events.append("training_start")

    def _on_rollout_start(self) -> None:
        self.events.append("rollout_start")

    def _on_step(self) -> bool:
        self.events.append("step")
        self.seen_dones.append(np.array(self.locals["dones"]))
        return self.stop_at is None or self.n_calls < self.stop_at

    def _on_rollout_end(self) -> None:
        self.events.append("rollout_end")

    def _on_training_end(self) -> None:
        self.events.append("training_end")


def make_vec(n_envs: int = 1, length: int = 4) -> DummyVecEnv:
    return DummyVecEnv([lambda: CountEnv(length) for _ in range(n_envs)])


def test_base_callback_hooks_order_and_locals():
    model = FakeModel(make_vec(2))
    recorder = Recorder()
    fake_learn(model, recorder, total_timesteps=16)
    assert recorder.events == ["training_start"] + [
        "rollout_start",
        "step",
        "step",
        "step",
        "step",
        "rollout_end",
    ] * 2 + ["training_end"]
    assert recorder.n_calls == 8 and recorder.num_timesteps == 16
    # The episode length is 4: dones arrive every 4th step, in both envs.
    assert [bool(d.all()) for d in recorder.seen_dones] == [False, False, False, True] * 2
    for name in ("new_obs", "rewards", "dones", "infos", "actions", "total_timesteps"):
        assert name in recorder.locals
    assert recorder.training_env is model.env
    assert recorder.logger is model.logger


def test_callback_list_calls_all_and_stops_if_any_says_so():
    first, second = Recorder(stop_at=3), Recorder()
    model = FakeModel(make_vec())
    steps = fake_learn(model, CallbackList([first, second]), total_timesteps=100)
    assert steps == 3
    # The second callback was still called on the step where the first asked to stop.
    assert first.n_calls == second.n_calls == 3
    assert second.events[-1] == "training_end" and "dones" in second.locals
    with pytest.raises(TypeError, match="list"):
        CallbackList(first)  # type: ignore[arg-type]


def test_convert_callback_gets_locals_and_can_stop():
    calls: list[int] = []

    def fn(locals_: dict[str, Any], globals_: dict[str, Any]) -> bool:
        calls.append(int(locals_["model"].num_timesteps))
        return len(calls) < 5

    steps = fake_learn(FakeModel(make_vec()), ConvertCallback(fn), total_timesteps=100)
    assert steps == 5 and calls == [1, 2, 3, 4, 5]


def test_every_n_timesteps_triggers_on_schedule():
    triggered: list[int] = []
    model = FakeModel(make_vec(3))
    callback = EveryNTimesteps(
        n_steps=7,
        callback=ConvertCallback(lambda locals_, globals_: triggered.append(model.num_timesteps) or True),
    )
    fake_learn(model, callback, total_timesteps=36)
    # Steps of 3 timesteps: 3, 6, 9 (>= 7 since 0) -> 9, then 18 (>= 9 + 7), 27, 36.
    assert triggered == [9, 18, 27, 36]
    assert isinstance(callback, EventCallback) and callback.callback.parent is callback


def test_log_every_n_timesteps_dumps_logs():
    model = FakeModel(make_vec())
    fake_learn(model, LogEveryNTimesteps(n_steps=5), total_timesteps=20)
    assert model.dump_count == 4  # at 5, 10, 15, 20


def test_stop_training_on_max_episodes_counts_all_envs():
    model = FakeModel(make_vec(2, length=3))
    callback = StopTrainingOnMaxEpisodes(max_episodes=2)
    steps = fake_learn(model, callback, total_timesteps=1000)
    # 2 envs x 2 episodes each = 4 episodes = 2 rounds of 3 steps.
    assert steps == 6 and callback.n_episodes == 4


def test_checkpoint_callback_file_names(tmp_path):
    model = FakeModel(make_vec(2))
    callback = CheckpointCallback(save_freq=3, save_path=str(tmp_path / "ckpt"), name_prefix="mymodel")
    fake_learn(model, callback, total_timesteps=16)
    expected = [str(tmp_path / "ckpt" / f"mymodel_{t}_steps.zip") for t in (6, 12)]
    assert model.saved == expected
    for path in expected:
        with zipfile.ZipFile(path) as archive:
            assert json.loads(archive.read("data.json"))["num_timesteps"] == int(path.split("_")[-2])
    with pytest.raises(ValueError, match="save_freq"):
        CheckpointCallback(save_freq=0, save_path=str(tmp_path))


def test_progress_bar_renders_in_non_terminal():
    model = FakeModel(make_vec(2))
    callback = ProgressBarCallback()
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        fake_learn(model, callback, total_timesteps=16)
    assert callback.pbar is None  # closed at the end
    assert callback.n_calls == 8


def test_progress_bar_missing_dependency_message(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.rich", None)
    with pytest.raises(ImportError, match="tqdm and rich"):
        ProgressBarCallback()


# ---------------------------------------------------------------- EvalCallback


def _evaluation_available() -> bool:
    try:
        import mlx_baselines3.common.evaluation  # noqa: F401
    except ImportError:
        return False
    return True


needs_evaluation = pytest.mark.skipif(not _evaluation_available(), reason="evaluate_policy not available yet")


@needs_evaluation
def test_eval_callback_writes_npz_and_best_model(tmp_path):
    # The policy plays 0 until 8 timesteps, then 1: episode reward goes from 0 to 4 (length 4).
    model = FakeModel(make_vec(), schedule=lambda t: int(t >= 8))
    callback = EvalCallback(
        CountEnv(4),  # a plain env: wrapped in a DummyVecEnv
        n_eval_episodes=3,
        eval_freq=4,
        log_path=str(tmp_path / "logs"),
        best_model_save_path=str(tmp_path / "best"),
        verbose=0,
        warn=False,
    )
    fake_learn(model, callback, total_timesteps=12)
    data = np.load(tmp_path / "logs" / "evaluations.npz")
    assert set(data.files) == {"timesteps", "results", "ep_lengths", "successes"}
    np.testing.assert_array_equal(data["timesteps"], [4, 8, 12])
    assert data["results"].shape == (3, 3) and data["ep_lengths"].shape == (3, 3)
    np.testing.assert_allclose(data["results"], [[0, 0, 0], [4, 4, 4], [4, 4, 4]])
    np.testing.assert_array_equal(data["ep_lengths"], np.full((3, 3), 4))
    np.testing.assert_array_equal(data["successes"], [[False] * 3, [True] * 3, [True] * 3])
    # Saved at the first evaluation (-inf -> 0) and at the improvement (0 -> 4), not at the tie.
    assert model.saved == [str(tmp_path / "best" / "best_model.zip")] * 2
    assert callback.best_mean_reward == 4.0 and callback.last_mean_reward == 4.0


@needs_evaluation
def test_stop_training_on_reward_threshold_stops_early():
    model = FakeModel(make_vec(), schedule=lambda t: int(t >= 8))
    stop = StopTrainingOnRewardThreshold(reward_threshold=3.5, verbose=0)
    callback = EvalCallback(
        make_vec(), callback_on_new_best=stop, n_eval_episodes=2, eval_freq=4, verbose=0, warn=False
    )
    steps = fake_learn(model, callback, total_timesteps=1000)
    assert steps == 8 and stop.parent is callback


@needs_evaluation
def test_stop_training_on_no_model_improvement():
    model = FakeModel(make_vec(), schedule=lambda t: 0)
    stop = StopTrainingOnNoModelImprovement(max_no_improvement_evals=2, min_evals=1)
    callback = EvalCallback(
        make_vec(), callback_after_eval=stop, n_eval_episodes=1, eval_freq=1, verbose=0, warn=False
    )
    steps = fake_learn(model, callback, total_timesteps=1000)
    # Eval 1: not counted (min_evals); evals 2, 3, 4 without a new best -> stops at the 4th.
    assert steps == 4 and stop.no_improvement_evals == 3


@needs_evaluation
def test_eval_callback_logs_eval_metrics(tmp_path):
    logger = configure(str(tmp_path), ["csv"])
    model = FakeModel(make_vec(), logger=logger)
    callback = EvalCallback(make_vec(), n_eval_episodes=2, eval_freq=2, verbose=0, warn=False)
    fake_learn(model, callback, total_timesteps=4)
    logger.close()
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert set(header) >= {
        "eval/mean_reward",
        "eval/mean_ep_length",
        "eval/success_rate",
        "time/total_timesteps",
    }
    row = dict(zip(header, lines[1].split(",")))
    assert float(row["eval/mean_reward"]) == 4.0 and float(row["eval/mean_ep_length"]) == 4.0


def test_eval_callback_warns_on_different_env_types():
    class OtherVecEnv(DummyVecEnv):
        pass

    model = FakeModel(make_vec())
    callback = EvalCallback(OtherVecEnv([lambda: CountEnv()]), eval_freq=100, verbose=0)
    with pytest.warns(UserWarning, match="not of the same type"):
        callback.init_callback(model)


def test_stop_callbacks_need_a_parent():
    model = FakeModel(make_vec())
    for callback in (StopTrainingOnRewardThreshold(1.0), StopTrainingOnNoModelImprovement(1)):
        callback.init_callback(model)
        with pytest.raises(AssertionError, match="EvalCallback"):
            callback.on_step()


class RandomObsEnv(CountEnv):
    """CountEnv whose observations vary, so VecNormalize statistics move."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return self.np_random.normal(3.0, 2.0, size=1).astype(np.float32), reward, terminated, truncated, info


@needs_evaluation
def test_eval_callback_syncs_vecnormalize_stats():
    from mlx_baselines3.common.vec_env.vec_normalize import VecNormalize

    train_env = VecNormalize(DummyVecEnv([RandomObsEnv]))
    train_env.seed(0)
    eval_env = VecNormalize(DummyVecEnv([RandomObsEnv]), training=False)

    class NormModel(FakeModel):
        def get_vec_normalize_env(self):
            return self.env

    model = NormModel(train_env)
    callback = EvalCallback(eval_env, n_eval_episodes=1, eval_freq=8, verbose=0, warn=False)
    fake_learn(model, callback, total_timesteps=8)
    assert train_env.obs_rms.count > 2
    np.testing.assert_allclose(eval_env.obs_rms.mean, train_env.obs_rms.mean)
    np.testing.assert_allclose(eval_env.obs_rms.var, train_env.obs_rms.var)
    assert eval_env.obs_rms is not train_env.obs_rms


def test_eval_callback_warns_when_only_training_env_is_normalized():
    from mlx_baselines3.common.vec_env.vec_normalize import VecNormalize

    model = FakeModel(VecNormalize(make_vec()))
    callback = EvalCallback(VecNormalize(make_vec()).venv, eval_freq=100, verbose=0)
    with pytest.warns(UserWarning, match="VecNormalize"):
        callback.init_callback(model)


# ---------------------------------------------------------------- end to end with a tiny PPO


def tiny_ppo(n_envs: int = 1):
    from mlx_baselines3 import PPO
    from mlx_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=0)
    return PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, verbose=0)


def test_ppo_eval_callback_stops_early_and_saves_best(tmp_path):
    from mlx_baselines3 import PPO
    from mlx_baselines3.common.monitor import Monitor

    model = tiny_ppo()
    # Any CartPole episode has a reward >= 1, so the first evaluation reaches the threshold.
    stop = StopTrainingOnRewardThreshold(reward_threshold=1.0)
    eval_callback = EvalCallback(
        Monitor(gym.make("CartPole-v1")),
        callback_on_new_best=stop,
        n_eval_episodes=2,
        eval_freq=24,
        log_path=str(tmp_path),
        best_model_save_path=str(tmp_path),
        verbose=0,
    )
    model.learn(total_timesteps=64, callback=eval_callback)
    assert model.num_timesteps == 24  # stopped right after the first evaluation (of 64 steps asked)
    data = np.load(tmp_path / "evaluations.npz")
    assert data["timesteps"].tolist() == [24]
    assert data["results"].shape == (1, 2) and data["ep_lengths"].shape == (1, 2)
    np.testing.assert_array_equal(data["results"], data["ep_lengths"])  # CartPole: reward 1 per step
    loaded = PPO.load(tmp_path / "best_model.zip")
    assert loaded.num_timesteps == 24


def test_ppo_checkpoints_load_and_callback_locals(tmp_path):
    from mlx_baselines3 import PPO

    model = tiny_ppo(n_envs=2)
    recorder = Recorder()
    checkpoint = CheckpointCallback(save_freq=16, save_path=str(tmp_path), name_prefix="ppo")
    model.learn(
        total_timesteps=64, callback=[recorder, checkpoint, LogEveryNTimesteps(32)], progress_bar=True
    )
    assert recorder.n_calls == 32 and recorder.num_timesteps == 64
    for name in ("new_obs", "rewards", "dones", "infos", "actions", "total_timesteps"):
        assert name in recorder.locals, name
    assert recorder.locals["new_obs"].shape == (2, 4) and len(recorder.locals["infos"]) == 2
    assert sorted(os.listdir(tmp_path)) == ["ppo_32_steps.zip", "ppo_64_steps.zip"]
    first = PPO.load(tmp_path / "ppo_32_steps.zip")
    assert first.num_timesteps == 32
    last = PPO.load(tmp_path / "ppo_64_steps.zip")
    obs = np.zeros((1, 4), dtype=np.float32)
    np.testing.assert_array_equal(
        last.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
