"""Online RL with dense progress rewards (the paper, §5).

`rewards` holds the maths (per-step weights of Eq. 5, per-token weights, RLOO and value
baselines, the REINFORCE + KL loss); `rollout` turns sampled text into token tensors; `train` is
the loop with checkpoints; `stage` is `pav rl` (with RFT initialisation); `compare` runs ORM-RL
against PAV-RL over seeds and reports the sample-efficiency ratio.
"""
