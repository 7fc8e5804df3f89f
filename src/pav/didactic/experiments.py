"""The `pav didactic` stage: Fig. 3(a)-(c), the prover-strength sweep and Remark 3.1 (the paper, §3.3–3.4).

`didactic_jobs` lists independent jobs (each a function of the config returning JSON) that
`pav.core.jobs.run_jobs` spreads over single-threaded worker processes; `summarize` turns their
results into the numbers of `summary.json`, each beside the paper's and the target it is judged by.

Departures and choices (the paper is silent or the issue asks for more):
- Several seeds per curve; headline numbers are medians over seeds (takeoff is bimodal).
- Q^π in the RL weight is the trajectory's return by default; `q_base_return` vs
  `q_base_rollouts` compares it with the paper's Monte-Carlo "oracle" on the same seeds.
- The γ sweep runs with exact and with Monte-Carlo A^μ, under Adam and under plain SGD, and
  reports whatever shape appears; it is not tuned toward the paper's inverted U.
- Pass@N of the single planted task is the unbiased estimator from up to `max_samples` samples
  (sampling stops early once every member has `min_successes` successes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pav.core.config import knob
from pav.core.jobs import Job, Progress
from pav.rollouts.estimates import alignment, best_of_k, distinguishability, pass_at_n

POWERS_OF_TWO = tuple(2**i for i in range(1, 9))


@dataclass(frozen=True)
class TaskConfig:
    target: tuple[int, ...] = knob((3, 6, 0, 3, 5), "planted sub-sequence y* (must not contain EOS)")
    vocab_size: int = knob(15, "tokens in the vocabulary, EOS included")
    length: int = knob(10, "tokens per response (H steps)")
    eos: int = knob(14, "end-of-sequence token; it and everything after it are masked")
    stop_at_match: bool = knob(False, "end the episode (mask later tokens) once y* has appeared")


@dataclass(frozen=True)
class SFTConfig:
    gamma: float = knob(5.0, "strength γ of the prover μ_γ whose samples the base policy imitates")
    samples: int = knob(3200, "SFT responses sampled from μ_γ per seed")
    iterations: int = knob(50, "SFT iterations (50 × 64 = one epoch of 3,200, as App. B)")
    batch_size: int = knob(64, "SFT batch size")
    lr: float = knob(1e-3, "SFT Adam learning rate")


@dataclass(frozen=True)
class RLConfig:
    seeds: int = knob(5, "seeds per reward in Fig. 3(a)/(c); headline numbers are medians")
    iterations: int = knob(1000, "RL iterations of Fig. 3(a)")
    gamma: float = knob(10.0, "prover strength γ for the effective reward in Fig. 3(a)/(c)")
    alpha: float = knob(1.0, "α of the effective reward Q^π + α·A^μ")
    batch_size: int = knob(64, "responses per RL iteration")
    lr: float = knob(1e-3, "Adam learning rate")
    q_base: Literal["return", "rollouts"] = knob("return", "Q^π estimate: trajectory return or MC rollouts")
    baseline: Literal["none", "batch_mean", "mean_return"] = knob(
        "mean_return", "baseline: none (Eq. 5 as printed), batch_mean (of the whole weight), mean_return (of Q̂^π only)")
    eval_every: int = knob(10, "iterations between accuracy evaluations")
    eval_samples: int = knob(1024, "samples per accuracy evaluation")


@dataclass(frozen=True)
class SweepConfig:
    gammas: tuple[float, ...] = knob(
        (1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 12.0, 15.0, 20.0, 50.0, 100.0, 1e3, 1e4), "prover strengths γ of Fig. 3(b)")
    seeds: int = knob(3, "seeds per (γ, reading, optimiser)")
    iterations: int = knob(300, "RL iterations per sweep run (accuracy is averaged over them)")
    optimizers: tuple[str, ...] = knob(("adam", "sgd"), "optimisers to sweep under (adam, sgd)")
    adam_lr: float = knob(1e-3, "Adam learning rate in the sweep")
    sgd_lr: float = knob(0.1, "plain SGD learning rate in the sweep")
    n_mc: int = knob(128, "rollouts of μ per prefix for the Monte-Carlo reading of A^μ")


@dataclass(frozen=True)
class PassAtNConfig:
    checkpoints: tuple[int, ...] = knob((40, 100), "RL iterations whose policies get Pass@N (Fig. 3(c) uses 100)")
    max_samples: int = knob(2**20, "samples per policy for tiny success probabilities")
    min_successes: int = knob(1000, "stop sampling a policy early once it has this many successes")


@dataclass(frozen=True)
class QBaseConfig:
    seeds: int = knob(3, "seeds for the Q^π estimator comparison (0 skips it)")
    iterations: int = knob(150, "RL iterations of the comparison")
    rollouts: int = knob(16, "rollouts of π per prefix for the Monte-Carlo Q^π")


@dataclass(frozen=True)
class RemarkConfig:
    states: int = knob(2000, "states of the random tabular MDP")
    actions: int = knob(10, "actions per state")
    ks: tuple[int, ...] = knob(tuple(range(1, 33)), "Best-of-K prover sizes K")
    mean_q: tuple[float, ...] = knob((0.005, 0.01, 0.3), "mean Q^π of the random tables (uniform on [0, 2·mean])")


@dataclass(frozen=True)
class DidacticConfig:
    task: TaskConfig = knob(TaskConfig(), "the planted sub-sequence task")
    sft: SFTConfig = knob(SFTConfig(), "supervised initialisation of π")
    rl: RLConfig = knob(RLConfig(), "Fig. 3(a)/(c) RL runs")
    sweep: SweepConfig = knob(SweepConfig(), "Fig. 3(b) prover-strength sweep")
    pass_at_n: PassAtNConfig = knob(PassAtNConfig(), "Fig. 3(c) Pass@N")
    q_base: QBaseConfig = knob(QBaseConfig(), "return vs Monte-Carlo Q^π")
    remark: RemarkConfig = knob(RemarkConfig(), "Remark 3.1 numerics")
    seed: int = knob(0, "first seed; runs use seed, seed + 1, ...")
    workers: int = knob(2, "worker processes (0: run in this process)")

    def __post_init__(self) -> None:
        late = [it for it in self.pass_at_n.checkpoints if not 0 <= it <= self.rl.iterations]
        if late:
            raise ValueError(f"pass_at_n.checkpoints {late} lie outside 0..rl.iterations={self.rl.iterations}")
        if self.rl.seeds < 1 or self.sweep.seeds < 1 or self.workers < 0:
            raise ValueError("rl.seeds and sweep.seeds must be >= 1 and workers >= 0")
        unknown = set(self.sweep.optimizers) - {"adam", "sgd"}
        if unknown:
            raise ValueError(f"sweep.optimizers: unknown {sorted(unknown)}; choose from adam, sgd")


# ----------------------------------------------------------------------------------- jobs


def didactic_jobs(cfg: DidacticConfig, run_dir: Path) -> list[Job]:
    """Every job of the stage, with the progress units each reports."""
    ck = cfg.pass_at_n.checkpoints
    # longest and most depended-on jobs first: the pool starts jobs in list order
    jobs = [Job("fig3a", job_fig3a, cfg.sft.iterations + cfg.rl.iterations, {"cfg": cfg, "run_dir": str(run_dir)})]
    if cfg.q_base.seeds:
        jobs.append(Job("q_base_rollouts", job_q_base, cfg.sft.iterations + cfg.q_base.iterations,
                        {"cfg": cfg, "mode": "rollouts"}))
    jobs += [
        Job("pass_at_n_sft", job_pass_at_n, 1, {"cfg": cfg, "source": "sft", "run_dir": str(run_dir)}),
        Job("remark", job_remark, 1, {"cfg": cfg}),
        Job("adv_scale", job_adv_scale, 1, {"cfg": cfg}),
    ]
    # chained after the SFT evaluation so that unchanged policies reuse its cached counts
    chain = ["fig3a", "pass_at_n_sft"]
    for it in ck:
        jobs.append(Job(f"pass_at_n_iter{it}", job_pass_at_n, 1,
                        {"cfg": cfg, "source": str(_ckpt(run_dir, it)), "run_dir": str(run_dir)}, after=tuple(chain)))
        chain.append(f"pass_at_n_iter{it}")
    jobs += [Job(f"sweep_{opt}", job_sweep, cfg.sft.iterations + cfg.sweep.iterations, {"cfg": cfg, "optimizer": opt})
             for opt in cfg.sweep.optimizers]
    if cfg.q_base.seeds:
        jobs.append(Job("q_base_return", job_q_base, cfg.sft.iterations + cfg.q_base.iterations,
                        {"cfg": cfg, "mode": "return"}))
    return jobs


def _ckpt(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"fig3a-iter{iteration}.safetensors"


def _setup(seeds: list[int], cfg: DidacticConfig, progress: Progress | None):
    import torch

    from pav.didactic.policy import MadeEnsemble
    from pav.didactic.task import PlantedTask
    from pav.didactic.train import train_sft

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    task = PlantedTask(**vars(cfg.task))
    policy = MadeEnsemble(seeds, length=task.length, vocab_size=task.vocab_size)
    s = cfg.sft
    losses = train_sft(policy, task, s.gamma, s.samples, s.iterations, s.batch_size, s.lr, progress)
    return task, policy, losses


def job_fig3a(progress: Progress, cfg: DidacticConfig, run_dir: str) -> dict[str, Any]:
    """Fig. 3(a): accuracy vs iterations, effective reward vs outcome-only, same SFT start per seed."""
    from safetensors.torch import save_file

    from pav.didactic.train import Member, RLSettings, train_rl

    seeds = _seeds(cfg, cfg.rl.seeds)
    r = cfg.rl
    members = [Member(s, "effective", r.gamma, r.alpha) for s in seeds] + [Member(s, "outcome") for s in seeds]
    task, policy, sft_losses = _setup([m.seed for m in members], cfg, progress)
    settings = RLSettings(r.iterations, r.batch_size, "adam", r.lr, r.q_base, cfg.q_base.rollouts, r.baseline,
                          r.eval_every, r.eval_samples, tuple(cfg.pass_at_n.checkpoints))
    start = time.perf_counter()
    hist = train_rl(policy, task, members, settings, progress)
    seconds = time.perf_counter() - start
    for it, state in hist.checkpoints.items():
        path = _ckpt(Path(run_dir), it)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"seeds": ",".join(map(str, policy.seeds)),
                                              "rewards": ",".join(m.reward for m in members)})
    acc = np.array(hist.eval_accuracy)  # (points, E)
    n = len(seeds)
    return {"seeds": seeds, "eval_iterations": hist.eval_iterations,
            "effective": acc[:, :n].T.tolist(), "outcome": acc[:, n:].T.tolist(),
            "sft_final_loss": sft_losses[-1], "rl_seconds": seconds}


def job_pass_at_n(progress: Progress, cfg: DidacticConfig, source: str, run_dir: str) -> dict[str, Any]:
    """Success probability (successes / samples) of each member of the SFT or a saved ensemble."""
    from pav.didactic.train import success_counts

    if source == "sft":
        seeds = _seeds(cfg, cfg.rl.seeds)
        task, policy, _ = _setup(seeds, cfg, None)
        labels = ["sft"] * len(seeds)
    else:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(source, "pt") as f:
            meta = f.metadata()
        seeds = [int(s) for s in meta["seeds"].split(",")]
        labels = meta["rewards"].split(",")
        task, policy, _ = _setup(seeds, cfg, None)
        policy.load_state_dict(load_file(source))
    p = cfg.pass_at_n
    cache = Path(run_dir) / "jobs" / "pass_at_n_cache"
    cache.mkdir(parents=True, exist_ok=True)
    succ, n = success_counts(policy, task, p.max_samples, min_successes=p.min_successes, cache_dir=cache)
    progress(1)
    return {"seeds": seeds, "labels": labels, "successes": succ.tolist(), "samples": n.tolist()}


def job_sweep(progress: Progress, cfg: DidacticConfig, optimizer: str) -> dict[str, Any]:
    """Fig. 3(b): run-averaged accuracy for every γ, exact and MC A^μ, plus outcome-only."""
    from pav.didactic.train import Member, RLSettings, train_rl

    sw = cfg.sweep
    seeds = _seeds(cfg, sw.seeds)
    members = [Member(s, "effective", g, cfg.rl.alpha, adv, sw.n_mc)
               for g in sw.gammas for adv in ("exact", "mc") for s in seeds]
    members += [Member(s, "outcome") for s in seeds]
    task, policy, _ = _setup([m.seed for m in members], cfg, progress)
    lr = {"adam": sw.adam_lr, "sgd": sw.sgd_lr}[optimizer]
    settings = RLSettings(sw.iterations, cfg.rl.batch_size, optimizer, lr, q_base="return", q_rollouts=0,
                          baseline=cfg.rl.baseline, eval_every=0, eval_samples=0, checkpoints=())
    hist = train_rl(policy, task, members, settings, progress)
    run_avg = np.array(hist.batch_accuracy).mean(axis=0)  # (E,)
    return {"members": [{"seed": m.seed, "reward": m.reward, "gamma": m.gamma, "adv": m.adv,
                         "run_avg_accuracy": float(a)} for m, a in zip(members, run_avg)]}


def job_q_base(progress: Progress, cfg: DidacticConfig, mode: str) -> dict[str, Any]:
    """Effective-reward RL with Q^π from the trajectory return vs from MC rollouts of π."""
    from pav.didactic.train import Member, RLSettings, train_rl

    q, r = cfg.q_base, cfg.rl
    seeds = _seeds(cfg, q.seeds)
    members = [Member(s, "effective", r.gamma, r.alpha) for s in seeds]
    task, policy, _ = _setup(seeds, cfg, progress)
    settings = RLSettings(q.iterations, r.batch_size, "adam", r.lr, mode, q.rollouts, r.baseline,
                          r.eval_every, r.eval_samples, checkpoints=())
    start = time.perf_counter()
    hist = train_rl(policy, task, members, settings, progress)
    return {"eval_iterations": hist.eval_iterations, "accuracy": np.array(hist.eval_accuracy).T.tolist(),
            "seconds_per_iteration": (time.perf_counter() - start) / q.iterations}


def job_remark(progress: Progress, cfg: DidacticConfig) -> dict[str, Any]:
    """Remark 3.1: distinguishability and alignment of BoK(π) provers on random tabular Q^π."""
    rm = cfg.remark
    rng = np.random.default_rng(cfg.seed)
    out = {}
    for mean in rm.mean_q:
        q = rng.uniform(0.0, 2.0 * mean, size=(rm.states, rm.actions))  # (S, A) Q^π
        pi = rng.dirichlet(np.ones(rm.actions), size=rm.states)  # (S, A) π(a|s)
        v = np.sum(pi * q, axis=1, keepdims=True)  # (S, 1) V^π
        rows = [bok_terms(q, v, pi, k) for k in rm.ks]
        out[str(mean)] = {"ks": list(rm.ks), "distinguishability": [d for d, _ in rows],
                          "alignment": [a for _, a in rows]}
    progress(1)
    return out


def job_adv_scale(progress: Progress, cfg: DidacticConfig, n: int = 8192) -> dict[str, Any]:
    """How large A^μ is at each swept γ on responses like the initial policy's (samples of μ_sft).

    Plain SGD moves parameters in proportion to these magnitudes; Adam normalises them away.
    """
    from pav.didactic.prover import GammaProver
    from pav.didactic.task import PlantedTask

    task = PlantedTask(**vars(cfg.task))
    states = task.states(GammaProver(task, cfg.sft.gamma).sample(n, np.random.default_rng(cfg.seed)))
    live = task.action_mask(states)
    rows = []
    for g in cfg.sweep.gammas:
        adv = np.abs(GammaProver(task, g).advantages(states))[live]  # |A^μ| of live steps
        rows.append({"gamma": g, "mean_abs_adv": float(adv.mean()), "share_abs_adv_ge_0.1": float((adv >= 0.1).mean())})
    progress(1)
    return {"steps": int(live.sum()), "rows": rows}


def bok_terms(q_base: np.ndarray, v_base: np.ndarray, policy_probs: np.ndarray, k: int) -> tuple[float, float]:
    """(distinguishability, alignment) of the BoK(π) prover: A^{BoK} = BoK(Q^π) − BoK(V^π)."""
    adv_prover = best_of_k(q_base, k) - best_of_k(v_base, k)
    return (distinguishability(adv_prover, policy_probs),
            alignment(adv_prover, q_base - v_base, policy_probs))


def _seeds(cfg: DidacticConfig, n: int) -> list[int]:
    return list(range(cfg.seed, cfg.seed + n))


# ------------------------------------------------------------------------------- summary


def iterations_to_reach(iterations: list[int], accuracy: list[float], level: float, run_length: int) -> int:
    """First evaluated iteration with accuracy >= level; a run that never gets there counts as its length."""
    return next((it for it, a in zip(iterations, accuracy) if a >= level), run_length)


@dataclass(frozen=True)
class DidacticSummary:
    """``summary.json`` of a `pav didactic` run: `summarize`'s numbers, then the stage's. Nested
    values are plain JSON (one section per figure)."""
    STAGES = ("didactic",)
    fig3a: dict[str, Any]
    fig3b: dict[str, Any]
    fig3c: dict[str, Any]
    remark_3_1: dict[str, Any]
    adv_scale: dict[str, Any]
    q_base: dict[str, Any] | None  # None with q_base.seeds = 0
    sft_gamma: float
    wall_seconds: float
    fig3b_reading: str
    checks: list[Any]  # each target with the measured value and whether it passed


def summarize(cfg: DidacticConfig, results: dict[str, dict]) -> dict[str, Any]:
    """Every number of the report, each with the paper's value and the target it is checked against."""
    summary = {"fig3a": _summary_fig3a(cfg, results["fig3a"]),
               "fig3b": _summary_fig3b(cfg, results),
               "fig3c": _summary_fig3c(cfg, results),
               "remark_3_1": _summary_remark(results["remark"]),
               "adv_scale": results["adv_scale"],
               "q_base": {mode: results[f"q_base_{mode}"] for mode in ("return", "rollouts")} if cfg.q_base.seeds
               else None}
    return summary


