"""The one check of what comes into a world, and the one resize: frames (uint8 H×W×3, any batch shape) and actions (in
the world's action space), each refused with a one-line InputError that names what is wrong.

The engine (``WorldModel.check_frames`` / ``check_actions``) and everything that hands a world frames or actions from
outside (env, vector env, predict) call these; a new kind of action space gets its check here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from worldsim.config import ActionSpec
from worldsim.errors import InputError


def resize_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (..., H, W, 3) -> uint8 (..., h, w, 3) with area/bilinear antialiased resampling."""
    if tuple(frames.shape[-3:-1]) == tuple(size):
        return frames
    lead = frames.shape[:-3]
    x = rearrange(frames.reshape(-1, *frames.shape[-3:]), "n h w c -> n c h w").float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    x = rearrange(x.round().clamp(0, 255).to(torch.uint8), "n c h w -> n h w c")
    return x.reshape(*lead, *size, 3)



def check_frames(
    frames: Any, size: tuple[int, int], max_frames: int, what: str = "frames", one_world: bool = False
) -> Tensor:
    """Validate user frames -> uint8 (B, T, h, w, 3) resized to ``size``: the one check of frames.

    Takes (H, W, 3), (B, H, W, 3) or (B, T, H, W, 3); with ``one_world`` (H, W, 3) or a clip (T, H, W, 3).
    ``what`` names the input in errors (e.g. ``options['start']``); at most ``max_frames`` frames per world.
    """
    shapes = "(H, W, 3) or (T, H, W, 3)" if one_world else "(H, W, 3), (B, H, W, 3) or (B, T, H, W, 3)"
    if not isinstance(frames, (np.ndarray, Tensor)):
        raise InputError(f"{what} must be a numpy uint8 array shaped {shapes}, got {type(frames).__name__}")
    t = torch.as_tensor(frames) if isinstance(frames, np.ndarray) else frames
    if t.dtype != torch.uint8:
        raise InputError(f"{what} must be uint8 RGB images (0..255), got dtype {t.dtype}")
    dims = (3, 4) if one_world else (3, 4, 5)
    if t.dim() not in dims or t.shape[-1] != 3:
        raise InputError(f"{what} must be shaped {shapes}, got {tuple(t.shape)}")
    if t.dim() == 3:
        t = t[None, None]
    elif t.dim() == 4:
        t = t[None] if one_world else t[:, None]  # one world's clip, or one frame per world
    T = t.shape[1]
    if not 1 <= T <= max_frames:
        raise InputError(f"{what} has {T} frames; this world takes 1 to {max_frames} (its sinks + window)")
    if min(t.shape[-3:-1]) < 8:
        raise InputError(f"{what} of {tuple(t.shape[-3:-1])} pixels are too small to use")
    return resize_frames(t, size)



def check_actions(spec: ActionSpec, actions: Any, lead: tuple[int, ...]) -> Tensor:
    """Validate actions shaped ``lead`` + the action shape -> long (Discrete, MultiDiscrete) or float (Box) tensor.

    The one check of actions: the env, the vector env, the viewer's key map and the engine all call it; the
    conditioning trusts what comes out. A Discrete action may come as (..., 1) (a batch of one from a policy).
    """
    space = _SpaceName(spec)  # named only in errors: building a gymnasium space per step would be waste
    if isinstance(actions, Tensor):
        t = actions
    else:
        try:
            a = np.asarray(actions)
        except (TypeError, ValueError) as e:
            raise InputError(
                f"actions {actions!r} could not be read as an array ({e}); this world takes {space}"
            ) from None
        if a.dtype.kind not in "biuf":
            raise InputError(f"action {actions!r} is not a number; this world takes {space}")
        t = torch.as_tensor(a)
    if spec.kind == "discrete" and tuple(t.shape) == (*lead, 1):
        t = t[..., 0]
    shape = (*lead, *((len(spec.nvec),) if spec.kind == "multi_discrete" else spec.shape))
    if tuple(t.shape) != shape:
        raise InputError(f"actions have shape {tuple(t.shape)}; this world takes {space}, so {shape} here")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise InputError(f"actions {t.tolist()} are not a number (NaN or inf); this world takes {space}")
    if spec.kind == "box":
        t = t.float()
        low = torch.tensor(spec.low).reshape(spec.shape)
        high = torch.tensor(spec.high).reshape(spec.shape)
        if ((t < low) | (t > high)).any():
            raise InputError(f"actions {t.tolist()} out of range: outside {space}")
        return t
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise InputError(f"actions {t.tolist()} are not an integer; this world takes {space}")
    t = t.long()
    high = torch.tensor([spec.n] if spec.kind == "discrete" else spec.nvec)
    flat = t.reshape(-1, high.numel())
    if (flat < 0).any() or (flat >= high).any():
        raise InputError(f"actions {t.tolist()} out of range: outside {space}")
    return t



class _SpaceName:
    """Formats as the action space's gymnasium repr (``Discrete(5)``), built only when an error message needs it."""

    def __init__(self, spec: ActionSpec) -> None:
        self.spec = spec

    def __str__(self) -> str:
        return str(self.spec.to_gym())
