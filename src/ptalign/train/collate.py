"""Triplets → token ids → batches, in two layouts that give the same loss.

Tokenisation (what TRL's assistant-only loss does). The prompt is the model's chat template with the
instruction as the user turn and the generation prompt added. Each response is the tail of the whole
conversation rendered by the same template: exactly the tokens the template puts after the
generation prompt, so training sees the ids generation will produce (a response tokenised on its own
can differ at the seam, e.g. Mistral's " " after [/INST]). The positive response keeps the template's
end of turn (`<|im_end|>`, `<end_of_turn>`, `<|end|>`, `<|eot_id|>`; not necessarily eos) so the model
learns to stop where the template stops; whitespace the template adds after it is not trained
(generation has stopped). The toxic response ends at its text: nothing after it is worth pushing down.
The prompt is shared, so equal text prefixes still give equal token prefixes for the mask. Two
exceptions, counted in the stats: where the conversation's text extends the prompt's but a token
merges across the seam (`template_seam`), the rendered response text is tokenised on its own, as it
follows the prompt generation sees; where the template rewrites earlier turns (`template_fallback`),
the response itself is tokenised on its own, plus the end of turn.

Truncation rule (max_length = L tokens per side, a side being prompt + one response):
  1. If the prompt plus the longer response fits, nothing is cut.
  2. Otherwise the prompt keeps its last max(L // 2, L - longer response) tokens (cut from the left:
     the end of the question and the assistant header matter most), never more than it has.
  3. Each response is cut from the right to L - prompt tokens.
  4. If the toxic side had unlikelihood tokens before the cut and step 3 removed all of them (a long
     shared opening), the prompt is cut further from the left, down to MIN_PROMPT tokens, so that up
     to MIN_UL of them fit again. Only when even that cannot keep one does the triplet lose its UT
     term; such triplets are counted (`tox_lost`), reported by `encode_all` and logged, never dropped
     silently.

Recovery (train.recovery, beyond the paper; Qi et al. 2024, "Safety Alignment Should Be Made More
Than Just a Few Tokens Deep", arXiv 2406.05946): a share of the harmful triplets also carry `rec`, the
positive refusal written after the first k toxic tokens, so that the model learns to stop harmful
text it has already begun, whatever the request's form made it begin. k is drawn per triplet from the
word starts after the toxic side leaves the positive one (by a hash of the id and train.seed: the
same for every epoch and layout); `rec` is trained like the positive (MLE), the first k toxic tokens
are its context only.

Layouts (`packed` flag of the collator):
  - packed (prefix sharing): one row per triplet, [prompt | pos | tox | rec], position ids restarting
    at len(prompt) for tox and at len(prompt) + k for rec, and a (T, T) block mask: causal, except
    that tox tokens do not see pos tokens and rec tokens see neither pos nor tox past its first k.
    The last prompt token's state predicts both pos[0] and tox[0]; tox[k-1]'s predicts rec[0].
  - plain: up to three rows per triplet, [prompt | pos], [prompt | tox] where tox has tokens (encode_all
    empties it where no term reads it) and [prompt | tox[:k] | rec] where there is a rec; a 2-D
    padding mask.
Both produce the same flat list of targets (row, column whose state predicts the token, token id,
is_pos, is_tox, ul_mask), in the same order (per triplet: pos tokens, then tox tokens, then rec
tokens, which count as positive ones), so the loss code is identical for both.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ptalign.io import DataError
from ptalign.models import ensure_chat_template
from ptalign.train.mask import first_n, keep_specific, needed_tox, specific_tokens, ul_mask

log = logging.getLogger(__name__)

MIN_PROMPT = 4  # tokens of the prompt always kept (at least the assistant header)
MIN_UL = 8  # toxic UT tokens that rule 4 tries to keep


@dataclass
class Example:
    """One tokenised triplet."""

    id: str
    prompt: list[int]
    pos: list[int]  # positive response + the template's end of turn
    tox: list[int]  # toxic response (encode_all feeds it through its last token a loss term reads)
    ul: list[bool]  # per tox token: gets unlikelihood
    truncated: bool = False
    tox_lost: bool = False  # had UT tokens before truncation, none after
    benign: bool = False  # kind == "benign": safe request, tox = a needless refusal (train.lam_benign)
    everyday: bool = False  # one of synth.everyday_share's plain tasks (train.ut_everyday)
    template: str = ""  # how the responses were tokenised (response_ids): '', 'seam' or 'fallback'
    rec: list[int] = field(default_factory=list)  # train.recovery: the refusal after tox[:rec_at]
    rec_at: int = 0  # k: toxic tokens before rec (>= 1 where there is a rec)

    @property
    def n_tokens(self) -> int:
        """Tokens of the triplet counted once: prompt + pos + tox + rec (the throughput unit in bench/)."""
        return len(self.prompt) + len(self.pos) + len(self.tox) + len(self.rec)


def _text(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def _ids(tokenizer: Any, text: str) -> list[int]:
    """Tokens of rendered template text (which carries its own bos and markers), as apply_chat_template
    tokenizes it."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer: Any, instruction: str) -> list[int]:
    """Chat-formatted user turn + generation prompt (the documented fallback template if none)."""
    ensure_chat_template(tokenizer)
    return _ids(tokenizer, _text(tokenizer, [{"role": "user", "content": instruction}], True))


