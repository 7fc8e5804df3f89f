"""The vLLM adapter, driven by a stand-in engine that follows vLLM's documented `LLM.generate`
contract (stop strings kept with include_stop_str_in_output, finish_reason/stop_reason, per-request
seeds, num_cached_tokens). What it pins: the protocol's stop rule, exact token accounting, seeds
per row on a GPU and none on a CPU (they crash vLLM's CPU engine), the CPU defaults, prefix caching
switched on, and a clear error without vLLM. tests/policies/test_vllm_real.py runs real vLLM."""

import random
import sys
import types
from dataclasses import dataclass, field

import pytest

from pav.policies.base import Generation, PolicyLoadError, scan_steps

EOS = "$"  # the stand-in's end-of-sequence character (one token per character)


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    seed: int | None = None


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str
    stop_reason: str | None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int


def continuation(prompt: str, seed: int | None) -> str:
    """What the stand-in model would write after ``prompt``: steps 'x<d>', an 'ans <d>' line after
    two or more steps, then eos."""
    rng = random.Random(f"{seed}|{prompt}")
    steps = prompt.count("\n") - 1  # the prompt itself is one line
    if steps >= 2 and rng.random() < 0.5:
        return f"ans {rng.randrange(10)}\n{EOS}"
    return f"x{rng.randrange(10)}\n" + ("" if rng.random() < 0.9 else EOS)


EOS_ID = 0  # the stand-in's tokens: one per character (its byte value), and EOS_ID for eos


class LLM:
    instances: list["LLM"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.cache, self.calls, self.seeds = kwargs, set(), 0, []
        LLM.instances.append(self)

    def get_tokenizer(self):
        return types.SimpleNamespace(
            encode=lambda text, add_special_tokens=False: list(text.encode()),
            decode=lambda ids, skip_special_tokens=True: bytes(i for i in ids if i != EOS_ID).decode())

    def generate(self, prompts, params, use_tqdm=True):
        self.calls += 1
        self.seeds += [p.seed for p in params]
        outs = []
        for prompt, p in zip(prompts, params, strict=True):
            cached = max((len(c) for c in self.cache if prompt.startswith(c)), default=0)
            self.cache.add(prompt)
            text = ""
            while EOS not in text and len(text) <= p.max_tokens:  # steps until eos or past the budget
                text += continuation(prompt + text, p.seed)
            cut, finish, reason = len(text), "length", None
            for stop in p.stop:
                at = text.find(stop)
                if at >= 0 and at + len(stop) <= cut:
                    cut, finish, reason = at + (len(stop) if p.include_stop_str_in_output else 0), "stop", stop
            if text.find(EOS) >= 0 and text.find(EOS) < cut:
                cut, finish, reason = text.find(EOS), "stop", None
            ids = list(text[:cut].encode()) + ([EOS_ID] if reason is None and finish == "stop" else [])  # eos is sampled
            if len(ids) > p.max_tokens:
                ids = ids[: p.max_tokens]
                cut = len(ids)
                finish, reason = "length", None
            outs.append(RequestOutput(list(prompt.encode()), [CompletionOutput(text[:cut], ids, finish, reason)], cached))
        return outs


def install_fake(monkeypatch, cpu: bool):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: cpu)
    module.platforms = platforms
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    LLM.instances.clear()
    return module


@pytest.fixture
def fake_vllm(monkeypatch):
    """vLLM's CUDA build."""
    return install_fake(monkeypatch, cpu=False)


@pytest.fixture
def fake_vllm_cpu(monkeypatch):
    """vLLM's CPU build, with none of its environment variables set."""
    for name in ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.setenv(name, "")  # so that teardown restores the variable as it was, set or not
        monkeypatch.delenv(name)
    return install_fake(monkeypatch, cpu=True)


def policy(dtype="auto", **kw):
    from pav.policies.vllm_backend import VLLMPolicy

    return VLLMPolicy("some/model", "vllm-test", delimiter="\n", dtype=dtype, trust_remote_code=False,
                      max_model_len=200, **kw)


def is_final(line):
    return line.startswith("ans")


