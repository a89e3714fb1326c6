"""PPO and A2C as a user drives them: learn, predict, compiled update, errors."""

import gymnasium as gym
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from gymnasium import spaces

from mlx_baselines3 import A2C, PPO
from mlx_baselines3.common.envs import (
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
)
from mlx_baselines3.common.on_policy_algorithm import NonFiniteLossError
from mlx_baselines3.common.vec_env import DummyVecEnv

SMALL = dict(n_steps=16, batch_size=16, n_epochs=2)


def params_np(model):
    return {k: np.array(v) for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize("algo", [PPO, A2C])
@pytest.mark.parametrize(
    "env_fn",
    [
        lambda: IdentityEnv(3, ep_length=10),
        lambda: IdentityEnvBox(ep_length=10),
        lambda: IdentityEnvMultiDiscrete(2, ep_length=10),
        lambda: IdentityEnvMultiBinary(2, ep_length=10),
    ],
    ids=["discrete", "box", "multidiscrete", "multibinary"],
)
def test_every_action_space_learns_and_predicts(algo, env_fn):
    env = env_fn()
    kwargs = SMALL if algo is PPO else dict(n_steps=8)
    model = algo("MlpPolicy", env, seed=0, **kwargs).learn(32)
    assert model.num_timesteps >= 32
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action).astype(env.action_space.dtype))
    batch_actions, _ = model.predict(np.stack([obs, obs]))
    assert batch_actions.shape == (2, *env.action_space.shape)


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_training_changes_every_trainable_array(algo):
    model = algo("MlpPolicy", "Pendulum-v1", seed=0, **(SMALL if algo is PPO else dict(n_steps=8)))
    before = params_np(model)
    model.learn(32)
    after = params_np(model)
    for name in before:
        assert not np.array_equal(before[name], after[name]), f"{name} did not change"


def test_compiled_update_equals_uncompiled():
    def run(compiled):
        model = PPO("MlpPolicy", "CartPole-v1", seed=3, n_steps=32, batch_size=16, n_epochs=2)
        if not compiled:
            mx.disable_compile()
        try:
            model.learn(64)
        finally:
            mx.enable_compile()
        return params_np(model), np.array(model.policy.optimizer.state["step"])

    compiled, steps_c = run(True)
    eager, steps_e = run(False)
    assert steps_c == steps_e == 8  # 2 updates x 2 epochs x 2 minibatches
    for name in compiled:
        np.testing.assert_allclose(compiled[name], eager[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_same_seed_same_result_and_different_seed_differs():
    a = params_np(PPO("MlpPolicy", "CartPole-v1", seed=1, **SMALL).learn(32))
    b = params_np(PPO("MlpPolicy", "CartPole-v1", seed=1, **SMALL).learn(32))
    c = params_np(PPO("MlpPolicy", "CartPole-v1", seed=2, **SMALL).learn(32))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a[n], c[n]) for n in a)


def test_schedules_follow_progress_remaining():
    lr_seen, clip_seen = [], []

    def lr(progress):
        lr_seen.append(progress)
        return 1e-3 * progress

    def clip(progress):
        clip_seen.append(progress)
        return 0.2

    model = PPO("MlpPolicy", "CartPole-v1", learning_rate=lr, clip_range=clip, seed=0, **SMALL)
    model.learn(64)  # 4 rollouts of 16 steps
    np.testing.assert_allclose(lr_seen[-4:], [0.75, 0.5, 0.25, 0.0])
    np.testing.assert_allclose(clip_seen[-4:], [0.75, 0.5, 0.25, 0.0])
    assert float(model.policy.optimizer.learning_rate) == pytest.approx(0.0)


def test_target_kl_stops_epochs_early():
    model = PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=64, batch_size=16, n_epochs=10,
                learning_rate=0.05, target_kl=1e-6)
    model.learn(64)
    assert model._n_updates < 10
    # the stopped minibatches were not applied: optimizer steps < minibatches per epoch * epochs run
    assert int(np.array(model.policy.optimizer.state["step"])) < 4 * model._n_updates


def test_a2c_uses_rmsprop_with_sb3_defaults():
    model = A2C("MlpPolicy", "CartPole-v1")
    assert isinstance(model.policy.optimizer, optim.RMSprop)
    assert model.policy.optimizer.alpha == 0.99 and model.policy.optimizer.eps == 1e-5
    assert (model.n_steps, model.gae_lambda, model.normalize_advantage) == (5, 1.0, False)
    adam = A2C("MlpPolicy", "CartPole-v1", use_rms_prop=False, policy_kwargs=dict(optimizer_class=optim.Adam))
    assert isinstance(adam.policy.optimizer, optim.Adam)


def test_ppo_defaults_match_sb3():
    model = PPO("MlpPolicy", "CartPole-v1")
    assert (model.n_steps, model.batch_size, model.n_epochs) == (2048, 64, 10)
    assert (model.gamma, model.gae_lambda, model.clip_range(1.0), model.ent_coef, model.vf_coef) == (
        0.99, 0.95, 0.2, 0.0, 0.5)
    assert model.clip_range(0.0) == 0.2  # a constant schedule, as SB3 stores it
    assert model.max_grad_norm == 0.5 and model.normalize_advantage and model.target_kl is None
    assert isinstance(model.policy.optimizer, optim.Adam) and model.policy.optimizer.eps == 1e-5


class NaNRewardEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), float("nan"), False, False, {}


