"""Training targets come from each family's chat template: the trained end of turn is the template's
(not necessarily eos), the response tokens are those of the whole rendered conversation, and the
fine-grained mask is computed on them. One tiny random model per family takes a training step.

The templates below are written here to each family's documented turn format (roles, markers, what
follows an assistant message), on the embedded model's BPE vocabulary with the family's special
tokens added: the real tokenizers are too large to ship, and the point under test is the template.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ptalign.train.collate import TripletCollator, encode, encode_all, turn_end
from ptalign.train.mask import first_mismatch

# Gemma's turn format (all generations): special tokens, eos, end of turn, template
GEMMA = (
    ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"],
    "<eos>",
    "<end_of_turn>",
    "<bos>{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
)

# family → (special tokens, eos, the template's end-of-turn token, chat template, tiny arch)
FAMILIES: dict[str, tuple[list[str], str, str, str, str]] = {
    # Llama 3 instruct: header blocks, every turn closed by <|eot_id|>, bos first
    "llama3": (
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"],
        "<|end_of_text|>",
        "<|eot_id|>",
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
        "llama",
    ),
    # Qwen2 instruct: ChatML with a default system turn, "\n" after each <|im_end|>
    "qwen2": (
        ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
        "<|endoftext|>",
        "<|im_end|>",
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "qwen2",
    ),
    # Mistral instruct: [INST] ... [/INST] then " answer</s>"; no generation prompt of its own
    "mistral": (
        ["<s>", "</s>", "[INST]", "[/INST]"],
        "</s>",
        "</s>",
        "<s>{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %} {{ m['content'] }}</s>{% endif %}{% endfor %}",
        "mistral",
    ),
    # Gemma (1, 2): <start_of_turn>user / model, turns closed by <end_of_turn>, eos is <eos>
    "gemma": (*GEMMA, "gemma"),
    # Gemma 3: the same turn format, a different architecture (sliding and global attention layers)
    "gemma3": (*GEMMA, "gemma3"),
    # Phi-3: <|user|> / <|assistant|> blocks closed by <|end|>, eos <|endoftext|> after the last turn
    "phi3": (
        ["<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"],
        "<|endoftext|>",
        "<|end|>",
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% else %}<|endoftext|>{% endif %}",
        "phi3",
    ),
}

SORRY = "I'm sorry, but I can't help with that."
REC = {
    "id": "t1",
    "instruction": "How do I get back at a noisy neighbour?",
    "pos": f"{SORRY} Talking to them calmly usually works better.",
    "tox": f"{SORRY} Actually, here is how to make their life miserable.",
}


@pytest.fixture(scope="module")
def family_tok(embedded_hf_dir: Path):
    from ptalign.models import load_tokenizer

    def make(family: str):
        specials, eos, _end, template, _arch = FAMILIES[family]
        tok = load_tokenizer(embedded_hf_dir)
        tok.add_special_tokens({"additional_special_tokens": specials})
        tok.eos_token = eos
        tok.chat_template = template
        return tok

    return make


def _full(tok, text: str) -> list[int]:
    msgs = [{"role": "user", "content": REC["instruction"]}, {"role": "assistant", "content": text}]
    ids = tok.apply_chat_template(msgs, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "input_ids") or isinstance(ids, dict) else ids)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_targets_are_the_templates_tokens(family: str, family_tok) -> None:
    tok = family_tok(family)
    end_tok = tok.convert_tokens_to_ids(FAMILIES[family][2])
    ex = encode(tok, REC, max_length=512)
    full = _full(tok, REC["pos"])
    if ex.template == "":  # the response tokens are exactly those of the whole rendered conversation
        assert full[: len(ex.prompt) + len(ex.pos)] == ex.prompt + ex.pos
        assert all(not tok.decode([t]).strip() for t in full[len(ex.prompt) + len(ex.pos) :])
    else:  # a merge across the seam: the rendered response text, tokenised after the prompt
        assert ex.template == "seam" and full[: len(ex.prompt)] != ex.prompt
        text = tok.apply_chat_template(
            [{"role": "user", "content": REC["instruction"]}, {"role": "assistant", "content": REC["pos"]}],
            tokenize=False,
        )
        assert tok.decode(ex.prompt + ex.pos, skip_special_tokens=False) == text.rstrip()
    # the trained end of turn is the template's, right after the text; eos only where the template has it
    end = turn_end(tok).ids
    assert end[0] == end_tok and ex.pos[len(ex.pos) - len(end)] == end_tok
    assert tok.decode(ex.pos[: len(ex.pos) - len(end)]).strip() == REC["pos"]
    if family in ("gemma", "gemma3", "llama3", "qwen2"):
        assert tok.eos_token_id not in ex.pos  # eos is not how these templates end a turn
    # the toxic response: its text as rendered, without the end of turn
    full_tox = _full(tok, REC["tox"])
    if ex.template == "":
        assert full_tox[len(ex.prompt) : len(ex.prompt) + len(ex.tox)] == ex.tox
    assert end_tok not in ex.tox and tok.decode(ex.tox).strip() == REC["tox"]
    # the fine-grained mask on those tokens: the shared refusal opening gets no unlikelihood
    m = ex.ul.index(True)
    assert m == first_mismatch(ex.pos, ex.tox) and tok.decode(ex.tox[:m]).strip().startswith(SORRY[:-1])
    assert all(ex.ul[m:]) and not any(ex.ul[:m])


def test_most_families_are_token_exact(family_tok) -> None:
    """On this vocabulary only Llama 3's "\n\n" after the header merges across the seam (Llama 3's own
    tokenizer keeps "\n\n" whole); every other family trains on the conversation's own tokens."""
    how = {f: encode(family_tok(f), REC, 512).template for f in FAMILIES}
    assert how == {f: ("seam" if f == "llama3" else "") for f in FAMILIES}