def test_the_engine_runs_with_prefix_caching(fake_vllm):
    p = policy(dtype="bfloat16")
    assert LLM.instances[0].kwargs["enable_prefix_caching"] is True
    assert LLM.instances[0].kwargs["dtype"] == "bfloat16" and LLM.instances[0].kwargs["trust_remote_code"] is False
    assert p.max_positions == 200


def test_on_a_cpu_requests_carry_no_seed_and_the_engine_gets_cpu_defaults(fake_vllm_cpu, monkeypatch):
    import os

    monkeypatch.setattr("pav.policies.vllm_backend._cpu_has_bf16", lambda: True)
    p = policy(seed=5)
    kwargs = LLM.instances[0].kwargs
    assert kwargs["dtype"] == "bfloat16" and kwargs["enable_prefix_caching"] is True and kwargs["seed"] == 5
    assert "gpu_memory_utilization" not in kwargs and kwargs["block_size"] == 32  # prefix caching of short prompts
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "2"
    batch = p.sample(["q1\n", "q2\n"], 3, until="solution", max_steps=4, max_new_tokens=40, seed=[1, 2],
                     is_final_step=is_final)
    assert LLM.instances[0].seeds and all(s is None for s in LLM.instances[0].seeds)  # "CPU Generator does not use offset"
    assert batch.generated_tokens == sum(g.n_tokens for row in batch.generations for g in row)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")  # what a user set stays
    policy(dtype="float16")
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "8" and LLM.instances[1].kwargs["dtype"] == "float16"
    monkeypatch.setattr("pav.policies.vllm_backend._cpu_has_bf16", lambda: False)  # AVX2 only: bf16 is slow there
    policy()
    assert LLM.instances[2].kwargs["dtype"] == "float32"


def test_on_a_gpu_every_row_gets_its_own_seed(fake_vllm):
    p = policy()
    kwargs = LLM.instances[0].kwargs
    assert kwargs["gpu_memory_utilization"] == 0.85 and kwargs["dtype"] == "auto" and "block_size" not in kwargs
    p.sample(["q1\n", "q2\n"], 3, until="step", max_steps=4, max_new_tokens=40, seed=[1, 2])
    assert len(set(LLM.instances[0].seeds)) == 6


def test_step_mode_stops_at_the_first_delimiter(fake_vllm):
    batch = policy().sample(["q1\n", "q2\nx1\n"], 4, until="step", max_steps=8, max_new_tokens=50, seed=3)
    for row in batch.generations:
        for g in row:
            if g.finished and not g.text.startswith("ans"):
                assert g.text.endswith("\n") and g.text.count("\n") == 1
            assert g.n_tokens == len(g.text) + (0 if g.text.endswith("\n") else 1)  # + eos when it ended there
    assert batch.generated_tokens == sum(g.n_tokens for row in batch.generations for g in row)


def test_solution_mode_follows_the_shared_stop_rule(fake_vllm):
    contexts = ["q1\n", "q2\nx4\n", "q3\nx1\nx2\n"]
    batch = policy().sample(contexts, 6, until="solution", max_steps=5, max_new_tokens=100, seed=11,
                            is_final_step=is_final)
    for ctx, row in zip(contexts, batch.generations):
        for g in row:
            lines = g.text.split("\n")[:-1]
            assert 1 <= len(lines) <= 5
            assert all(not is_final(line) for line in lines[:-1])  # nothing after a final step
            if is_final(lines[-1]):
                assert g.finished and g.n_tokens == len(g.text)  # cut at the final step: no token past it counts
            elif len(lines) == 5:
                assert not g.finished and g.n_tokens == len(g.text)  # the max_steps budget
            else:
                assert g.finished and g.n_tokens == len(g.text) + 1  # eos after a step
            scan = scan_steps(g.text, 0, until="solution", delimiter="\n", max_steps=5, is_final_step=is_final)
            assert scan.end in (None, len(g.text))
    assert batch.generated_tokens == sum(g.n_tokens for row in batch.generations for g in row)
    assert LLM.instances[0].calls == 1  # a solution row is one request: its whole budget, cut afterwards


def test_a_blank_line_is_no_step_so_a_step_row_asks_again(fake_vllm, monkeypatch):
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "continuation", lambda prompt, seed: "\n" if prompt.endswith("q\n") else "x1\n")
    batch = policy().sample(["q\n"], 2, until="step", max_steps=4, max_new_tokens=20, seed=0)
    assert batch.texts == [["\nx1\n", "\nx1\n"]] and all(g.finished and g.n_tokens == 4 for g in batch.generations[0])


