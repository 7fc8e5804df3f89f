"""ModReach-10: generator, step grammar, checker labels and noisy expert."""

import collections
import itertools
import json
import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pav.core.config import ConfigError, resolve
from pav.core.records import Problem
from pav.tasks import ModReach, ModReachConfig, Task, join_steps
from pav.tasks.modreach import POOLS, apply_op, canonical_key, distances

TASK = ModReach()
EXAMPLE = TASK.make_problem(["*3", "+3", "*2"], start=0, target=8, budget=6)
SOLVED = ["0+3=3", "3*2=6", "6*3=8", "ans 8"]
GRAMMAR_CHARS = "0123456789+*= anstomdx\n"


def _optimal_path(problem: Problem, rng: random.Random) -> list[str]:
    """A shortest solution built from the BFS distances, choosing among shortest moves at random."""
    meta = problem.meta
    dist = distances(meta["ops"], meta["target"])
    x, lines = meta["start"], []
    while x != meta["target"]:
        op = rng.choice([op for op in meta["ops"] if dist[apply_op(op, x, 10)] == dist[x] - 1])
        y = apply_op(op, x, 10)
        lines.append(f"{x}{op}={y}")
        x = y
    return lines + [f"ans {x}"]


# ------------------------------------------------------------------------------ problems


def test_task_satisfies_protocol_and_prompt_has_the_fixed_format():
    assert isinstance(TASK, Task)
    assert (TASK.name, TASK.step_delimiter, TASK.max_steps, TASK.max_step_chars) == ("modreach", "\n", 12, 16)
    assert TASK.prompt(EXAMPLE) == "0 to 8 mod 10 ops *3 +3 *2 max 6\n"
    assert len(TASK.prompt(EXAMPLE)) == 33
    assert (EXAMPLE.question, EXAMPLE.answer) == ("0 to 8 mod 10 ops *3 +3 *2 max 6", "8")
    assert EXAMPLE.meta == {"start": 0, "target": 8, "ops": ["*3", "+3", "*2"], "budget": 6,
                            "distance": 3, "modulus": 10}
    for p in TASK.problems(500, seed=3):
        prompt = TASK.prompt(p)
        assert len(prompt) == 33
        assert re.fullmatch(r"[0-9] to [0-9] mod 10 ops ([+*][0-9] ){3}max [0-9]\n", prompt)
        assert prompt[:-1] == p.question and p.answer == str(p.meta["target"])


def test_problems_are_deterministic_prefix_stable_and_json_records():
    a = TASK.problems(300, seed=7)
    assert a == TASK.problems(300, seed=7)
    assert a[:100] == TASK.problems(100, seed=7)
    assert a != TASK.problems(300, seed=8)
    assert len({p.problem_id for p in a}) == 300
    for p in a[:50]:
        assert Problem.from_dict(json.loads(json.dumps(p.to_dict()))) == p
        assert p.meta == json.loads(json.dumps(p.meta))  # plain JSON: lists, not tuples
    assert TASK.problems(0, seed=0) == []
    with pytest.raises(ValueError):
        TASK.problems(1, seed=0, split="test")


def test_train_and_heldout_are_disjoint_by_canonical_problem():
    key = lambda p: canonical_key(p.meta["ops"], p.meta["start"], p.meta["target"])  # noqa: E731
    train = {key(p) for seed in (0, 1) for p in TASK.problems(2000, seed, "train")}
    heldout = {key(p) for p in TASK.problems(1000, 0, "heldout")}
    assert train and heldout and not train & heldout
    assert TASK.problems(50, 0, "heldout") == TASK.problems(50, 0, "heldout")
    # The split is by canonical triple: about heldout_fraction of the 4,530 P12 triples.
    shares = [TASK.split_of(ops, s, t) == "heldout" for ops, s, t in _triples("P12")]
    assert 0.17 < sum(shares) / len(shares) < 0.23
    assert TASK.split_of(["*2", "+3", "*3"], 0, 8) == TASK.split_of(["*3", "+3", "*2"], 0, 8)


def _triples(pool: str):
    for ops in itertools.combinations(POOLS[pool], 3):
        if len({tuple(apply_op(op, x, 10) for x in range(10)) for op in ops}) < 3:
            continue
        for t in range(10):
            for s, d in enumerate(distances(ops, t)):
                if d is not None and 3 <= d <= 5:
                    yield ops, s, t