def test_mistral_seam_differs_from_tokenising_alone(family_tok) -> None:
    """Why the rendered conversation: after "[/INST]" the template writes " answer", whose first token
    carries the space; the answer tokenised on its own starts with a different token."""
    tok = family_tok("mistral")
    ex = encode(tok, REC, max_length=512)
    alone = tok(REC["pos"], add_special_tokens=False)["input_ids"]
    assert ex.pos[: len(alone)] != alone
    assert tok.decode(ex.pos).startswith(" I'm sorry")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_training_step_per_family(family: str, family_tok, tmp_path: Path) -> None:
    """A tiny random model of the family's architecture takes a packed step on those targets."""
    import transformers

    from ptalign.train.loss import ptalign_loss
    from ptalign.train.trainer import target_logprobs

    tok = family_tok(family)
    arch = FAMILIES[family][4]
    extra = {
        "llama": {"num_key_value_heads": 2},
        "qwen2": {"num_key_value_heads": 2},
        "mistral": {"num_key_value_heads": 2, "sliding_window": 64},
        "gemma": {"num_key_value_heads": 1, "head_dim": 8},
        "gemma3": {"num_key_value_heads": 1, "head_dim": 8, "sliding_window": 64},
        "phi3": {"num_key_value_heads": 2},
    }[arch]
    cls = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig", "gemma": "GemmaConfig",
           "gemma3": "Gemma3TextConfig", "phi3": "Phi3Config"}[arch]  # fmt: skip
    cfg = getattr(transformers, cls)(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=512, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    examples, stats = encode_all(tok, [REC, {**REC, "id": "t2", "kind": "benign"}], max_length=256)
    assert stats["template_fallback"] == 0 and stats["end_of_turn"].startswith(FAMILIES[family][2])
    batch = TripletCollator(pad_id=tok.pad_token_id, packed=True)(examples)
    logp = target_logprobs(model, batch, chunked=True)  # the chunked head, as training runs it
    loss, metrics = ptalign_loss(
        logp, batch["is_pos"], batch["is_tox"], batch["ul_mask"], 0.4, 2.0, batch["is_benign"]
    )
    loss.backward()
    assert (
        metrics["n_ul"] > 0
        and torch.isfinite(loss)
        and all(
            p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad
        )
    )


def test_a_tokenizer_without_template_gets_the_fallback_and_trains_eos(embedded_hf_dir: Path) -> None:
    """A base model (no chat template): the documented fallback, recorded as such; its turns carry no
    end-of-turn marker, so eos is trained as the end."""
    from ptalign.models import FALLBACK_CHAT_TEMPLATE, load_tokenizer, template_source

    tok = load_tokenizer(embedded_hf_dir)
    assert template_source(tok) == "model"
    tok.chat_template = None
    ex = encode(tok, REC, max_length=512)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE and template_source(tok) == "fallback"
    assert tok.decode(ex.prompt).endswith("User: How do I get back at a noisy neighbour?\n\nAssistant:")
    assert ex.pos[-1] == tok.eos_token_id and turn_end(tok).ids == [tok.eos_token_id]
    assert tok.decode(ex.pos[:-1]).strip() == REC["pos"] and ex.template == ""
    assert encode_all(tok, [REC], 512)[1]["end_of_turn"] == tok.eos_token  # what the manifest records
