"""GGUF files as policies (`pav.policies.gguf`) and the chat path on a real-tokenizer model.

The tests write their own GGUF file with the `gguf` package's writer: a tiny random Llama (built
from a config) and a byte-level BPE tokenizer trained here, with a chat template, laid out as
llama.cpp's converter lays out a Hugging Face Llama (q/k rows permuted for its rotary layout).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pav.policies.base import PolicyLoadError
from pav.policies.gguf import converted_dir, local_model_dir
from pav.policies.load import load_model
from pav.policies.tiny import CHAT_TEMPLATE

CORPUS = ["What is the value of 1 - (2 + 3)?\n2 + 3 = 5, leaving 1 - 5\n1 - 5 = -4\nThe answer is -4.",
          "Evaluate 12 - -4 + 7.\n12 - -4 = 16, leaving 16 + 7\n16 + 7 = 23\nThe answer is 23.",
          "Calculate -6 + (6 - 5) + 3.\n\nWork it out one operation per line."] * 20


def tiny_llama(seed: int = 0, hidden_size: int = 32, num_attention_heads: int = 4):
    """A random 2-layer Llama (hidden 32 by default, grouped-query attention: two query heads per key
    head) and a BPE tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_attention_heads // 2, max_position_embeddings=512,
                         tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval(), tok


LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_gguf(model, tok, path: Path) -> Path:
    """``model`` and ``tok`` as a float32 GGUF file, named as llama.cpp's HF converter names them."""
    from gguf import GGUFWriter

    c = model.config
    w = GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    w.add_token_list(tokens)
    w.add_token_types([3 if t in tok.all_special_tokens else 1 for t in tokens])  # 3: control, 1: normal
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tok.chat_template)
    heads = {"self_attn.q_proj": c.num_attention_heads, "self_attn.k_proj": c.num_key_value_heads}
    for name, tensor in model.state_dict().items():
        x = tensor.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            w.add_tensor("token_embd.weight", x)
        elif name == "model.norm.weight":
            w.add_tensor("output_norm.weight", x)
        elif name.startswith("model.layers."):
            _, _, i, *rest = name.split(".")
            module = ".".join(rest[:-1])
            if module in heads:  # llama.cpp's rotary layout: each head's two halves interleaved
                n = heads[module]
                x = x.reshape(n, 2, x.shape[0] // n // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)
            w.add_tensor(f"blk.{i}.{LAYER_NAMES[module]}.weight", np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    """(the GGUF file, the model it was written from, its tokenizer), with a private conversion cache."""
    root = tmp_path_factory.mktemp("gguf")
    model, tok = tiny_llama()
    return write_gguf(model, tok, root / "tiny-llama.F32.gguf"), model, tok


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PAV_CACHE", str(tmp_path_factory.getbasetemp() / "pav-cache"))


def test_a_gguf_file_loads_as_the_model_it_was_written_from(gguf_file):
    path, model, tok = gguf_file
    loaded, loaded_tok = load_model(str(path))
    text = "What is the value of 1 - (2 + 3)?\n\nThe answer is -4."
    ids = tok(text, return_tensors="pt").input_ids
    assert loaded_tok(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    assert loaded_tok.chat_template == CHAT_TEMPLATE
    assert (loaded_tok.eos_token, loaded_tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert not hasattr(loaded.config, "quantization_config")  # a plain folder, not a GGUF-flagged one


def test_conversion_happens_once_per_file_content(gguf_file, tmp_path, monkeypatch):
    path, _, _ = gguf_file
    first = converted_dir(path)
    monkeypatch.setattr("pav.policies.gguf._convert", lambda *a: pytest.fail("converted a second time"))
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(path.read_bytes())
    assert converted_dir(path) == first
    assert Path(local_model_dir(str(copy))) == first  # same content, same folder
    changed = tmp_path / "changed.gguf"
    changed.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(pytest.fail.Exception, match="second time"):  # other content: converted again
        converted_dir(changed)


@pytest.mark.parametrize("content, message", [
    (None, "no such GGUF file"),
    (b"PK\x03\x04 a zip file, not a model", "is not a GGUF file"),
    (b"GGUF\x03\x00\x00\x00\x07\x00", "could not read GGUF file"),  # a GGUF header cut short
])
def test_a_bad_gguf_file_is_one_line_and_leaves_no_folder(tmp_path, content, message):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PolicyLoadError, match=message) as err:
        load_model(str(path))
    assert "\n" not in str(err.value)
    cache = Path(os.environ["PAV_CACHE"]) / "gguf"
    assert not [p for p in cache.glob(".*") if p.is_dir()] if cache.exists() else True  # no half-converted folder


def test_a_gguf_file_cut_short_is_refused_before_conversion(gguf_file, tmp_path, monkeypatch):
    data = gguf_file[0].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:len(data) // 2])
    monkeypatch.setattr("pav.policies.gguf._convert", lambda *a: pytest.fail("tried to convert a broken file"))
    with pytest.raises(PolicyLoadError, match="cut short or corrupt"):
        converted_dir(cut)


def pav(*args, cwd, monkeypatch):
    """The real CLI, in this process (``cwd``: where it runs); the result's exit code, stdout and stderr."""
    from typer.testing import CliRunner

    from pav.cli import app

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, [*args, "--quiet"])


def test_eval_policy_runs_the_chat_path_on_a_gguf_file(gguf_file, tmp_path, monkeypatch):
    """eval-policy on the GGUF file with a task that ships in the box: chat template, a system turn, two
    worked examples in the prompt; the random model writes blank lines, none of which becomes a step."""
    path, _, _ = gguf_file
    res = pav("eval-policy", "--out", "eval", "--set", f"policy={path}",
              "--set", "task.source=pav.tasks.deepmind:make_task", "--set", "task.options.shots=2",
              "--set", "task.options.system=You are careful.", "--set", "problems=3", "--set", "samples=4",
              "--set", "max_new_tokens=40", cwd=tmp_path, monkeypatch=monkeypatch)
    assert res.exit_code == 0, res.output[-3000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["task"] == "deepmind:arithmetic/add_sub_multiple:easy"
    rows = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and summary["blank_step"] == 0.0
    assert all(step.strip() for r in rows for step in r["steps"]) and not any(r["blank_step"] for r in rows)


def test_chat_prompts_of_a_gguf_tokenizer_hold_the_system_turn_and_worked_examples(gguf_file):
    from pav.tasks.deepmind import make_task

    _, tok = load_model(str(gguf_file[0]))
    task = make_task(shots=2, system="You are careful.")
    task.bind_tokenizer(tok)
    problem = task.problems(1, 0, "heldout")[0]
    prompt = task.prompt(problem)
    (q1, s1), (q2, s2) = task.examples()
    assert prompt == ("<|im_start|>system\nYou are careful.<|im_end|>\n"
                      f"<|im_start|>user\n{q1}\n{task.cfg.instruction}<|im_end|>\n"
                      "<|im_start|>assistant\n" + "\n".join(s1) + "<|im_end|>\n"
                      f"<|im_start|>user\n{q2}\n{task.cfg.instruction}<|im_end|>\n"
                      "<|im_start|>assistant\n" + "\n".join(s2) + "<|im_end|>\n"
                      f"<|im_start|>user\n{problem.question}\n{task.cfg.instruction}<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert task.split_steps("1 + 2 = 3\n\n\nThe answer is 3.\n") == ["1 + 2 = 3", "\n\nThe answer is 3."]


def test_eval_policy_refuses_a_missing_or_corrupt_gguf_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "corrupt.gguf").write_bytes(b"GGUF\x03\x00\x00\x00\x07")
    for name, message in (("missing.gguf", "no such GGUF file"), ("corrupt.gguf", "could not read GGUF file")):
        res = pav("eval-policy", "--out", f"eval-{name}", "--set", f"policy={tmp_path / name}",
                  "--set", "task.source=pav.tasks.deepmind:make_task", cwd=tmp_path, monkeypatch=monkeypatch)
        assert res.exit_code == 2, res.output[-2000:]
        assert res.stderr.strip().count("\n") == 0 and message in res.stderr
        assert not (tmp_path / f"eval-{name}").exists()