@pytest.mark.parametrize(("pool", "count"), [("P12", 4530), ("full", 13428), ("P7", 723)])
def test_problem_space_sizes_match_the_design(pool, count):
    assert sum(1 for _ in _triples(pool)) == count


def test_distance_distribution_budget_and_ops():
    probs = TASK.problems(3000, seed=11)
    d = collections.Counter(p.meta["distance"] for p in probs)
    assert set(d) <= {3, 4, 5}
    assert 0.86 < d[3] / 3000 < 0.94 and 0.06 < d[4] / 3000 < 0.13 and d[5] / 3000 < 0.02
    for p in probs:
        m = p.meta
        assert m["budget"] - m["distance"] in (1, 2, 3)
        assert len(set(m["ops"])) == 3 and set(m["ops"]) <= set(POOLS["P12"])
        assert distances(m["ops"], m["target"])[m["start"]] == m["distance"]


def test_bfs_distances_agree_with_brute_force():
    for p in TASK.problems(4, seed=5) + [EXAMPLE]:
        ops, t = p.meta["ops"], p.meta["target"]
        brute: dict[int, int] = {}
        for k in range(7):
            for seq in itertools.product(ops, repeat=k):
                for s in range(10):
                    x = s
                    for op in seq:
                        x = apply_op(op, x, 10)
                    if x == t:
                        brute.setdefault(s, k)
        assert [brute.get(s) for s in range(10)] == [d if d is not None and d < 7 else None
                                                   for d in distances(ops, t)]


def test_generation_is_fast():
    start = time.perf_counter()
    assert len(ModReach().problems(10_000, seed=123)) == 10_000
    assert time.perf_counter() - start < 3.0  # ~0.25 s measured; generous for a shared machine


def test_config_is_a_stage_section_with_checks():
    cfg = resolve(ModReachConfig, overrides=["op_pool=P7", "slack=1,2", "d_max=4"])
    assert (cfg.op_pool, cfg.slack, cfg.d_max) == ("P7", (1, 2), 4)
    probs = ModReach(cfg).problems(200, seed=0)
    assert all(set(p.meta["ops"]) <= set(POOLS["P7"]) and p.meta["distance"] <= 4 for p in probs)
    for bad in (["op_pool=P9"], ["d_min=4", "d_max=3"], ["p_err=0.9", "p_rand=0.2"],
                ["heldout_fraction=0"], ["slack="]):
        with pytest.raises(ConfigError):
            resolve(ModReachConfig, overrides=bad)


# ------------------------------------------------------------------------------ checker


def _labels(problem: Problem, steps: list[str]) -> list[tuple[str, str]]:
    return [(s.label, s.detail) for s in TASK.analyse(problem, steps).steps]


def test_checker_on_the_worked_example():
    a = TASK.analyse(EXAMPLE, SOLVED)
    assert a.success and a.reason == "ok" and a.first_error is None
    assert a.labels == ("progress", "progress", "progress", "answer_ok")
    assert [(s.state, s.dist, s.used, s.budget_pit) for s in a.steps] == [
        (3, 2, 1, False), (6, 1, 2, False), (8, 0, 3, False), (8, 0, 3, False)]
    assert TASK.outcome(EXAMPLE, SOLVED) == 1.0
    assert TASK.outcome(EXAMPLE, TASK.split_steps(join_steps(SOLVED))) == 1.0
    assert TASK.split_steps("0+3=3\n3*2=6\n6*3=8\nans 8") == SOLVED  # no final newline