def test_non_finite_loss_is_reported_and_parameters_kept():
    model = PPO("MlpPolicy", NaNRewardEnv(), seed=0, **SMALL)
    before = params_np(model)
    with pytest.raises(NonFiniteLossError, match="value_loss"):
        model.learn(16)
    after = params_np(model)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    assert int(np.array(model.policy.optimizer.state["step"])) == 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_step'"):
        PPO("MlpPolicy", "CartPole-v1", n_step=5)
    with pytest.raises(ValueError, match="Policy 'MlpPolicyy' unknown"):
        PPO("MlpPolicyy", "CartPole-v1")
    with pytest.raises(NotImplementedError, match="Observation space .*Tuple"):
        PPO("MlpPolicy", DummyVecEnv([lambda: TupleObsEnv()]))
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        from mlx_baselines3.common.envs import SimpleMultiObsEnv

        PPO("MlpPolicy", SimpleMultiObsEnv())
    model = PPO("MlpPolicy", "CartPole-v1", **SMALL)
    with pytest.raises(ValueError, match=r"Unexpected observation shape \(5,\)"):
        model.predict(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        PPO("MlpPolicy", "CartPole-v1", batch_size=1)


class TupleObsEnv(gym.Env):
    observation_space = spaces.Tuple([spaces.Discrete(2), spaces.Discrete(2)])
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return (0, 0), {}

    def step(self, action):
        return (0, 0), 0.0, True, False, {}


def test_logging_before_first_episode_has_no_nan(tmp_path):
    from mlx_baselines3.common.logger import configure

    env = gym.wrappers.TimeLimit(IdentityEnv(2, ep_length=1000), max_episode_steps=1000)
    model = PPO("MlpPolicy", env, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv", "stdout"]))
    model.learn(32)
    content = (tmp_path / "progress.csv").read_text()
    assert "nan" not in content.lower()
    assert "ep_rew_mean" not in content.splitlines()[0]
    assert "train/approx_kl" in content.splitlines()[0] and "time/fps" in content.splitlines()[0]


def test_callbacks_see_sb3_locals_and_can_stop():
    seen = {}

    def callback(locals_, globals_):
        seen.update({k: locals_.get(k) for k in ("new_obs", "rewards", "dones", "infos", "actions")})
        return locals_["self"].num_timesteps < 20

    model = PPO("MlpPolicy", "CartPole-v1", **SMALL)
    model.learn(200, callback=callback)
    assert model.num_timesteps == 20
    assert seen["new_obs"].shape == (1, 4) and len(seen["infos"]) == 1 and seen["dones"].shape == (1,)


def test_uneven_minibatch_remainder_is_trained_like_sb3():
    with pytest.warns(UserWarning, match="truncated mini-batch of size 4"):
        model = PPO("MlpPolicy", "CartPole-v1", n_steps=20, batch_size=16, n_epochs=1, seed=0)
    model.learn(20)
    assert int(np.array(model.policy.optimizer.state["step"])) == 2


class LateNaNEnv(NaNRewardEnv):
    """Finite rewards for the first 32 steps, then NaN."""

    def reset(self, *, seed=None, options=None):
        self.t = getattr(self, "t", 0)
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.t += 1
        obs = np.full(2, 0.1 * (self.t % 5), np.float32)
        return obs, (1.0 if self.t <= 32 else float("nan")), self.t % 7 == 0, False, {}


@pytest.mark.parametrize("target_kl", [None, 10.0])
def test_non_finite_update_is_undone_and_earlier_updates_kept(target_kl):
    from mlx_baselines3.common.callbacks import BaseCallback

    class Snapshot(BaseCallback):
        def _on_rollout_start(self):
            self.params = params_np(self.model)
            self.steps = int(np.array(self.model.policy.optimizer.state["step"]))

        def _on_step(self):
            return True

    snapshot = Snapshot()
    model = PPO("MlpPolicy", LateNaNEnv(), seed=0, target_kl=target_kl, **SMALL)
    with pytest.raises(NonFiniteLossError, match="value_loss"):
        model.learn(64, callback=snapshot)
    assert snapshot.steps == 4  # two good updates of 2 epochs x 1 minibatch were kept
    assert int(np.array(model.policy.optimizer.state["step"])) == 4
    after = params_np(model)
    for name, value in snapshot.params.items():
        np.testing.assert_array_equal(value, after[name])
    model.predict(np.zeros(2, np.float32))  # still usable


@pytest.mark.parametrize("total,batch_size,n_epochs", [(64, 16, 3), (20, 8, 2), (256, 256, 20), (7, 7, 1)])
def test_minibatch_plan_covers_each_sample_once_per_epoch_in_sb3_order(total, batch_size, n_epochs):
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16)
    plan = model._minibatch_plan(total, batch_size, n_epochs)
    rows = [(row, int(epoch)) for indices, epochs in plan for row, epoch in zip(indices, epochs)]
    assert [epoch for _, epoch in rows] == sorted(epoch for _, epoch in rows)  # epochs in order
    for epoch in range(n_epochs):
        epoch_rows = [row for row, e in rows if e == epoch]
        np.testing.assert_array_equal(np.sort(np.concatenate(epoch_rows)), np.arange(total))
        assert [len(r) for r in epoch_rows] == [batch_size] * (total // batch_size) + (
            [total % batch_size] if total % batch_size else [])
    assert all(len(indices) <= model.update_chunk_size for indices, _ in plan)


def test_chunked_update_equals_one_step_per_call():
    def run(chunk):
        model = PPO("MlpPolicy", "CartPole-v1", seed=5, n_steps=64, batch_size=16, n_epochs=2)
        model.update_chunk_size = chunk
        model.learn(128)
        return params_np(model)

    one, eight = run(1), run(8)
    for name in one:
        np.testing.assert_allclose(one[name], eight[name], rtol=1e-4, atol=1e-6, err_msg=name)
