"""Does recorded data fit a world? One check for everything that feeds recorded episodes to an existing world.

``worldsim eval`` scores a world on held-out episodes and ``worldsim train world --init`` fine-tunes one: both hand
the world recorded frames and actions as if it had made them, which only means something when the data is of the
same env, with the same actions, on the same clock. ``check_data_matches_world`` is that rule:

* **action space**: must be equal; an action of one space means nothing in another.
* **source env**: must be the same env when both name one (aliases resolved: ``Crafter`` is
  ``worldsim/Crafter-v0``). Data that records no env id (some Minari or robomimic files), or a world that names
  none, passes: nothing says they differ, and actions and frame rate are still checked.
* **frame rate**: must be equal. Data at k times the world's rate (CarRacing recorded with ``--frame-skip 1``, 50 fps,
  against a 25 fps world) is refused, not resampled. Keeping every k-th frame would be right for the frames, but a
  world step is one action held for k env steps (the recorder's action repeat), while data recorded at the faster
  rate may change its action inside those k steps. Resampling is exact only for files whose actions are constant
  over every aligned group of k steps, which random, scripted and human play almost never are: it would be a second
  data path through eval and training that hardly ever runs. Re-recording is cheap and exact, and the message says
  how (the ``--frame-skip`` that gives the world's rate).
* **frame size**: not checked, on purpose. Every consumer resizes frames to the size it works at (eval to the world's
  with ``resize_frames``; training to the autoencoder's, in ``ClipDataset``, the latent cache and the start
  contexts), and frames of one env at two sizes are the same pictures resampled.
"""

from __future__ import annotations

from worldsim.config import ActionSpec, WorldConfig
from worldsim.data.reader import TrajectoryReader
from worldsim.envs.sources import canonical_id
from worldsim.errors import ConfigError, InputError


def describe_space(spec: ActionSpec) -> str:
    """An action space in messages: ``Discrete(5)``, ``MultiDiscrete([3, 2])``, ``Box(-1, 1, shape=[2])``."""
    if spec.kind == "discrete":
        return f"Discrete({spec.n})"
    if spec.kind == "multi_discrete":
        return f"MultiDiscrete({spec.nvec})"

    def bound(values: list[float]) -> str:
        return f"{values[0]:g}" if len(set(values)) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"

    return f"Box({bound(spec.low)}, {bound(spec.high)}, shape={spec.shape})"


def data_action_spec(reader: TrajectoryReader) -> ActionSpec:
    """The data's action space as a world's ``ActionSpec``; InputError when the file records none a world can take."""
    if reader.action_space is None:
        raise InputError(f"{reader.source} does not record its action space")
    try:
        return ActionSpec.from_gym(reader.action_space)
    except ConfigError as e:
        raise InputError(f"{reader.source}: {e}") from None


def check_data_matches_world(reader: TrajectoryReader, config: WorldConfig, world: str, purpose: str) -> None:
    """Raise a one-line InputError unless ``reader``'s episodes fit the world of ``config`` (see the module docstring).

    ``world`` names the world in the message (the checkpoint as the user gave it); ``purpose`` is what was to be done
    with it (``"evaluate"``, ``"fine-tune"``). The message names both sides of what differs and what to do.
    """
    refusal = f"cannot {purpose} {world} on {reader.source}"
    action = data_action_spec(reader)
    if action != config.action:
        raise InputError(
            f"{refusal}: the world's action space is {describe_space(config.action)} but the data's is "
            f"{describe_space(action)}; use data recorded with the world's actions"
            + (f" (worldsim record --env {config.source_env})" if config.source_env else "")
        )
    data_env, world_env = canonical_id(reader.env_id), canonical_id(config.source_env)
    if data_env and world_env and data_env != world_env:
        raise InputError(
            f"{refusal}: the world is of {config.source_env} but the data was recorded from {reader.env_id}; "
            f"record {config.source_env} episodes (worldsim record --env {config.source_env})"
        )
    if reader.frame_rate != config.frame_rate:
        raise InputError(
            f"{refusal}: the data was recorded at {reader.frame_rate} fps but the world runs at {config.frame_rate} "
            f"fps; {_how_to_record_at(config.frame_rate, reader, config.source_env)}"
        )


def _how_to_record_at(rate: int, reader: TrajectoryReader, world_env: str) -> str:
    """What to do about data at another frame rate: the ``worldsim record`` command that records at ``rate``."""
    env = reader.env_id or world_env
    if reader.frame_skip is None or not env:
        return f"record it at {rate} fps"
    # The env's native rate is the data's rate times its action repeat, up to the recorder's rounding to whole fps.
    low, high = ((reader.frame_rate + d) * reader.frame_skip for d in (-0.5, 0.5))
    skip = max(1, round(reader.frame_rate * reader.frame_skip / rate))
    if high / skip < rate - 0.5 or low / skip > rate + 0.5:  # no native rate in range records at `rate` with it
        return f"record it at {rate} fps"
    return f"re-record it with `worldsim record --env {env} --frame-skip {skip}`"