def test_checker_on_the_design_trajectories():
    # the third op of each problem is one consistent with its tags.
    p = TASK.make_problem(["*6", "+1", "*9"], 0, 4, 5)
    steps = ["0+1=1", "1*9=9", "9*9=1", "1*3=3", "3+1=4", "ans 4"]
    assert _labels(p, steps) == [("progress", ""), ("progress", ""), ("regress", ""),
                                 ("error", "op_not_listed"), ("after_error", ""), ("after_error", "")]
    assert TASK.analyse(p, steps).first_error == 3 and TASK.outcome(p, steps) == 0.0

    p = TASK.make_problem(["*9", "+6", "+1"], 7, 1, 5)
    steps = ["7*9=3", "3+6=9", "9+6=5", "5+6=1", "ans 1"]
    assert _labels(p, steps) == [("progress", ""), ("progress", ""), ("no_progress", "sideways"),
                                 ("progress", ""), ("answer_ok", "")]

    steps = ["9 to 8", "9+4=3", "3 to 8", "3*4=2", "2*4=8", "ans 8"]
    p = TASK.make_problem(["+4", "*4", "+1"], 9, 8, 5)
    assert [lab for lab, _ in _labels(p, steps)] == ["no_progress", "progress", "no_progress",
                                                      "progress", "progress", "answer_ok"]
    assert TASK.outcome(p, steps) == 1.0  # used 5 = B
    tight = TASK.analyse(TASK.make_problem(["+4", "*4", "+1"], 9, 8, 4), steps)
    assert (tight.success, tight.reason) == (False, "over_budget")
    assert [s.budget_pit for s in tight.steps[:5]] == [False, False, True, True, True]

    p = TASK.make_problem(["*9", "+1", "+2"], 8, 5, 5)
    assert _labels(p, ["8*9=2", "2+1=3", "3*9=3"]) == [("progress", ""), ("progress", ""),
                                                       ("error", "wrong_result")]


@pytest.mark.parametrize(("first", "detail"), [
    ("1+3=4", "wrong_x"), ("1 to 8", "wrong_x"), ("0+1=1", "op_not_listed"),
    ("0*5=0", "op_not_listed"), ("0+3=4", "wrong_result"), ("0+3=13", "wrong_result"),
    ("0 to 7", "wrong_target"),
    *[(bad, "malformed") for bad in [
        "", " ", "0 + 3 = 3", "0+3=3 ", " 0+3=3", "0+3=03", "00+3=3", "0+03=3", "0-3=7", "0+3==3",
        "0+3=3\n", "0+3=3\r", "ans", "Ans 8", "0 to 8 max 6", "0+3=3; ans 8", "\u0660+3=3",
        "0+3=\u0663", "9" * 40 + "+3=3", "0+3=3=3", "__import__('os')", "0to 8"]]])
def test_every_invalid_first_line_is_a_pit(first, detail):
    steps = [first, *SOLVED[1:]]
    a = TASK.analyse(EXAMPLE, steps)
    assert a.steps[0].label == "error" and a.steps[0].detail == detail
    assert a.first_error == 0 and a.reason == "invalid_step" and not a.success
    assert set(a.labels[1:]) == {"after_error"}
    assert TASK.outcome(EXAMPLE, steps) == 0.0


@pytest.mark.parametrize(("steps", "reason"), [
    (SOLVED[:-1], "no_answer"),
    ([], "no_answer"),
    (["0+3=3", "ans 8"], "wrong_answer"),  # claims the target without reaching it
    (SOLVED[:-1] + ["ans 6"], "wrong_answer"),
    (["0+3=3", "ans 3"], "wrong_answer"),  # gives up
    (["0 to 8"] * 4 + SOLVED, "over_budget"),
    (["0+3=3", "3*2=6", "6*2=2", "2*3=6", "6*3=8", "8+3=1", "1*2=2", "ans 2"], "wrong_answer"),
])
def test_failing_solutions_without_invalid_lines(steps, reason):
    a = TASK.analyse(EXAMPLE, steps)
    assert (a.success, a.reason, a.first_error) == (False, reason, None)
    assert TASK.outcome(EXAMPLE, steps) == 0.0


def test_budget_is_inclusive_and_lines_after_the_answer_are_ignored():
    assert TASK.outcome(EXAMPLE, ["0 to 8"] * 3 + SOLVED) == 1.0  # used 6 = B
    a = TASK.analyse(EXAMPLE, SOLVED + ["8+3=1", "garbage"])
    assert a.success and a.labels[-2:] == ("after_answer", "after_answer")
    assert TASK.is_final_step("ans 8") and not TASK.is_final_step("ans 8 ")
    assert not any(TASK.is_final_step(s) for s in SOLVED[:-1])


