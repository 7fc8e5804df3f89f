"""The didactic laboratory: the paper's planted sub-sequence setting (the paper, §3.3), where Q, V and
A of the procedural prover are computable exactly.

Modules, bottom-up: `task` (the environment as a match automaton), `prover` (μ_γ with exact
values by dynamic programming), `policy` (the MADE-like MLP base policy, as an ensemble of
independent members), `train` (SFT and policy gradient with per-step weights), `experiments`
(Fig. 3(a)-(c), the γ sweep and Remark 3.1, as jobs), `stage` (`pav didactic`: run directory →
jobs → summary.json and the targets), `report` (plots and report.md from summary.json).
"""
