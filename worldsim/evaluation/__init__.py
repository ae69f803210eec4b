"""The commands that set a world beside reality, on top of the library: ``predict``, ``rank``, ``eval``, ``rl_eval``,
``eval_text``; and what they share, once: the real side (``real``: source env, frame and action conversion, frame-rate
repeat, real episodes) and the metrics (``metrics``: PSNR, SSIM, Fréchet distance, correlations, bootstrap intervals).

A command uses only the public names of these modules and of the library below; what two commands need goes in
``real`` or ``metrics``, not in one command for the other to borrow. World-specific evaluation (CarRacing's
standstill, PushT's state and success) comes from the source world's adapter (``worldsim.envs.sources``,
``worldsim.envs.judges``).
"""