def test_same_state_and_dead_end_moves():
    assert _labels(EXAMPLE, ["0*3=0", "0*2=0"]) == [("no_progress", "same_state")] * 2
    p = TASK.make_problem(["*2", "*5", "+5"], 3, 1, 4)  # {0, 5} is closed and cannot reach 1
    a = TASK.analyse(p, ["3*5=5", "5+5=0", "ans 0"])
    assert [(s.label, s.detail, s.dist, s.budget_pit) for s in a.steps] == [
        ("regress", "dead_end", None, True), ("no_progress", "sideways", None, True),
        ("answer_bad", "wrong_answer", None, False)]


_NUMS = st.integers(0, 12).map(str)
_LINES = st.one_of(
    st.builds(lambda x, op, a, y: f"{x}{op}{a}={y}", _NUMS, st.sampled_from("+*"), _NUMS, _NUMS),
    st.builds(lambda x, t: f"{x} to {t}", _NUMS, _NUMS),
    st.builds(lambda y: f"ans {y}", _NUMS),
    st.text(GRAMMAR_CHARS.replace("\n", ""), max_size=10),
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(), st.text(GRAMMAR_CHARS, max_size=60)))
def test_arbitrary_text_never_raises(text):
    steps = TASK.split_steps(text)
    assert all(s.strip() for s in steps)  # a blank line never becomes a step (pav.core.steps)
    a = TASK.analyse(EXAMPLE, steps)
    assert len(a.steps) == len(steps)
    assert TASK.outcome(EXAMPLE, steps) in (0.0, 1.0)
    TASK.is_final_step(text)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.lists(_LINES, max_size=14))
def test_analysis_invariants_on_grammar_like_lines(seed, steps):
    problem = TASK.problems(1, seed)[0]
    a = TASK.analyse(problem, steps)
    for k in range(len(steps) + 1):  # a prefix is labelled as in the whole solution
        assert TASK.analyse(problem, steps[:k]).steps == a.steps[:k]
    ended = [i for i, lab in enumerate(a.labels) if lab in ("error", "answer_ok", "answer_bad")]
    assert a.success == (bool(ended) and a.labels[ended[0]] == "answer_ok")
    if a.first_error is not None:
        assert a.labels[a.first_error] == "error" and not a.success
    if all(s.strip() for s in steps):  # a blank line is never a step of its own (pav.core.steps)
        assert TASK.split_steps(join_steps(steps)) == steps


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 4))
def test_optimal_paths_with_restates_within_slack_succeed(seed, restates):
    problem = TASK.problems(1, seed)[0]
    rng = random.Random(seed)
    moves = _optimal_path(problem, rng)
    states = [problem.meta["start"]] + [int(m[-1]) for m in moves[:-1]]  # before each line
    where = collections.Counter(rng.randrange(len(moves)) for _ in range(restates))
    path = [line for i, move in enumerate(moves)
            for line in [f"{states[i]} to {problem.meta['target']}"] * where[i] + [move]]
    a = TASK.analyse(problem, path)
    slack = problem.meta["budget"] - problem.meta["distance"]
    assert a.success == (restates <= slack)
    assert a.reason == ("ok" if restates <= slack else "over_budget")
    assert all(s.label == "progress" for s in a.steps[:-1] if s.detail != "restate")
    assert not any(s.budget_pit for s in a.steps) or restates > slack


# ------------------------------------------------------------------------------ noisy expert


def test_expert_success_rate_and_label_mix():
    problems = TASK.problems(2000, seed=2024)
    rng = random.Random(0)
    labels: collections.Counter[str] = collections.Counter()
    successes = 0
    for p in problems:
        demo = TASK.demonstrate(p, rng)
        assert 1 <= len(demo) <= TASK.max_steps and all(len(s) < TASK.max_step_chars for s in demo)
        assert [TASK.is_final_step(s) for s in demo] == [False] * (len(demo) - 1) + [True]
        a = TASK.analyse(p, demo)
        assert "malformed" not in {s.detail for s in a.steps}
        successes += a.success
        labels.update(a.labels)
    assert 0.55 <= successes / 2000 <= 0.70  # design: 0.60-0.64
    share = {k: v / sum(labels.values()) for k, v in labels.items()}
    # design: 49% progress, 8% no-progress, 3% regress, 5% error, 23% after an error
    assert 0.42 < share["progress"] < 0.56
    assert 0.05 < share["no_progress"] < 0.14
    assert 0.01 < share["regress"] < 0.05
    assert 0.035 < share["error"] < 0.075
    assert 0.12 < share["after_error"] < 0.28