def _acc_at(iterations: list[int], curves: list[list[float]], it: int) -> float | None:
    if it not in iterations:
        return None
    return float(np.median([c[iterations.index(it)] for c in curves]))


def _summary_fig3a(cfg: DidacticConfig, r: dict) -> dict[str, Any]:
    its, n_it = r["eval_iterations"], cfg.rl.iterations
    reach = {k: [iterations_to_reach(its, c, 0.5, n_it) for c in r[k]] for k in ("effective", "outcome")}
    med = {k: float(np.median(v)) for k, v in reach.items()}
    return {
        "effective_acc_at_150": _acc_at(its, r["effective"], 150),
        "effective_acc_at_1000": _acc_at(its, r["effective"], 1000),
        "outcome_acc_at_300": _acc_at(its, r["outcome"], 300),
        "iterations_to_0.5": reach,
        "iterations_to_0.5_median": med,
        "speedup_to_0.5": med["outcome"] / max(med["effective"], 1.0),
        "rl_seconds": r["rl_seconds"],
        "curves": {k: r[k] for k in ("eval_iterations", "effective", "outcome")},
    }


def _summary_fig3b(cfg: DidacticConfig, results: dict) -> dict[str, Any]:
    out = {}
    for opt in cfg.sweep.optimizers:
        members = results[f"sweep_{opt}"]["members"]
        base = float(np.median([m["run_avg_accuracy"] for m in members if m["reward"] == "outcome"]))
        curves = {}
        for adv in ("exact", "mc"):
            curves[adv] = [float(np.median([m["run_avg_accuracy"] for m in members
                                          if m["reward"] == "effective" and m["adv"] == adv and m["gamma"] == g]))
                           for g in cfg.sweep.gammas]
        out[opt] = {"gammas": list(cfg.sweep.gammas), "outcome": base, **curves}
    return out