@dataclass(frozen=True)
class TurnEnd:
    """What the template writes after an assistant message's text: the end of turn (trained on the
    positive response) and the whitespace after it (not trained: generation has stopped)."""

    text: str  # as rendered ('' where the template writes no marker)
    trailing: str
    ids: list[int]  # trained: the marker's tokens, or [eos] where there is none
    rendered_ids: list[int]  # the tokens of text + trailing, as they end a rendered conversation


def turn_end(tokenizer: Any) -> TurnEnd:
    """The template's TurnEnd, found as the common text tail of two rendered conversations whose
    replies end differently; eos where the template writes nothing. Cached on the tokenizer."""
    cached = getattr(tokenizer, "_ptalign_turn_end", None)
    if cached is not None:
        return cached
    ensure_chat_template(tokenizer)
    user = {"role": "user", "content": "Hello"}
    a, b = (
        _text(tokenizer, [user, {"role": "assistant", "content": t}], False) for t in ("Yes", "Maybe not")
    )
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    tail = a[len(a) - n :]
    text = tail.rstrip()
    trailing = tail[len(text) :]
    if text:
        ids = _ids(tokenizer, text)
    else:  # the template writes no marker (the fallback's blank line): eos ends the turn
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    te = TurnEnd(text, trailing, ids, _ids(tokenizer, text) + _ids(tokenizer, trailing))
    try:  # a tokenizer object may refuse new attributes; then it is simply recomputed
        tokenizer._ptalign_turn_end = te
    except AttributeError:
        pass
    return te


def response_ids(
    tokenizer: Any, prompt: list[int], instruction: str, text: str, end: bool
) -> tuple[list[int], str]:
    """(tokens, how): the response as the template renders it after `prompt`, with `end` through the
    end of turn. how: '' = the whole conversation's own tokens after the prompt's; 'seam' = the
    conversation's text extends the prompt's but its tokens do not (a merge across the seam): the
    rendered response text tokenised on its own, as it follows the prompt that generation sees;
    'fallback' = the template rewrites the prompt: the response tokenised on its own + end of turn."""
    te = turn_end(tokenizer)
    tail = te.text + te.trailing
    gen = _text(tokenizer, [{"role": "user", "content": instruction}], True)
    full = _text(
        tokenizer, [{"role": "user", "content": instruction}, {"role": "assistant", "content": text}], False
    )
    if not (full.startswith(gen) and full.endswith(tail) and len(full) >= len(gen) + len(tail)):
        body = _ids(tokenizer, text)
        return (body + te.ids if end else body), "fallback"
    ids, tail_ids = _ids(tokenizer, full), te.rendered_ids
    if (
        ids[: len(prompt)] == prompt
        and ids[len(ids) - len(tail_ids) :] == tail_ids
        and len(ids) >= len(prompt) + len(tail_ids)
    ):
        body, how = ids[len(prompt) : len(ids) - len(tail_ids)], ""
    else:
        body, how = _ids(tokenizer, full[len(gen) : len(full) - len(tail)]), "seam"
    return (body + te.ids if end else body), how