def test_expert_is_deterministic_and_perfect_without_noise():
    p = TASK.problems(1, seed=1)[0]
    assert TASK.demonstrate(p, random.Random(5)) == TASK.demonstrate(p, random.Random(5))
    perfect = ModReach(ModReachConfig(p_err=0.0, p_restate=0.0, p_rand=0.0))
    for p in perfect.problems(200, seed=9):
        a = perfect.analyse(p, perfect.demonstrate(p, random.Random(0)))
        assert a.success and a.labels == ("progress",) * p.meta["distance"] + ("answer_ok",)


def test_expert_values_by_hand():
    # 8 -> 9 with ops +1 *2 *3 and budget 1: only +1 reaches 9 (8*2 = 6, 8*3 = 4), so success needs
    # the optimal move (p_opt = 1 - 0.08 - 0.10 - 0.15 = 0.67) or the random one drawing +1 (0.15 / 3).
    p = TASK.make_problem(["+1", "*2", "*3"], start=8, target=9, budget=1)
    assert TASK.expert_values(p, []) == [pytest.approx(0.67 + 0.05)]
    assert TASK.expert_values(p, ["8+1=9", "ans 9"]) == [pytest.approx(0.72), 1.0, 1.0]
    assert TASK.expert_values(p, ["8*2=6"]) == [pytest.approx(0.72), 0.0]  # budget spent off target
    assert TASK.expert_values(p, ["8+1=7", "7+1=8"]) == [pytest.approx(0.72), 0.0, 0.0]  # invalid, then after it
    assert TASK.expert_values(p, ["8 to 9", "8+1=9", "ans 9", "x"]) == [pytest.approx(0.72), 0.0, 0.0, 0.0, 0.0]


def test_noiseless_expert_values_are_one_exactly_when_the_budget_left_covers_the_distance():
    perfect = ModReach(ModReachConfig(p_err=0.0, p_restate=0.0, p_rand=0.0))
    rng = random.Random(3)
    for p in perfect.problems(100, seed=4):
        steps = TASK.demonstrate(p, rng)  # the noisy expert's lines: restates, detours, slips
        values, infos = perfect.expert_values(p, steps), perfect.analyse(p, steps).steps
        assert values[0] == 1.0  # d* <= budget by construction
        for v, info in zip(values[1:], infos):
            if info.label in ("progress", "no_progress", "regress"):
                assert v == float(info.dist is not None and info.dist <= p.meta["budget"] - info.used)
            else:
                assert v == float(perfect.analyse(p, steps).success and info.label != "error")


def test_expert_values_match_monte_carlo_continuations_of_the_expert():
    rng = random.Random(11)
    for p in TASK.problems(4, seed=12):
        demo = TASK.demonstrate(p, rng)
        for h in range(min(3, len(demo))):
            prefix, n = demo[:h], 3000
            wins = sum(TASK.outcome(p, prefix + TASK.demonstrate(p, rng, prefix)) for _ in range(n))
            v = TASK.expert_values(p, prefix)[-1]
            assert abs(wins / n - v) <= 4 * max((v * (1 - v) / n) ** 0.5, 1e-9), (p.question, prefix)


def test_parse_question_inverts_the_prompt():
    for p in TASK.problems(50, seed=6) + [EXAMPLE]:
        back = TASK.parse_question(TASK.prompt(p))
        assert back.question == p.question and back.meta == p.meta
    for bad in ["", "0 to 8 mod 10 ops max 6", "0 to 8 mod 12 ops +1 max 6", "00 to 8 mod 10 ops +1 max 6"]:
        with pytest.raises(ValueError):
            TASK.parse_question(bad)


def test_answer_is_the_first_answer_line():
    assert TASK.answer(["3+2=5", "ans 5", "ans 7"]) == "5"
    assert TASK.answer(["3+2=5", "ans 05", "5 to 5"]) is None  # not canonical: not an answer line
    assert TASK.answer([]) is None


@given(st.lists(st.text(alphabet="ans 0123456789+*=to", max_size=12), max_size=6))
def test_answer_never_raises_and_agrees_with_is_final_step(steps):
    ans = TASK.answer(steps)
    finals = [s for s in steps if TASK.is_final_step(s)]
    assert ans == (finals[0].split()[1] if finals else None)
