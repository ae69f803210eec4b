#!/usr/bin/env bash
# RL in the dream (issue 16), as measured in docs/rl.md: a PPO agent trained only in the shipped CarRacing world,
# the same PPO trained in the real CarRacing-v3 for the same wall clock, both scored on 50 real tracks (seeds
# 1,000,000..1,000,049, used nowhere else) beside the scripted drivers. About 4.5 hours on 2 CPU cores; run alone.
set -euo pipefail
MINUTES=${MINUTES:-30}
EPISODES=${EPISODES:-50}
mkdir -p runs

# 1. PPO in the dream: 32 dreams, 64 steps each between updates; --steps sized to what the CPU does in the budget
#    so that the learning rate anneals to 0 (this CPU: ~170 env steps/s with the updates).
worldsim rl train --world carracing --out runs/agent_dream --steps "${DREAM_STEPS:-560000}" --num-envs 32 \
    --max-minutes "${DREAM_MINUTES:-58}" --save-minutes 5

# 2. the same PPO in the real env for a wall-clock budget (8 real tracks at a time, 256 steps each per update)
worldsim rl train --real --world carracing --out runs/agent_real --steps "${REAL_STEPS:-200000}" --num-envs 8 \
    --rollout 256 --max-minutes "$MINUTES" --save-minutes 5

# 3. scores: real and dream side by side, and the drivers on the same tracks
worldsim rl eval --agent runs/agent_dream --episodes "$EPISODES" --real auto --dream --drivers road,carracing \
    --video runs/agent_dream_real.mp4 --json runs/rl_eval_dream.json
worldsim rl eval --agent runs/agent_real --episodes "$EPISODES" --real auto --dream --json runs/rl_eval_real.json

# 4. gap tools, each against the shipped agent (the 30-min checkpoint of step 1's schedule)
#    a. the shipped agent with sampled actions instead of argmax
worldsim rl eval --agent carracing_ppo --episodes "$EPISODES" --real auto --sample --json runs/rl_eval_ppo_sample.json
#    b. Dropout's Dream Land: step 1's schedule, stopped at the shipped agent's 30 minutes
worldsim rl train --world carracing --out runs/agent_dropout --steps "${DREAM_STEPS:-560000}" --num-envs 32 \
    --dream-dropout 0.05 --max-minutes 30.4 --save-minutes 5
worldsim rl eval --agent runs/agent_dropout --episodes "$EPISODES" --real auto --dream --json runs/rl_eval_dropout.json
#    c. 10 minutes of real fine-tuning from the shipped agent (its real steps counted in its card)
worldsim rl train --real --init carracing_ppo --world carracing --out runs/agent_finetune --steps 36000 \
    --num-envs 8 --rollout 256 --lr 1e-4 --max-minutes 10
worldsim rl eval --agent runs/agent_finetune --episodes "$EPISODES" --real auto --json runs/rl_eval_finetune.json
#    d. randomised sampler noise, and e. real checks during training (the plain run in the same world: the baseline)
worldsim rl train --world carracing --out runs/agent_noise --steps "${DREAM_STEPS:-560000}" --num-envs 32 \
    --noise-levels 0.02 0.15 --max-minutes 30.4 --save-minutes 5
worldsim rl eval --agent runs/agent_noise --episodes "$EPISODES" --real auto --dream --json runs/rl_eval_noise.json
worldsim rl train --world carracing --out runs/agent_checks --steps "${DREAM_STEPS:-560000}" --num-envs 32 \
    --eval-real-every 25 --eval-real-episodes 4 --max-minutes 34 --save-minutes 5
worldsim rl eval --agent runs/agent_checks --episodes "$EPISODES" --real auto --dream --json runs/rl_eval_checks.json
worldsim rl eval --agent runs/agent_checks/agent_best_real --episodes "$EPISODES" --real auto --dream \
    --json runs/rl_eval_checks_best.json
#    f. per-track prediction: each real track dreamt from its own first frames, the shipped agent driving
worldsim rl eval --agent carracing_ppo --episodes "$EPISODES" --real auto --dream --paired --json runs/rl_eval_paired.json
#    g. dream dropout in the 2-step world with real checks (shipped as carracing_ppo_v2: the run's end)
worldsim rl train --world carracing --out runs/agent_dropout_checks --steps "${DREAM_STEPS:-560000}" --num-envs 32 \
    --dream-dropout 0.05 --eval-real-every 25 --eval-real-episodes 4 --max-minutes 34 --save-minutes 5
worldsim rl eval --agent runs/agent_dropout_checks --episodes "$EPISODES" --real auto --dream --json runs/rl_eval_dropout_checks.json