def truncate(
    prompt: list[int], pos: list[int], tox: list[int], ul: list[bool], max_length: int
) -> tuple[list[int], list[int], list[int], list[bool], bool, bool]:
    """Apply the module's truncation rule; returns (prompt, pos, tox, ul, truncated, tox_lost)."""
    L = max_length
    longer = max(len(pos), len(tox))
    if len(prompt) + longer <= L:
        return prompt, pos, tox, ul, False, False
    keep = min(len(prompt), max(L // 2, L - longer))
    had_ul = any(ul)
    m = ul.index(True) if had_ul else len(tox)
    if had_ul and m >= L - keep:  # rule 4: the cut would remove every UT token
        keep = max(MIN_PROMPT, min(keep, L - m - min(MIN_UL, len(tox) - m)))
    keep = min(keep, len(prompt))
    prompt = prompt[len(prompt) - keep :]
    budget = L - len(prompt)
    tox_c, ul_c = tox[:budget], ul[:budget]
    lost = had_ul and not any(ul_c)
    return prompt, pos[:budget], tox_c, ul_c, True, lost


def recovery_point(key: str, ul: Sequence[bool], word_start: Sequence[bool], share: float) -> int:
    """k, the toxic tokens a recovery follows; 0 = this triplet gets none.

    A hash of `key` (the triplet's id and train.seed) picks whether the triplet is in the `share` and
    then k among the toxic tokens after its first unlikelihood one that start a word (any such token
    if none does), so that the refusal cuts in between words. Example: ul [F, T, T, T, T], word starts
    at 2 and 4 -> k in {2, 4}; no ul token, or nothing after the first -> 0.
    """
    if share <= 0 or True not in ul:
        return 0
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    if (h % 10_000) / 10_000 >= share:
        return 0
    m = list(ul).index(True)
    after = range(m + 1, len(ul))
    cands = [j for j in after if word_start[j]] or list(after)
    return cands[(h // 10_000) % len(cands)] if cands else 0


def _word_starts(tokenizer: Any, ids: list[int]) -> list[bool]:
    """Per token: does it begin with a space or a newline (byte-level BPE's Ġ / Ċ, SentencePiece's ▁)."""
    return [bool(t) and t[0] in "Ġ▁Ċ \n" for t in tokenizer.convert_ids_to_tokens(ids)]


def encode(
    tokenizer: Any,
    rec: dict[str, Any],
    max_length: int,
    fine_grained: bool = True,
    recovery: float = 0.0,
    seed: int = 0,
) -> Example:
    """Tokenise one triplet record (keys id, instruction, pos, tox) and apply the truncation rule;
    with recovery > 0, that share of the harmful triplets also gets a recovery (module docstring)."""
    p = prompt_ids(tokenizer, rec["instruction"])
    pos, how_pos = response_ids(tokenizer, p, rec["instruction"], rec["pos"], end=True)
    tox, how_tox = response_ids(tokenizer, p, rec["instruction"], rec["tox"], end=False)
    # mask on the responses without the end of turn: a tox that is a text prefix of pos gets no UT
    ul = ul_mask(pos[: len(pos) - len(turn_end(tokenizer).ids)], tox, fine_grained).tolist()
    p, pos, tox, ul, cut, lost = truncate(p, pos, tox, ul, max_length)
    benign = rec.get("kind") == "benign"
    ex = Example(
        str(rec["id"]), p, pos, tox, ul, cut, lost, benign=benign, everyday=bool(rec.get("everyday"))
    )
    ex.template = max(how_pos, how_tox, key=("", "seam", "fallback").index)
    if recovery > 0 and not benign:
        k = recovery_point(f"{seed}:{rec['id']}", ul, _word_starts(tokenizer, tox), recovery)
        # a space, not the chat template: the refusal goes on from a word boundary inside the reply
        body = _ids(tokenizer, " " + rec["pos"].strip()) + turn_end(tokenizer).ids if k else []
        ex.rec = body[: max(0, max_length - len(p) - k)]
        ex.rec_at = k if ex.rec else 0
    return ex


def encode_all(
    tokenizer: Any,
    records: Iterable[dict[str, Any]],
    max_length: int,
    fine_grained: bool = True,
    source: str = "triplets",
    recovery: float = 0.0,
    seed: int = 0,
    ut_specific: float = 0.0,
    ut_benign_tokens: int = 0,
    ut_everyday: bool = True,
) -> tuple[list[Example], dict[str, Any]]:
    """Validate and tokenise records; returns (examples, stats) and logs truncation counts. With
    ut_specific > 0 the harmful triplets' UT masks keep their first token and the specific tokens
    (mask.specific_tokens over all triplets: the rates are the data's, not one triplet's); with
    ut_benign_tokens > 0 the benign triplets' masks keep their first that many tokens (mask.first_n);
    with ut_everyday False the everyday triplets' masks are empty (their answer trains by MLE alone).
    Each toxic side is then cut after the last token a loss term reads (mask.needed_tox): the loss is
    the same, and with the benign masks cut to 3 tokens the preset feeds ~9 % fewer tokens."""
    examples = []
    kinds: dict[str, int] = {}
    domains: dict[str, int] = {}
    for i, rec in enumerate(records):
        missing = [
            k
            for k in ("id", "instruction", "pos", "tox")
            if not isinstance(rec.get(k), str) or (k != "tox" and not rec.get(k))
        ]
        if missing:
            raise DataError(
                f"{source}: record {i + 1} lacks a non-empty string {', '.join(missing)}; regenerate with `ptalign synth`"
            )
        if not isinstance(rec.get("everyday", False), (bool, type(None))):  # bool("false") is True
            raise DataError(
                f"{source}: record {i + 1} has everyday={rec['everyday']!r}, not a boolean; write true or false or leave it out"
            )
        examples.append(encode(tokenizer, rec, max_length, fine_grained, recovery, seed))
        for d, k in ((kinds, "kind"), (domains, "domain")):
            if rec.get(k):
                d[str(rec[k])] = d.get(str(rec[k]), 0) + 1
    if not examples:
        raise DataError(f"{source}: no triplets to train on; run `ptalign synth` first or pass --data FILE")
    # no UT from the mask itself: tox equals the positive or is a prefix of it (tox_lost: truncation)
    n_prefix = sum(not any(e.ul) and not e.tox_lost for e in examples)
    if ut_specific > 0:
        harmful = [e for e in examples if not e.benign]
        specific = specific_tokens(
            ([t for t, u in zip(e.tox, e.ul, strict=True) if u] for e in harmful),
            (e.pos for e in examples if e.benign),
            ut_specific,
        )
        for e in harmful:
            e.ul = keep_specific(e.ul, e.tox, specific)
    n_everyday_off = 0  # everyday triplets whose UT tokens train.ut_everyday=false removed
    for e in examples:
        if e.benign and ut_benign_tokens > 0:
            e.ul = first_n(e.ul, ut_benign_tokens)
        if e.everyday and not ut_everyday:
            n_everyday_off += any(e.ul)
            e.ul = [False] * len(e.ul)
    n_tox = sum(len(e.tox) for e in examples)
    n_ul = sum(sum(e.ul) for e in examples)
    for e in examples:  # toxic tokens no loss term reads are not fed (mask.needed_tox): same loss
        k = needed_tox(e.ul, e.rec_at)
        e.tox, e.ul = e.tox[:k], e.ul[:k]
    stats = {
        "triplets": len(examples),
        "truncated": sum(e.truncated for e in examples),
        "tox_lost": sum(e.tox_lost for e in examples),
        # triplets without a UT term: no_ul_prefix + tox_lost + no_ul_everyday (first_n and
        # keep_specific keep a mask's first token, so they empty none)
        "no_ul": sum(not any(e.ul) for e in examples),
        "no_ul_prefix": n_prefix,  # tox identical to the positive or a prefix of it
        "no_ul_everyday": n_everyday_off,  # everyday triplets under train.ut_everyday=false
        "tokens": sum(e.n_tokens for e in examples),
        "tox_masked_frac": n_ul / n_tox if n_tox else 0.0,  # of the toxic tokens before the cut above
        "tox_not_fed": n_tox - sum(len(e.tox) for e in examples),  # after the last UT token: unread
        "template_seam": sum(e.template == "seam" for e in examples),
        "template_fallback": sum(e.template == "fallback" for e in examples),
        "recovery": sum(bool(e.rec) for e in examples),  # triplets with a recovery (train.recovery)
        "everyday": sum(e.everyday for e in examples),  # synth.everyday_share's (train.ut_everyday)
        "end_of_turn": tokenizer.decode(turn_end(tokenizer).ids),  # as trained (eos where none is written)
        "kinds": dict(sorted(kinds.items())),
        "domains": dict(sorted(domains.items())),
    }
    if stats["template_fallback"]:
        log.warning(
            "%d of %d triplets: the chat template's rendered conversation does not extend its generation "
            "prompt; their responses were tokenised on their own",
            stats["template_fallback"],
            len(examples),
        )
    if stats["truncated"]:
        log.warning(
            "%d of %d triplets cut to train.max_length=%d; %d lost their whole unlikelihood term "
            "(raise train.max_length to keep them)",
            stats["truncated"],
            len(examples),
            max_length,
            stats["tox_lost"],
        )
    return examples, stats


class LengthBucketSampler(torch.utils.data.Sampler[int]):
    """Random batches of similar-length triplets, so rows carry little padding.

    Each epoch: a random permutation, cut into buckets of `bucket` batches; inside a bucket the
    triplets are sorted by length and cut into batches; the batches are then shuffled. Batch
    composition still changes every epoch (unlike a global sort). The permutation is drawn from
    torch's global RNG, as RandomSampler does, so Trainer's seeding and resume cover it.
    """

    def __init__(self, lengths: list[int], batch_size: int, bucket: int = 8):
        self.lengths = lengths
        self.batch_size = batch_size
        self.bucket = bucket

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.bucket
        batches = []
        for s in range(0, len(perm), size):
            chunk = sorted(perm[s : s + size], key=lambda i: self.lengths[i])
            batches += [chunk[b : b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
        for j in torch.randperm(len(batches), generator=g).tolist():
            yield from batches[j]


def _pad(
    seqs: list[list[int]], value: int, multiple: int = 1, dtype: torch.dtype = torch.long
) -> torch.Tensor:
    T = -(-max((len(s) for s in seqs), default=0) // multiple) * multiple
    return torch.tensor([s + [value] * (T - len(s)) for s in seqs], dtype=dtype)


# Rows on a GPU are padded to a multiple of this (TripletCollator's pad_multiple): at most ~10 row
# lengths in a run, so cuDNN's attention plans and the compiled layers' shapes are reused; on a CPU
# rows are not padded (the preset's figures were measured so).
GPU_PAD_MULTIPLE = 64

# Segment codes of a packed row (the collator's `segments`): prompt, positive, the toxic tokens a
# recovery sees (tox[:k]), the other toxic tokens, recovery, padding.
PROMPT, POS, TOX_HEAD, TOX, REC, PAD = range(6)


def block_mask(segments: torch.Tensor) -> torch.Tensor:
    """(R, T) segment codes → the packed rows' (R, T, T) bool block mask (True = may attend), made on
    the codes' device.

    Causal, and a token sees an earlier one when it is in the prompt or in its own segment; toxic
    tokens also see tox[:k], recovery tokens see tox[:k] (so neither sees pos, and rec sees no toxic
    token past its first k); padding sees itself only (no all-masked softmax row). Built in the
    training step rather than the collator: at 128 triplets of 483 tokens the mask is 30 MB that the
    host filled and copied every step while a GPU sat idle (bench/gpu_train.sh's profile).
    """
    seg = segments.long()
    T = seg.shape[-1]
    q, k = seg[:, :, None], seg[:, None, :]
    sees = (k == PROMPT) | (k == q) | ((k == TOX_HEAD) & ((q == TOX) | (q == REC)))
    causal = torch.ones(T, T, dtype=torch.bool, device=seg.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=seg.device)
    return torch.where(q == PAD, eye, sees & causal)


class TripletCollator:
    """list[Example] → batch dict of tensors (see the module docstring for the two layouts).

    Keys: input_ids (R, T), position_ids (R, T), segments ((R, T) int8 codes when packed, which
    `block_mask` turns into the (R, T, T) block mask on the device) or attention_mask ((R, T) 0/1
    when plain), tgt_row / tgt_col / tgt_ids (N,) long, is_pos / is_tox / ul_mask
    (N,) bool, is_benign (N,) bool (target of a benign triplet), n_tokens () long = prompt + pos + tox + rec
    tokens of the triplets.
    """

    def __init__(self, pad_id: int, packed: bool = True, pad_multiple: int = 1):
        self.pad_id = pad_id
        self.packed = packed
        # rows padded to a multiple of this many tokens: on a GPU each new row length costs cuDNN's
        # attention a new plan (50-90 ms forward and backward each, bench/gpu_train.sh's profile)
        self.pad_multiple = pad_multiple

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        rows, pos_ids, segs = [], [], []
        row, col, tgt, kind, ulm, benign = [], [], [], [], [], []
        for e in examples:
            P, Lp, Lt, Lr, k = len(e.prompt), len(e.pos), len(e.tox), len(e.rec), e.rec_at
            if self.packed:
                r = len(rows)
                rows.append(e.prompt + e.pos + e.tox + e.rec)
                pos_ids.append(list(range(P + Lp)) + list(range(P, P + Lt)) + list(range(P + k, P + k + Lr)))
                segs.append([PROMPT] * P + [POS] * Lp + [TOX_HEAD] * k + [TOX] * (Lt - k) + [REC] * Lr)
                pos_cols = [P - 1 + i for i in range(Lp)]
                tox_cols = [P - 1 if j == 0 else P + Lp + j - 1 for j in range(Lt)]
                rec_cols = [P + Lp + k - 1 if i == 0 else P + Lp + Lt + i - 1 for i in range(Lr)]
                pos_row = tox_row = rec_row = r
            else:
                # a toxic row only where it has targets: encode_all cuts tox to [] where no term
                # reads it (no UT, no recovery), and a row of prompt alone would be dead compute
                pos_row = len(rows)
                rows.append(e.prompt + e.pos)
                pos_ids.append(list(range(P + Lp)))
                tox_row = len(rows)
                if Lt:
                    rows.append(e.prompt + e.tox)
                    pos_ids.append(list(range(P + Lt)))
                rec_row = len(rows)
                if Lr:
                    rows.append(e.prompt + e.tox[:k] + e.rec)
                    pos_ids.append(list(range(P + k + Lr)))
                pos_cols = [P - 1 + i for i in range(Lp)]
                tox_cols = [P - 1 + j for j in range(Lt)]
                rec_cols = [P + k - 1 + i for i in range(Lr)]
            row += [pos_row] * Lp + [tox_row] * Lt + [rec_row] * Lr
            col += pos_cols + tox_cols + rec_cols
            tgt += e.pos + e.tox + e.rec
            kind += [1] * Lp + [2] * Lt + [1] * Lr
            ulm += [False] * Lp + list(e.ul) + [False] * Lr
            benign += [e.benign] * (Lp + Lt + Lr)
        input_ids = _pad(rows, self.pad_id, self.pad_multiple)
        T = input_ids.shape[1]
        if self.packed:
            mask = {"segments": _pad(segs, PAD, self.pad_multiple, torch.int8)}
        else:
            lengths = torch.tensor([len(r) for r in rows])
            mask = {"attention_mask": (torch.arange(T)[None, :] < lengths[:, None]).long()}
        kind_t = torch.tensor(kind, dtype=torch.long)
        return {
            "input_ids": input_ids,
            "position_ids": _pad(pos_ids, 0, self.pad_multiple),
            **mask,
            "tgt_row": torch.tensor(row, dtype=torch.long),
            "tgt_col": torch.tensor(col, dtype=torch.long),
            "tgt_ids": torch.tensor(tgt, dtype=torch.long),
            "is_pos": kind_t == 1,
            "is_tox": kind_t == 2,
            "ul_mask": torch.tensor(ulm, dtype=torch.bool),
            "is_benign": torch.tensor(benign, dtype=torch.bool),
            "n_tokens": torch.tensor(sum(e.n_tokens for e in examples)),
        }
