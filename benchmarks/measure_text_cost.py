"""What the text path costs per play step, with and without its two shortcuts, in one run on one machine.

    python benchmarks/measure_text_cost.py --checkpoint runs/t2v --json benchmarks/measurements/text_cost.json

Four rollouts of one world (bf16 where the CPU has it, the play setting): no prompt / a prompt, each with the
shortcuts (the null prompt's cross-attention as a per-block constant; a prompt's keys and values, with the query and
output projections folded into them, once per prompt) and without them (the null prompt and the prompt through plain
cross-attention on every pass).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np
import torch

from worldsim.bench import report_json
from worldsim.engine import WorldModel
from worldsim.models.dit import CrossAttention, DiT
from worldsim.precision import model_dtype

PROMPT = "a car on a red road through white grass, cruising"


@contextlib.contextmanager
def without_shortcuts():
    forward, cross = DiT.forward, CrossAttention.forward

    def full_null(self, latents, levels, actions, action_null, t_positions, text=None, memory=None):
        if self.cfg.text_dim and text is None:
            text = self.null_text(latents.shape[0], latents.device)
        return forward(self, latents, levels, actions, action_null, t_positions, text, memory)

    DiT.forward, CrossAttention.forward = full_null, CrossAttention.attend
    try:
        yield
    finally:
        DiT.forward, CrossAttention.forward = forward, cross


def fps(wm: WorldModel, prompt: str | None, frames: int) -> float:
    rng = np.random.default_rng(0)
    context = rng.integers(0, 255, (1, 2, *wm.frame_size, 3), dtype=np.uint8)
    wm.reset(context, seed=0, text=prompt)
    seconds = []
    for _ in range(frames):
        t = time.perf_counter()
        wm.dream(1)
        seconds.append(time.perf_counter() - t)
    return 1.0 / statistics.median(seconds[20:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.set_num_threads(2)
    wm = WorldModel.from_pretrained(args.checkpoint, dtype=model_dtype("auto", "cpu"))
    result = {}
    for name, ctx in (("shortcuts", contextlib.nullcontext), ("no_shortcuts", without_shortcuts)):
        with ctx():
            result[f"{name}_fps_no_prompt"] = fps(wm, None, args.frames)
            result[f"{name}_fps_prompt"] = fps(wm, PROMPT, args.frames)
        result[f"{name}_prompt_cost"] = 1 - result[f"{name}_fps_prompt"] / result[f"{name}_fps_no_prompt"]
    result["speedup_no_prompt"] = result["shortcuts_fps_no_prompt"] / result["no_shortcuts_fps_no_prompt"]
    result["speedup_prompt"] = result["shortcuts_fps_prompt"] / result["no_shortcuts_fps_prompt"]
    result.update(checkpoint=args.checkpoint, dtype=str(wm.dtype), threads=torch.get_num_threads(), prompt=PROMPT)
    report_json(result, args.json)


if __name__ == "__main__":
    main()