def test_a_token_budget_cuts_rows_unfinished(fake_vllm):
    batch = policy().sample(["q\n"], 3, until="solution", max_steps=10, max_new_tokens=5, seed=0, is_final_step=is_final)
    for g in batch.generations[0]:
        assert g.n_tokens <= 5
        assert not g.finished or g.text.endswith("\n") or g.n_tokens < 5


def test_rows_depend_on_their_own_seed_only(fake_vllm):
    p = policy()
    alone = p.sample(["q1\n"], 3, until="solution", max_steps=5, max_new_tokens=60, seed=[7], is_final_step=is_final)
    mixed = p.sample(["q0\n", "q1\n"], 3, until="solution", max_steps=5, max_new_tokens=60, seed=[5, 7],
                     is_final_step=is_final)
    assert alone.texts[0] == mixed.texts[1]
    again = p.sample(["q1\n"], 3, until="solution", max_steps=5, max_new_tokens=60, seed=[7], is_final_step=is_final)
    assert again.texts == alone.texts


def test_prompt_tokens_count_only_what_the_prefix_cache_missed(fake_vllm):
    p = policy()
    first = p.sample(["question\n"], 4, until="step", max_steps=5, max_new_tokens=20, seed=1)
    assert first.prompt_tokens == len("question\n")  # 4 rollouts, the shared prompt encoded once
    second = p.sample(["question\n"], 4, until="step", max_steps=5, max_new_tokens=20, seed=2)
    assert second.prompt_tokens == 0


def test_without_vllm_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(PolicyLoadError, match=r"pav\[vllm\].*pav\[vllm-cpu\]"):
        policy()


def test_training_stages_refuse_the_vllm_backend():
    from pav.policies.options import LoadOptions

    with pytest.raises(ValueError, match="label, search"):
        LoadOptions(backend="vllm").check_trainable("rl")


def test_one_engine_per_model_and_settings_in_a_process(fake_vllm, monkeypatch):
    from pav.policies import load
    from pav.policies.options import LoadOptions

    monkeypatch.setattr(load, "_ENGINES", {})
    first = load.load_policy("org/model", 8, load=LoadOptions(backend="vllm"))
    assert load.load_policy("org/model", 64, load=LoadOptions(backend="vllm")) is first  # every search job: one start
    assert load.load_policy("org/model", 8, load=LoadOptions(backend="vllm", max_model_len=256)) is not first
    assert len(LLM.instances) == 2 and LLM.instances[1].kwargs["max_model_len"] == 256


def test_a_step_that_reaches_max_step_chars_is_cut_there_as_on_the_transformers_path(fake_vllm, monkeypatch):
    """The shared over-long-step rule cuts the engine's text at the over-long step's 4th character;
    n_tokens counts the tokens up to the cut (one per character here); the row is a budget cut."""
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "continuation", lambda prompt, seed: "abcdefgh\nans 1\n" + EOS if prompt.endswith("x1\n")
                        else "x1\nabcdefgh\nans 1\n" + EOS)
    p = policy()
    kw = dict(max_steps=5, max_new_tokens=40, seed=0, is_final_step=is_final, max_step_chars=4)
    assert p.sample(["q\n"], 2, until="solution", **kw).generations == [[Generation("x1\nabcd", 7, False)] * 2]
    assert p.sample(["q\nx1\n"], 2, until="step", **kw).generations == [[Generation("abcd", 4, False)] * 2]
    assert p.sample(["q\n"], 1, until="step", **kw).generations == [[Generation("x1\n", 3, True)]]
    whole = p.sample(["q\n"], 1, until="solution", **{**kw, "max_step_chars": 9}).generations  # 8 < 9: untouched
    assert whole == [[Generation("x1\nabcdefgh\nans 1\n", 18, True)]]
    budget = p.sample(["q\n"], 1, until="solution", **{**kw, "max_new_tokens": 6}).generations
    assert budget == [[Generation("x1\nabc", 6, False)]]  # the token budget ends the row before the step reaches 4
