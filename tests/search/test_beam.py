"""Step-level beam search: oracle trees, the paper's Fig. 2(a) example, batching, compute."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from pav.search.beam import BeamSettings, beam_search  # noqa: E402

TREE = {
    (): ["a", "b", "c"],
    ("a",): ["a1", "ans a"], ("b",): ["b1", "ans b"], ("c",): ["ans c"],
    ("a", "a1"): ["ans a1"], ("b", "b1"): ["ans b1"],
}
Q = {(): 0.5, ("a",): 0.7, ("b",): 0.6, ("c",): 0.2, ("a", "a1"): 0.5, ("a", "ans a"): 0.3, ("b", "b1"): 0.9,
     ("b", "ans b"): 0.1, ("c", "ans c"): 0.2, ("a", "a1", "ans a1"): 0.4, ("b", "b1", "ans b1"): 1.0}


SEARCH = dict(candidates=3, alpha=0.5, max_steps=12, step_tokens=32, temperature=1.0, top_p=1.0, dedup=True)


def _search(toys, problem, tree, q, **settings):
    policy, scorer = toys.tree_policy(tree), toys.oracle(q)
    [result] = beam_search(policy, scorer, toys.task(), [problem], BeamSettings(**{**SEARCH, **settings}), seed=0)
    return result, policy, scorer


def test_oracle_beam_finds_the_best_path_that_greedy_misses(toys, problem):
    wide, _, scorer = _search(toys, problem, TREE, Q, width=2, candidates=2, alpha=0.0)
    assert wide.steps == ("b", "b1", "ans b1") and wide.score == 1.0
    assert sorted(wide.complete) == [(("a", "a1", "ans a1"), 0.4), (("b", "b1", "ans b1"), 1.0)]
    assert scorer.calls == wide.depth == 3  # one scorer call per depth
    greedy, _, _ = _search(toys, problem, TREE, Q, width=1, candidates=2, alpha=0.0)
    assert greedy.steps == ("a", "a1", "ans a1")


FIG2A_TREE = {(): ["s1", "s2"], ("s1",): ["ans11", "ans12", "ans13"], ("s2",): ["ans21", "ans22", "ans23"]}
FIG2A_Q = {(): 0.45, ("s1",): 0.60, ("s2",): 0.30,
           ("s1", "ans11"): 0.55, ("s1", "ans12"): 0.50, ("s1", "ans13"): 0.70,
           ("s2", "ans21"): 0.50, ("s2", "ans22"): 0.35, ("s2", "ans23"): 0.25}


def test_paper_fig2a_q_keeps_two_children_of_s1_and_the_effective_reward_keeps_a21(toys, problem):
    """the paper, §3.1 and Fig. 2(a): B = 2, V(s1) = 0.6, V(s2) = 0.3, 3 actions each; A(a11) = −0.05, A(a21) = +0.20."""
    by_q, _, _ = _search(toys, problem, FIG2A_TREE, FIG2A_Q, width=2, candidates=3, alpha=0.0)
    assert [s for s, _ in by_q.complete] == [("s1", "ans13"), ("s1", "ans11")]  # s2 dropped
    by_eff, _, _ = _search(toys, problem, FIG2A_TREE, FIG2A_Q, width=2, candidates=3, alpha=1.0)
    assert [s for s, _ in by_eff.complete] == [("s1", "ans13"), ("s2", "ans21")]  # 0.80 and 0.50 + 0.20
    assert by_eff.steps == ("s1", "ans13")  # the final pick is by the PQV's value


def test_the_search_freezes_the_heap_only_while_it_runs_and_keeps_a_callers_freeze(toys, problem, monkeypatch):
    import gc

    seen = []  # the freeze count at each scorer call
    scorer = toys.oracle(Q)
    score = scorer.score

    def counting_score(*args, **kwargs):
        seen.append(gc.get_freeze_count())
        return score(*args, **kwargs)

    monkeypatch.setattr(scorer, "score", counting_score)
    settings = BeamSettings(**{**SEARCH, "width": 2})
    assert gc.get_freeze_count() == 0
    beam_search(toys.tree_policy(TREE), scorer, toys.task(), [problem], settings, seed=0)
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0
    gc.freeze()  # a caller's own freeze (a pre-forking server's, say) is left as it was
    try:
        # not the frozen count, which falls whenever a frozen object dies: that nothing (un)froze
        calls = []
        monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
        monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
        beam_search(toys.tree_policy(TREE), scorer, toys.task(), [problem], settings, seed=0)
        assert calls == [] and gc.get_freeze_count() > 0
    finally:
        monkeypatch.undo()
        gc.unfreeze()


def test_compute_matches_a_hand_count(toys, problem):
    """width 1, C 2 on TREE; a token is a character (see the module's toy policy and scorer)."""
    result, policy, _ = _search(toys, problem, TREE, Q, width=1, candidates=2, alpha=0.0)
    # depth 0: "q\n" encoded (2), samples "a\n" "b\n" (4), scored "q\na\n" "q\nb\n" (8); keep a
    # depth 1: "q\na\n" (4), samples "a1\n" "ans a\n" (9), scored 7 + 10; keep (a, a1)
    # depth 2: "q\na\na1\n" (7), samples "ans a1\n" x2 (14), one candidate after merging, scored 14
    assert result.compute.as_dict() == {"generated": 27, "encoded": 13, "scored": 39, "samples": 6}
    assert [n for _, n, _ in policy.calls] == [2, 2, 2]


def test_duplicates_are_merged_unless_told_otherwise(toys, problem):
    kept, _, _ = _search(toys, problem, {(): ["ans x"]}, {(): 0.5, ("ans x",): 0.9}, width=3, candidates=2)
    assert kept.complete == [(("ans x",), 0.9)]
    copies, _, _ = _search(toys, problem, {(): ["ans x"]}, {(): 0.5, ("ans x",): 0.9}, width=3, candidates=2,
                           dedup=False)
    assert copies.complete == [(("ans x",), 0.9)] * 3


def test_the_depth_limit_completes_every_candidate(toys, problem):
    loop = {(): ["x"], ("x",): ["x"], ("x", "x"): ["x"]}
    q = {(): 0.5, ("x",): 0.5, ("x", "x"): 0.5, ("x", "x", "x"): 0.5}
    result, _, _ = _search(toys, problem, loop, q, width=2, candidates=1, max_steps=3)
    assert result.steps == ("x", "x", "x") and result.depth == 3


def test_batched_and_per_problem_search_agree_on_real_models():
    """All problems' beams in one sampler and one scorer call per depth give exactly what searching
    one problem at a time gives, under the same seed (keyed sampling noise)."""
    from pav.policies.hf import HFPolicy, tiny_gpt2
    from pav.policies.tokenizer import build_char_tokenizer
    from pav.tasks.modreach import ModReach
    from pav.verifier.model import ValueVerifier
    from pav.verifier.scorer import VerifierScorer

    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    model = tiny_gpt2(len(tok), seed=3, eos_token_id=tok.eos_token_id)
    bias = torch.zeros(len(tok))  # a random model that ends lines often, so solutions have several steps
    bias[tok.convert_tokens_to_ids("\n")] = 2.5
    model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    policy = HFPolicy(model, tok, "random", batch_size=64)
    verifier = ValueVerifier(tiny_gpt2(len(tok), seed=4, eos_token_id=tok.eos_token_id), tok, seed=4)
    scorer = VerifierScorer(verifier, k=4)
    task = ModReach()
    problems = task.problems(4, seed=1, split="heldout")
    settings = BeamSettings(width=3, candidates=2, alpha=0.5, max_steps=4, step_tokens=6, temperature=1.0, top_p=1.0,
                            dedup=True)
    batched = beam_search(policy, scorer, task, problems, settings, seed=5)
    alone = [beam_search(policy, scorer, task, [p], settings, seed=5)[0] for p in problems]
    assert [r.steps for r in batched] == [r.steps for r in alone]
    for b, a in zip(batched, alone):
        assert [s for s, _ in b.complete] == [s for s, _ in a.complete]
        assert [v for _, v in b.complete] == pytest.approx([v for _, v in a.complete], abs=1e-5)
    assert [r.compute for r in batched] == [r.compute for r in alone]
    assert max(r.depth for r in batched) > 1 and len({r.steps for r in batched}) > 1
    other = beam_search(policy, scorer, task, problems, settings, seed=6)
    assert [r.complete for r in other] != [r.complete for r in batched]


def test_beam_search_extends_the_kept_prefixes_and_chooses_what_re_encoding_chooses(monkeypatch):
    """With the policy's prefix reuse (the fast GPT-2 path) the search encodes far fewer context
    tokens and keeps exactly the solutions a search that encodes every prefix again keeps."""
    import contextlib

    from pav.policies.hf import HFPolicy, tiny_gpt2
    from pav.policies.tokenizer import build_char_tokenizer
    from pav.tasks.modreach import ModReach
    from pav.verifier.model import ValueVerifier
    from pav.verifier.scorer import VerifierScorer

    torch.set_num_threads(1)
    tok = build_char_tokenizer()
    model = tiny_gpt2(len(tok), seed=3, eos_token_id=tok.eos_token_id)
    with torch.no_grad():  # end lines often (a bias on the newline logit through ln_f; no hooks: fast path)
        w = model.lm_head.weight[tok.convert_tokens_to_ids("\n")]
        model.transformer.ln_f.bias += 2.5 * w / w.square().sum()
    policy = HFPolicy(model, tok, "random", batch_size=64)
    scorer = VerifierScorer(ValueVerifier(tiny_gpt2(len(tok), seed=4, eos_token_id=tok.eos_token_id), tok, seed=4), k=4)
    task = ModReach()
    problems = task.problems(6, seed=1, split="heldout")
    settings = BeamSettings(width=4, candidates=3, alpha=0.5, max_steps=5, step_tokens=16, temperature=1.0, top_p=1.0,
                            dedup=True)
    encoded = []
    real = HFPolicy.sample
    monkeypatch.setattr(HFPolicy, "sample", lambda self, *a, **k: encoded.append((b := real(self, *a, **k)).prompt_tokens) or b)
    reused = beam_search(policy, scorer, task, problems, settings, seed=5)
    n_reused, encoded[:] = sum(encoded), []
    monkeypatch.setattr(HFPolicy, "reuse_prefixes", lambda self: contextlib.nullcontext())
    again = beam_search(policy, scorer, task, problems, settings, seed=5)
    assert [r.steps for r in reused] == [r.steps for r in again]
    assert [[s for s, _ in r.complete] for r in reused] == [[s for s, _ in r.complete] for r in again]
    assert [r.compute for r in reused] == [r.compute for r in again]
    assert max(r.depth for r in reused) > 2
    assert n_reused < 0.5 * sum(encoded)
