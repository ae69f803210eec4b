"""How ``worldsim eval``'s result prints: the markdown table of every part that ran. Change a row here; what the
numbers are is ``eval``'s and ``policy_shift``'s business."""

from __future__ import annotations

from typing import Any

from worldsim.evaluation.metrics import (
    format_correlation,
)
from worldsim.evaluation.policy_shift import STANDSTILL_HORIZONS


def format_eval_table(result: dict[str, Any], horizons: list[int]) -> str:
    """The markdown report ``worldsim eval`` prints (only the parts that were run)."""
    lines = [f"{result['checkpoint']} on {result['episodes']} held-out episodes of {result['data']}", ""]
    if "teacher_psnr" in result:
        lines += [
            f"Teacher-forced next frame ({result['teacher_frames']} frames):",
            "| | PSNR (dB) | SSIM |",
            "|---|---|---|",
            f"| model | {result['teacher_psnr']:.2f} | {result['teacher_ssim']:.3f} |",
            f"| copy last frame | {result['teacher_baseline_psnr']:.2f} | {result['teacher_baseline_ssim']:.3f} |",
            "",
            f"Reward head: MAE {result['reward_mae']:.3f} (constant median guess {result['reward_baseline_mae']:.3f}), "
            f"correlation {format_correlation(result['reward_corr'], 2)}. "
            f"Termination head: {result['terminations']} real terminations"
            + (f", recall {result['termination_recall']:.2f}" if "termination_recall" in result else "")
            + f", {result['termination_false_alarms_per_1k']:.1f} false alarms per 1000 frames.",
            "",
        ]
    if "rollouts" in result:
        lines += [
            f"Open loop ({result['rollouts']} rollouts, true actions):",
            "| horizon | PSNR (dB) | copy-last PSNR | SSIM | copy-last SSIM | random-action PSNR | delta PSNR |",
            "|---|---|---|---|---|---|---|",
        ]
        for h in horizons:
            lines.append(
                f"| {h} | {result[f'psnr_h{h}']:.2f} | {result[f'baseline_psnr_h{h}']:.2f} | "
                f"{result[f'ssim_h{h}']:.3f} | {result[f'baseline_ssim_h{h}']:.3f} | "
                f"{result[f'random_action_psnr_h{h}']:.2f} | {result[f'delta_psnr_h{h}']:.2f} |"
            )
        lines.append("")
    if "rollouts_still" in result:

        def cell(key: str) -> str:
            return f"{result[key]:.2f}" if key in result else "-"

        lines += [
            f"Open loop by motion in the context ({result['rollouts_moving']} moving, {result['rollouts_still']} still "
            f"starts, told by {result['motion_from']}):",
            "| horizon | PSNR moving | copy-last moving | PSNR still | copy-last still |",
            "|---|---|---|---|---|",
        ]
        for h in horizons:
            keys = [f"psnr_h{h}_moving", f"baseline_psnr_h{h}_moving", f"psnr_h{h}_still", f"baseline_psnr_h{h}_still"]
            lines.append(f"| {h} | " + " | ".join(cell(k) for k in keys) + " |")
        lines.append("")
    if "stability_ratio" in result:
        lines.append(
            f"Stability over {result['stability_frames']} frames ({result['stability_worlds']} worlds): "
            f"FD early {result['fd_early']:.2f}, late {result['fd_late']:.2f}, "
            f"stability_ratio {result['stability_ratio']:.2f}"
            + (
                f"; real {result['stability_policy']} play in the real env: FD {result['fd_real_policy']:.2f} "
                f"(late / real play {result['stability_ratio_vs_real_policy']:.2f})"
                if "fd_real_policy" in result
                else ""
            )
        )
        lines.append("")
    lines += _policy_shift_lines(result)
    lines += _state_lines(result)
    return "\n".join(lines).rstrip()


def _state_lines(result: dict[str, Any]) -> list[str]:
    if "state_rollouts" not in result:
        return []

    def cell(key: str, digits: int) -> str:
        return f"{result[key]:.{digits}f}" if key in result else "-"

    lines = [
        "",
        f"State fidelity ({result['state_rollouts']} open-loop rollouts of the recorded actions; the task object read "
        "off the frames by the source's judge; copy-last in brackets):",
        "| horizon | mask IoU | IoU, moved | IoU, still | position error | angle error (deg) | readable | moved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in result["state_horizons"]:
        groups = ("", "_moved", "_still")
        iou = [f"{cell(f'state_iou_h{h}{g}', 2)} ({cell(f'state_iou_copy_h{h}{g}', 2)})" for g in groups]
        pose = [f"{cell(f'{k}_error_h{h}', 1)} ({cell(f'{k}_error_copy_h{h}', 1)})" for k in ("block", "angle")]
        tail = [cell(f"state_readable_h{h}", 2), str(result[f"state_moved_h{h}"])]
        lines.append(f"| {h} | " + " | ".join(iou + pose + tail) + " |")
    return lines


def _policy_shift_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"Policy shift: {result[k]}" for k in ("policy_shift_note", "standstill_note") if k in result]
    if "standstill_drift_h30" in result:
        dream = ", ".join(f"h{h} {result[f'standstill_drift_h{h}']:.2f}" for h in STANDSTILL_HORIZONS)
        real = ", ".join(f"{result[f'standstill_drift_h{h}_real']:.2f}" for h in STANDSTILL_HORIZONS)
        lines.append(
            f"Standstill, no input ({result['standstill_tracks']} real tracks): mean |dream - still frame| (0-255) "
            f"{dream}; real env {real}"
        )
    if "standstill_drift_h30_data" in result:
        dream = ", ".join(f"h{h} {result[f'standstill_drift_h{h}_data']:.2f}" for h in STANDSTILL_HORIZONS)
        real = ", ".join(f"{result[f'standstill_drift_h{h}_data_real']:.2f}" for h in STANDSTILL_HORIZONS)
        lines.append(
            f"Standstill mid-episode ({result['standstill_data_windows']} held-out stops): {dream}; recorded {real}"
        )
    if "policy_return_note" in result:
        lines.append(f"Policy returns: {result['policy_return_note']}")
    if "policy_return_pearson" in result:
        lines += [
            "",
            f"Policy returns over {result['policy_return_horizon']} steps ({result['policy_return_tracks']} real "
            "tracks each, dreams forked from them):",
            "| policy | predicted | real | per-track MAE |",
            "|---|---|---|---|",
        ]
        for row in result["policy_returns"]:
            lines.append(
                f"| {row['policy']} | {row['predicted_return']:.1f} | {row['real_return']:.1f} | "
                f"{row['episode_return_mae']:.1f} |"
            )
        lines.append(
            f"Pearson {format_correlation(result['policy_return_pearson'])}, "
            f"Spearman {format_correlation(result['policy_return_spearman'])}, "
            f"MAE {result['policy_return_mae']:.2f}"
            + (
                f" ({100 * result['policy_return_mae_share']:.1f}% of the real returns' range)"
                if "policy_return_mae_share" in result
                else ""
            )
        )
    return lines