def _summary_fig3c(cfg: DidacticConfig, results: dict) -> dict[str, Any]:
    policies: dict[str, list[tuple[int, int]]] = {}
    sources = [("sft", results["pass_at_n_sft"])] + [
        (f"iter{it}", results[f"pass_at_n_iter{it}"]) for it in cfg.pass_at_n.checkpoints]
    for tag, r in sources:
        for label, c, n in zip(r["labels"], r["successes"], r["samples"]):
            name = "sft" if label == "sft" else f"{label}@{tag[4:]}"
            policies.setdefault(name, []).append((c, n))
    out = {}
    for name, counts in policies.items():
        per_seed = [[pass_at_n(n, c, k) for k in POWERS_OF_TWO] for c, n in counts]
        out[name] = {"n": list(POWERS_OF_TWO), "pass_at_n_median": np.median(per_seed, axis=0).tolist(),
                     "pass_at_n_per_seed": per_seed, "success_probability": [c / n for c, n in counts],
                     "samples": [n for _, n in counts]}
    return out


def _summary_remark(r: dict) -> dict[str, Any]:
    out = {}
    for mean, d in r.items():
        dist = d["distinguishability"]
        ks = d["ks"]
        entry = {"k_maximising_distinguishability": ks[int(np.argmax(dist))], **d}
        if 1 in ks and 4 in ks:
            entry["ratio_k4_over_k1"] = dist[ks.index(4)] / dist[ks.index(1)]
        out[mean] = entry
    return out
