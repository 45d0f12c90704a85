"""The config's sections: one dataclass per stage, its defaults (= the quick preset) and the one-line
check of every value; the names the config accepts from registries above it (Literal types)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad config value; its message is one line naming key, value and fix."""


DEFAULT_DOMAINS = [
    "violence",
    "illegal_activity",
    "cybercrime",
    "self_harm",
    "hate_discrimination",
    "privacy",
    "sexual_harm",
    "misinformation",
    "manipulation_unethical",
    "dangerous_substances",
]


# Names owned by registries in the layers above (judges.JUDGES, eval.attacks.ATTACKS, eval.EVALS,
# llm.BUILDERS, train.RECIPES); config sits below them, so it declares them here as the Literal types
# of its fields (the loader refuses any other value in one line) and tests/test_config.py keeps each
# equal to its registry.
# train.columns presets: known safety preference sets (train/data.py converts them)
DATA_PRESETS = ("pku-saferlhf", "beavertails")
JudgeName = Literal["keyword", "xstest", "minilm", "minilm_smol", "harmbench", "llamaguard", "strongreject"]
EvalName = Literal["hhh", "asr", "overrefusal", "helpful", "polarity"]
BackendKind = Literal["auto", "llamacpp", "transformers", "openai", "vllm"]
TrainMethod = Literal["ptalign", "dpo"]
EvalEngine = Literal["transformers", "vllm", "fastest", "auto"]
PosSelect = Literal["first", "best"]
ProtectiveGoals = Literal["keep", "drop", "benign"]
ToxicFrom = Literal["icl", "own"]
JUDGE_NAMES: tuple[str, ...] = typing.get_args(JudgeName)
# judges of harm, not of refusal ('no' / 'safe' also for a helpful answer to a harmless prompt): they
# cannot measure over-refusal; tests/test_config.py keeps this equal to judges' measures_refusal
HARM_ONLY_JUDGES = ("harmbench", "llamaguard")
EVAL_NAMES: tuple[str, ...] = typing.get_args(EvalName)
BACKEND_KINDS: tuple[str, ...] = typing.get_args(BackendKind)
TRAIN_METHODS: tuple[str, ...] = typing.get_args(TrainMethod)
ATTACK_NAMES = (
    "direct", "roleplay", "hypothetical", "prefix_injection", "refusal_suppression", "autodan",
    "past_tense", "few_shot", "payload_split", "format_injection",
)  # fmt: skip
RENAMED = {  # old key → the message that replaces "unknown key"
    "synth.judge": "synth.judge: renamed to synth.gate_judge (one of " + ", ".join(JUDGE_NAMES) + ")",
}


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: must be {allowed}")


@dataclass
class ModelConfig:
    name: str = (
        "embedded"  # 'embedded' (SmolLM2-135M-Instruct GGUF), a local HF dir, a .gguf path or a hub id
    )
    dtype: str = "float32"  # float32 | bfloat16 | float16 (training/eval weights)
    cache_dir: str = ""  # '' = $PTALIGN_CACHE or ~/.cache/ptalign

    def __post_init__(self) -> None:
        _check(
            bool(self.name),
            "model.name",
            self.name,
            "a non-empty model spec ('embedded', a dir, a .gguf or a hub id)",
        )
        _check(
            self.dtype in ("float32", "bfloat16", "float16"),
            "model.dtype",
            self.dtype,
            "one of float32, bfloat16, float16",
        )


@dataclass
class BackendConfig:
    kind: BackendKind = "auto"  # auto | llamacpp | transformers | openai | vllm ; auto: llm.choose_backend
    base_urls: list[str] = field(default_factory=list)  # openai: one or more OpenAI-compatible endpoints
    served_model: str = ""  # openai: model name the server expects ('' = ask the server)
    api_key_env: str = "OPENAI_API_KEY"  # openai: env var holding the key (never logged)
    n_threads: int = 0  # llamacpp: 0 = all cores
    n_ctx: int = 4096  # llamacpp context window
    batch_size: int = 8  # transformers/vllm: prompts per generate call
    concurrency: int = 4  # openai: requests in flight
    max_retries: int = 5  # openai: retries on 429/5xx/timeouts, exponential backoff
    timeout_s: float = 120.0  # openai: per-request timeout
    cache: bool = True  # SQLite LLM-call cache (what makes synthesis resumable)

    def __post_init__(self) -> None:
        _check(self.kind in BACKEND_KINDS, "backend.kind", self.kind, "one of " + ", ".join(BACKEND_KINDS))
        _check(self.n_threads >= 0, "backend.n_threads", self.n_threads, ">= 0 (0 = all cores)")
        _check(self.n_ctx >= 256, "backend.n_ctx", self.n_ctx, ">= 256")
        _check(self.batch_size >= 1, "backend.batch_size", self.batch_size, ">= 1")
        _check(self.concurrency >= 1, "backend.concurrency", self.concurrency, ">= 1")
        _check(self.max_retries >= 0, "backend.max_retries", self.max_retries, ">= 0")
        _check(self.timeout_s > 0, "backend.timeout_s", self.timeout_s, "> 0")


@dataclass
class SynthConfig:
    domains: list[str] = field(
        default_factory=lambda: list(DEFAULT_DOMAINS)
    )  # safety domains to expand (seeds/domains.yaml)
    # topics the model adds per domain, and harmful goals kept per topic (each put in a request frame): the
    # quick preset's size, chosen from the held-out curve within the 30-minute budget (docs/results.md, issue #19)
    topics_per_domain: int = 5
    instructions_per_topic: int = 6
    # share of the harmful goals the model rewrites into another request form (indirect, inside a work
    # task, code, a list, a story, "what if": prompts/request_forms.txt) instead of a fixed request frame;
    # a rewrite the gates turn down falls back to a frame. 0 = frames only. Beyond the paper (issue #19)
    request_forms: float = field(default=0.0, metadata={"neutral": 0.0})
    # model-written "harmful" goals that open with a protective verb ("prevent suicide", "stop drinking";
    # synth/gates.protective_goal): keep = as harmful requests (the paper has no such gate); drop = turned
    # down, more goals are asked for; benign = asked as benign-but-sensitive requests instead (a helpful
    # positive on the same topic as the harmful ones). Beyond the paper (issue #19)
    protective_goals: ProtectiveGoals = field(default="keep", metadata={"neutral": "keep"})
    # a harmful goal's positive opens by naming what it declines ("I'm sorry, but I can't help you hurt
    # your ex-partner."), then the model's own reason and alternative: the refusal is tied to the request's
    # content, which a reworded request keeps, rather than to its frame. Goals style only. Beyond the paper
    refusal_names_goal: bool = field(default=False, metadata={"neutral": False})
    # the benign-but-sensitive requests on each harmful topic come as the model's own harmless goals
    # ("I want to check whether a loan offer is a scam") put in the harmful goals' request frames (those
    # that add no intent to evade), not as free questions: harmful and benign requests then differ in
    # what they ask, not in how, so refusing by the request's form stops paying. Goals style only.
    # Beyond the paper (issue #19)
    benign_goals: bool = field(default=False, metadata={"neutral": False})
    # goals (harmful and everyday) also put in ten more request frames, questions of other shapes that
    # carry no intent to evade ("Can you tell me how to …?", "I need to …. Any tips?":
    # prompts/request_frames_more.txt), so that no frame tells a harmful request from another. At two
    # training seeds the judge's held-out cut rose to 81 % and MT-Bench refusals doubled; not the
    # preset (docs/experiments.md, "Goals in ten more request frames"). Goals style only. Beyond the paper (issue #19)
    more_frames: bool = field(default=False, metadata={"neutral": False})
    # harmful goals written under classifier-free guidance (llm/guided.py) away from the same list prompt
    # asking for harmless goals, at this scale; 1 = off. The 135M model asked for harmful goals writes
    # mostly harmless ones (21 % harmful read blind; 65 % at scale 4), so the harmful requests it is taught
    # to refuse differed from the benign ones mostly by their frame. Runs on the run's vLLM engine
    # (llm/vllm_guided.py), else in transformers on the model's weights. Goals style only. Beyond the
    # paper (issue #19); the preset since 2026-12-07: beside the everyday requests the tuned model then
    # refused 7 % of MT-Bench's questions read blind instead of 24 % (docs/results.md)
    goal_guidance: float = field(default=4.0, metadata={"neutral": 1.0})
    instruction_style: str = "goals"  # goals: model lists "I want to ..." goals, put in request frames; requests: classic self-instruct
    # benign-but-sensitive requests as a share of harmful ones (helpful pos, needless-refusal tox; teaches
    # when to help): at 0.4 the tuned model refused 56 % of safe prompts (docs/results.md)
    benign_share: float = 1.0
    # everyday requests as a share of harmful ones: tasks and questions with nothing sensitive in them
    # ("Write a thank-you note to my neighbour"), listed by the model itself, its own answer as the
    # positive and a needless refusal as the toxic side, as for the benign-but-sensitive ones. Without
    # them every task-shaped request the model was taught anything about was harmful, and the tuned model
    # refused 39-49 % of MT-Bench's everyday questions, read blind (the base none). Beyond the paper
    # (issue #19); the preset since 2026-12-06, with train.ut_everyday false (docs/results.md)
    everyday_share: float = field(default=0.3, metadata={"neutral": 0.0})
    # that share of the everyday goals rewritten by the model into the request forms (a task, a list, a
    # story, code …: prompts/request_forms.txt) instead of the harmful goals' frames, where they contradict
    # the harmful requests head-on. Beyond the paper (issue #19); not adopted (docs/results.md)
    everyday_forms: float = field(default=0.0, metadata={"neutral": 0.0})
    rouge_threshold: float = (
        0.7  # self-instruct: reject an instruction whose ROUGE-L F vs a kept one exceeds this
    )
    candidates: int = 1  # samples per side per round; the quality gates pick one, a failed side is resampled
    # which accepted positive of a harmful request is kept: first = the first the gates accept; best = of a
    # round's candidates, the most whole refusal (declines, says why, offers an alternative, on topic, no
    # loop: gates.refusal_score), the paper's positive constraints as a ranking
    pos_select: PosSelect = field(default="first", metadata={"neutral": "first"})
    # where a harmful request's toxic side comes from: icl = written after the toxic in-context examples
    # under the negative constraints (the paper's); own = the model's own unprompted reply to the request
    # (the ICL way when that reply refuses), so unlikelihood pushes down what the model really says to a
    # harmful request, in the plain style its benign answers share, rather than a style only the toxic
    # examples have. Beyond the paper (issue #19)
    toxic_from: ToxicFrom = field(default="icl", metadata={"neutral": "icl"})
    # a benign request's positive (the model's own answer) sampled again when its MiniLM cosine with the
    # request is below this: answers to another question and rambles about the assistant itself, which
    # MLE would teach as answers (issue #19: the preset's non-answers to safe prompts). -1 = off
    benign_pos_relevance: float = field(default=-1.0, metadata={"neutral": -1.0})
    # a benign request's first answer sampled greedily (temperature 0): the answer the untuned model gives
    # at evaluation, so MLE on it holds that answer instead of teaching a temperature-0.8 draw, which a
    # 135 M model often lets drift (issue #19: non-answers to safe prompts). Later rounds sample as usual
    benign_pos_greedy: bool = field(default=False, metadata={"neutral": False})
    # a benign or everyday request's positive opens with this sentence ("I'm glad to help."; "" = off), so
    # that an answer follows an agreement: 8 of the tuned preset's 80 MT-Bench answers are an agreement with
    # nothing after it ("I'm ready to help you with that."; the base none), and every harmful positive
    # opens "I'm sorry" (our guess: "I'm" learned as the opener of any task-shaped request, "sorry" pushed
    # away after it on benign ones). At one seed the opener started nearly every reply to a harmless
    # prompt and a third of the attack replies, almost none of them refusals: MT-Bench non-answers 34 -> 25 %
    # by the judge, past tense 30 -> 43 %. Beyond the paper (issue #19); not adopted (docs/experiments.md,
    # "An opener before benign answers")
    answer_opener: str = field(default="", metadata={"neutral": ""})
    max_attempts: int = 3  # bounded retries when the model ignores the format, then drop and count why
    polarity_min: float = 0.15  # drop pairs whose pos/tox embedding cosine distance is below this
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 88  # per response: inner thoughts (~40 tokens) + a 3-sentence refusal
    target_triplets: int = 600  # stop generating pairs once this many are kept (0 = all instructions)
    gate_judge: JudgeName = (
        "keyword"  # the judge synthesis filters with (keyword = the string gates only; another
    )
    # judge also screens the harmful positives); the evaluation's primary judge should be a different one
    constraints_per_domain: int = 3  # model-written constraints per domain and polarity (besides seeds)
    attack_share: float = 0.3  # share of harmful triplets also stored with the request inside a jailbreak wrapper (same pos/tox)
    # share of everyday triplets also stored inside one of the same wrappers, with the same answer: without
    # it every wrapped request the model saw was harmful, so the frame alone (a persona, a story) read as
    # the signal to refuse. Beyond the paper (issue #19); not adopted: at 1.0 MT-Bench refusals fell from
    # 22.5 to 12.5 % but direct and held-out compliance rose (docs/results.md, what we tried)
    attack_share_everyday: float = field(default=0.0, metadata={"neutral": 0.0})
    rules_per_prompt: int = 2  # domain constraints shown with each request in the pair prompts
    chunk: int = (
        16  # requests generated together (raised to half a batch engine's preferred batch, e.g. vLLM)
    )
    list_max_new_tokens: int = 128  # per list call (topics, instructions, constraints: about 5 items)
    relevance_min: float = (
        0.3  # drop generated requests whose MiniLM cosine to their domain (or the benign seeds) is below
    )
    seed: int = 0

    def __post_init__(self) -> None:
        _check(len(self.domains) > 0, "synth.domains", self.domains, "a non-empty list of domains")
        _check(
            self.constraints_per_domain >= 0,
            "synth.constraints_per_domain",
            self.constraints_per_domain,
            ">= 0",
        )
        _check(self.rules_per_prompt >= 1, "synth.rules_per_prompt", self.rules_per_prompt, ">= 1")
        _check(self.chunk >= 1, "synth.chunk", self.chunk, ">= 1")
        _check(self.list_max_new_tokens >= 16, "synth.list_max_new_tokens", self.list_max_new_tokens, ">= 16")
        _check(
            -1.0 <= self.relevance_min <= 1.0,
            "synth.relevance_min",
            self.relevance_min,
            "in [-1, 1] (cosine; -1 = off)",
        )
        _check(
            -1.0 <= self.benign_pos_relevance <= 1.0,
            "synth.benign_pos_relevance",
            self.benign_pos_relevance,
            "in [-1, 1] (cosine; -1 = off)",
        )
        _check(self.topics_per_domain >= 1, "synth.topics_per_domain", self.topics_per_domain, ">= 1")
        _check(
            self.instructions_per_topic >= 1,
            "synth.instructions_per_topic",
            self.instructions_per_topic,
            ">= 1",
        )
        _check(0.0 <= self.attack_share <= 1.0, "synth.attack_share", self.attack_share, "in [0, 1]")
        _check(
            0.0 <= self.attack_share_everyday <= 1.0,
            "synth.attack_share_everyday",
            self.attack_share_everyday,
            "in [0, 1]",
        )
        _check(
            self.attack_share_everyday == 0 or self.everyday_share > 0,
            "synth.attack_share_everyday",
            self.attack_share_everyday,
            "0 unless synth.everyday_share > 0 (it wraps the everyday requests)",
        )
        _check(0.0 <= self.benign_share <= 2.0, "synth.benign_share", self.benign_share, "in [0, 2]")
        _check(0.0 <= self.everyday_share <= 2.0, "synth.everyday_share", self.everyday_share, "in [0, 2]")
        _check(
            self.everyday_share == 0 or self.instruction_style == "goals",
            "synth.everyday_share",
            self.everyday_share,
            "0 unless synth.instruction_style is goals (everyday goals go in the goals' request frames;"
            " add --set synth.everyday_share=0)",
        )
        _check(0.0 <= self.everyday_forms <= 1.0, "synth.everyday_forms", self.everyday_forms, "in [0, 1]")
        _check(
            self.everyday_forms == 0 or self.everyday_share > 0,
            "synth.everyday_forms",
            self.everyday_forms,
            "0 unless synth.everyday_share > 0 (it rewrites the everyday goals)",
        )
        _check(0.0 < self.rouge_threshold <= 1.0, "synth.rouge_threshold", self.rouge_threshold, "in (0, 1]")
        _check(self.candidates >= 1, "synth.candidates", self.candidates, ">= 1")
        _check(
            self.pos_select in typing.get_args(PosSelect),
            "synth.pos_select",
            self.pos_select,
            "one of " + ", ".join(typing.get_args(PosSelect)),
        )
        _check(
            self.toxic_from in typing.get_args(ToxicFrom),
            "synth.toxic_from",
            self.toxic_from,
            "one of " + ", ".join(typing.get_args(ToxicFrom)),
        )
        _check(
            self.protective_goals in typing.get_args(ProtectiveGoals),
            "synth.protective_goals",
            self.protective_goals,
            "one of " + ", ".join(typing.get_args(ProtectiveGoals)),
        )
        _check(self.max_attempts >= 1, "synth.max_attempts", self.max_attempts, ">= 1")
        _check(
            0.0 <= self.polarity_min <= 2.0,
            "synth.polarity_min",
            self.polarity_min,
            "in [0, 2] (cosine distance)",
        )
        _check(0.0 <= self.temperature <= 2.0, "synth.temperature", self.temperature, "in [0, 2]")
        _check(0.0 < self.top_p <= 1.0, "synth.top_p", self.top_p, "in (0, 1]")
        _check(self.max_new_tokens >= 8, "synth.max_new_tokens", self.max_new_tokens, ">= 8")
        _check(0.0 <= self.request_forms <= 1.0, "synth.request_forms", self.request_forms, "in [0, 1]")
        _check(self.goal_guidance >= 1.0, "synth.goal_guidance", self.goal_guidance, ">= 1 (1 = off)")
        _check(self.target_triplets >= 0, "synth.target_triplets", self.target_triplets, ">= 0 (0 = no cap)")
        _check(
            self.gate_judge in JUDGE_NAMES,
            "synth.gate_judge",
            self.gate_judge,
            "one of " + ", ".join(JUDGE_NAMES),
        )
        _check(
            self.instruction_style in ("goals", "requests"),
            "synth.instruction_style",
            self.instruction_style,
            "one of goals, requests",
        )
        if self.instruction_style != "goals":  # these act on the goal lists; requests would ignore them
            for key, on, off in (
                ("goal_guidance", self.goal_guidance > 1.0, "1"),
                ("request_forms", self.request_forms > 0, "0"),
                ("protective_goals", self.protective_goals != "keep", "keep"),
                ("refusal_names_goal", self.refusal_names_goal, "false"),
                ("benign_goals", self.benign_goals, "false"),
                ("more_frames", self.more_frames, "false"),
            ):
                if on:
                    raise ConfigError(
                        f"synth.{key}={getattr(self, key)!r} acts on the goal lists of instruction_style=goals; "
                        f"set synth.instruction_style=goals or synth.{key}={off}"
                    )


@dataclass
class TrainConfig:
    lam: float = 0.4  # weight of the unlikelihood term (paper λ); 0 with lam_benign 0 = positive-only SFT
    lam_benign: float | None = 2.0  # λ for benign triplets (tox = a needless refusal); None = lam. At lam
    # over-refusal rose 26 points: MLE on the harmful refusals also lifted the benign ones (docs/results.md)
    fine_grained: bool = True  # UT only from the first token where tox leaves pos; False = every tox token
    # retain term beyond the paper: weight of KL(base || tuned) over the whole next-token distribution
    # on the positive (helpful) tokens of benign triplets, the base being the adapter switched off;
    # 0 = off (the paper's objective; configs/paper.yaml). Needs LoRA.
    kl_benign: float = field(default=0.0, metadata={"neutral": 0.0})
    # representation rerouting beyond the paper (RMU's terms, arXiv 2403.03218, on circuit breakers'
    # schedule, 2406.04313): weight of the rerouting term (hidden states of harmful toxic tokens sent
    # to a random direction, a third and two thirds deep) and its retain term (benign helpful tokens'
    # kept); 0 = off. Needs LoRA.
    reroute: float = field(default=0.0, metadata={"neutral": 0.0})
    # with reroute: multiplier of its retain term against the rerouting one (1 = circuit breakers'
    # schedule alone). The retain term measured 0.07-0.1 against rerouting's 1.2-2 at weight 1, and
    # rerouting turned replies to safe prompts into essays (docs/experiments.md, "Rerouting on the bf16
    # preset")
    reroute_retain: float = field(default=1.0, metadata={"neutral": 1.0})
    # safety recovery beyond the paper (arXiv 2406.05946): share of the harmful triplets that also train
    # their refusal written after the first k toxic tokens (train/collate.py), so that harmful text
    # already begun is stopped; 0 = off
    recovery: float = field(default=0.0, metadata={"neutral": 0.0})
    # refusal feature adversarial training beyond the paper (ReFAT, arXiv 2409.20089): probability that a
    # harmful row is trained with the refusal direction (harmful minus benign prompts' mean state two
    # fifths deep, recomputed as training goes) projected out of every layer (train/refusal_feature.py); 0 = off
    refat: float = field(default=0.0, metadata={"neutral": 0.0})
    # latent adversarial training beyond the paper (arXiv 2403.05030, 2407.15549): radius, relative to each
    # token's hidden-state norm a third deep, of the perturbation an adversary adds to harmful prompts'
    # states there before the step trains (train/latent_adversary.py); 0 = off
    lat: float = field(default=0.0, metadata={"neutral": 0.0})
    # beyond the paper: after the first token where a harmful tox leaves its pos, UT only on tokens at least
    # this many times as frequent among the harmful toxic tokens as among the benign answers (train/mask.py),
    # so that the words that begin any answer are not pushed down with the harm; 0 = off (every token)
    ut_specific: float = field(default=0.0, metadata={"neutral": 0.0})
    # beyond the paper: benign triplets (tox = a needless refusal) get UT only on their first this many
    # tokens from the first mismatch (train/mask.py first_n); 0 = every token. 3 ("I'm sorry"): on the
    # whole refusal the tuned model learned to leave a refusal begun, apologies with nothing after (docs/results.md)
    ut_benign_tokens: int = field(default=3, metadata={"neutral": 0})
    # beyond the paper, with synth.everyday_share: False = the everyday triplets (a plain task, tox = a
    # needless refusal) train their helpful answer only, no UT on the refusal: with UT the model learned
    # to leave direct harmful requests unrefused as well (docs/experiments.md, "Everyday requests without
    # the unlikelihood term"); True = UT as on every other triplet (the paper's objective)
    ut_everyday: bool = field(default=False, metadata={"neutral": True})
    method: TrainMethod = "ptalign"  # ptalign | dpo (TRL DPOTrainer baseline on the same triplets)
    lora_r: int = 16  # 0 = full fine-tune
    lora_alpha: int = 32
    # peft's default; 0.05 cost a quarter of a CPU step in dropout masks (docs/results.md)
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"  # peft target_modules ('all-linear' or comma-separated names)
    # 5e-4: 3 % harmful compliance but 40 % over-refusal; 2e-4: 28 % / 24 % (docs/results.md)
    lr: float = 3e-4
    epochs: float = 2.0
    batch_size: int = 8  # triplets per optimizer step (per device, before grad accumulation)
    grad_accum: int = 1
    max_length: int = 256  # prompt + response tokens per side; longer prompts are cut from the left
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    prefix_sharing: bool = True  # pack prompt once per triplet: [prompt | pos | tox] with a block mask
    chunked_loss: bool = True  # compute losses from hidden states in chunks (no B×T×V logits)
    group_by_length: bool = (
        True  # batch triplets of similar length (less padding; batches still vary per epoch)
    )
    gradient_checkpointing: bool = False
    bf16: bool | str = "auto"  # bf16 autocast; auto = where bf16 matmuls are native (a GPU, a CPU with
    # AVX512-BF16 or AMX: 1.6x fp32 here), else fp32 (emulated bf16 is ~4x slower than fp32)
    compile: bool = False  # torch.compile each decoder layer; on a GPU the loss head's softmax too
    # transformers' attn_implementation for training; auto = eager on a CPU, sdpa on a GPU. Eager
    # trained the preset's triplets 1.17-1.19x faster on a 2-core CPU (SDPA's fused CPU backward was a
    # fifth of a step; docs/results.md). Runs hashed before auto was the default used sdpa (neutral: no hash)
    attn: str = field(default="auto", metadata={"neutral": "sdpa"})
    liger: bool = False  # Liger's fused Triton kernels via transformers (needs CUDA and liger-kernel)
    save_steps: int = 0  # 0 = checkpoint each epoch
    logging_steps: int = 1
    tensorboard: bool = False  # also log to OUT/train/tb (needs the tensorboard package)
    dpo_beta: float = 0.1  # method=dpo: KL strength of the DPO baseline (TRL's default)
    columns: str = ""  # --data columns: '' = recognised (ptalign's or TRL's); a preset (pku-saferlhf,
    # beavertails); or field:column pairs, e.g. instruction:question,pos:safe_answer,tox:unsafe_answer
    seed: int = 0

    def __post_init__(self) -> None:
        _check(0.0 <= self.lam <= 10.0, "train.lam", self.lam, "in [0, 10] (paper: 0.4)")
        _check(
            self.lam_benign is None
            or (isinstance(self.lam_benign, (int, float)) and 0.0 <= self.lam_benign <= 10.0),
            "train.lam_benign",
            self.lam_benign,
            "null (= train.lam) or a number in [0, 10]",
        )
        _check(
            self.method in TRAIN_METHODS, "train.method", self.method, "one of " + ", ".join(TRAIN_METHODS)
        )
        for key in ("kl_benign", "reroute"):  # the retain and rerouting terms compare with the adapter off
            value = getattr(self, key)
            _check(0.0 <= value <= 100.0, f"train.{key}", value, "in [0, 100] (0 = off)")
            _check(
                value == 0 or self.lora_r > 0,
                f"train.{key}",
                value,
                "0 with a full fine-tune (train.lora_r=0): the base it compares with is the adapter switched off",
            )
        _check(
            0.0 <= self.reroute_retain <= 1000.0,
            "train.reroute_retain",
            self.reroute_retain,
            "in [0, 1000] (1 = circuit breakers' schedule alone)",
        )
        _check(
            self.reroute_retain == 1.0 or self.reroute > 0,
            "train.reroute_retain",
            self.reroute_retain,
            "1 unless train.reroute > 0 (it weighs rerouting's retain term)",
        )
        _check(
            self.reroute == 0 or self.kl_benign == 0,
            "train.reroute",
            self.reroute,
            "0 while train.kl_benign is set (one retain term at a time)",
        )
        _check(0.0 <= self.recovery <= 1.0, "train.recovery", self.recovery, "in [0, 1] (0 = off)")
        _check(
            self.recovery == 0 or self.method == "ptalign",
            "train.recovery",
            self.recovery,
            "0 with train.method=dpo (DPO trains pairs, not a third response)",
        )
        _check(0.0 <= self.refat <= 1.0, "train.refat", self.refat, "in [0, 1] (0 = off)")
        _check(0.0 <= self.lat <= 2.0, "train.lat", self.lat, "in [0, 2] (0 = off)")
        _check(
            self.lat == 0
            or (self.method == "ptalign" and self.reroute == 0 and self.kl_benign == 0 and self.refat == 0),
            "train.lat",
            self.lat,
            "0 with train.method=dpo, train.reroute, train.kl_benign or train.refat (one extra pass at a time)",
        )
        _check(self.ut_specific >= 0, "train.ut_specific", self.ut_specific, ">= 0 (0 = off)")
        _check(
            self.ut_benign_tokens >= 0,
            "train.ut_benign_tokens",
            self.ut_benign_tokens,
            ">= 0 (0 = every token)",
        )
        _check(
            self.ut_specific == 0 or (self.method == "ptalign" and self.fine_grained),
            "train.ut_specific",
            self.ut_specific,
            "0 with train.method=dpo or train.fine_grained=false (it cuts the fine-grained mask)",
        )
        _check(
            self.refat == 0 or (self.method == "ptalign" and self.reroute == 0 and self.kl_benign == 0),
            "train.refat",
            self.refat,
            "0 with train.method=dpo, train.reroute or train.kl_benign (their reference passes must see the features)",
        )
        _check(self.bf16 in (True, False, "auto"), "train.bf16", self.bf16, "true, false or auto")
        _check(
            self.attn in ("auto", "eager", "sdpa", "flash_attention_2"),
            "train.attn",
            self.attn,
            "auto, eager, sdpa or flash_attention_2",
        )
        _check(self.lora_r >= 0, "train.lora_r", self.lora_r, ">= 0 (0 = full fine-tune)")
        _check(self.lora_alpha > 0, "train.lora_alpha", self.lora_alpha, "> 0")
        _check(0.0 <= self.lora_dropout < 1.0, "train.lora_dropout", self.lora_dropout, "in [0, 1)")
        _check(0.0 < self.lr < 1.0, "train.lr", self.lr, "in (0, 1)")
        _check(0 < self.epochs < math.inf, "train.epochs", self.epochs, "a finite number > 0")
        _check(
            self.method != "dpo" or self.lora_r > 0,
            "train.lora_r",
            self.lora_r,
            "> 0 with train.method=dpo (its reference is the adapter switched off)",
        )
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(self.grad_accum >= 1, "train.grad_accum", self.grad_accum, ">= 1")
        _check(self.max_length >= 32, "train.max_length", self.max_length, ">= 32")
        _check(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", self.warmup_ratio, "in [0, 1)")
        _check(self.save_steps >= 0, "train.save_steps", self.save_steps, ">= 0")
        _check(self.logging_steps >= 1, "train.logging_steps", self.logging_steps, ">= 1")
        _check(self.dpo_beta > 0, "train.dpo_beta", self.dpo_beta, "> 0 (TRL default 0.1)")
        _check(
            self.columns in ("", *DATA_PRESETS) or ":" in self.columns,
            "train.columns",
            self.columns,
            f"'' (recognised), a preset ({', '.join(DATA_PRESETS)}) or field:column pairs such as "
            "instruction:question,pos:safe,tox:unsafe",
        )
        _check(
            bool(self.lora_targets.strip()),
            "train.lora_targets",
            self.lora_targets,
            "'all-linear' or comma-separated module names",
        )


@dataclass
class EvalConfig:
    evals: list[EvalName] = field(default_factory=lambda: list(EVAL_NAMES))
    data_dir: str = "auto"  # a folder in the standard layout (advbench/, xstest/, bigbench_hhh_alignment/,
    # mt_bench/) filling the paths below left empty; auto = $PTALIGN_EVAL_DATA, else ./data/eval, else
    # ../shared/data/eval, else none; '' = none (the built-in sets)
    advbench_path: str = ""  # '' = built-in harmful set only; else path to harmful_behaviors.csv
    xstest_path: str = ""  # xstest_prompts.csv
    hhh_dir: str = ""  # BIG-bench hhh_alignment dir (harmless/helpful/honest/other/task.json)
    mtbench_path: str = ""  # question.jsonl
    max_harmful: int = 100  # harmful goals per source (0 = all)
    max_safe: int = 0  # safe prompts per source (0 = all)
    # MT-Bench questions (0 = all 80): graded, and read by the refusal judges for refusals of everyday
    # requests; on 5 the preset's 45-point rise in them went unseen (docs/results.md)
    max_mtbench: int = 0
    max_hhh: int = 0  # BIG-bench HHH examples (0 = all 221), stratified by category
    max_contrast: int = 0  # XSTest's unsafe contrast prompts asked directly (0 = all 200; needs xstest_path)
    attacks: list[str] = field(
        default_factory=lambda: list(ATTACK_NAMES)
    )  # eval/attacks.py: in-family + held-out
    autodan_goals: int = 3  # goals attacked by the genetic search
    autodan_steps: int = 3  # generations of the genetic search
    autodan_population: int = 6
    max_new_tokens: int = 48  # eval generations (refusals show in the first tokens)
    helpful_max_new_tokens: int = 96  # MT-Bench answers (judged for quality, so longer)
    # log-likelihood scoring (HHH, AutoDAN fitness): padded tokens per forward pass; 0 = the device's
    # (loglik.budget: 512 on a CPU, where padded rows cost more than batching saves; 4096 on a GPU)
    score_tokens: int = 0
    # prompts per generate call (transformers: 32 is ~1.7x 16 on a CPU); a batch engine whose own
    # preferred batch is larger (vLLM: 256) gets that (eval/common.generate_batch)
    batch_size: int = 32
    dtype: str = (
        "auto"  # eval weights for both models: auto = bfloat16 where matmuls are native (GPU, CPU with
    )
    # AVX512-BF16/AMX: 1.8x fp32 here), else model.dtype; float32 | bfloat16 | float16
    engine: EvalEngine = (
        "fastest"  # fastest: vllm where installed, else transformers; transformers: base and aligned
    )
    # through one engine (eval.dtype weights); vllm: both through vLLM on the same eval.dtype weights
    # (adapter merged; needs scripts/install_vllm.sh);
    # auto: each model through backend.kind (base on llama.cpp's GGUF, aligned on transformers: mixed engines)
    judge: str = "minilm_smol"  # the primary judge of every generated reply (judges.JUDGES); by default not
    # the one synthesis filtered with (synth.gate_judge)
    judges_extra: list[str] = field(default_factory=lambda: ["keyword", "xstest"])  # also reported, with
    # their agreement with the primary judge; LLM judges here run on judge_max replies
    judge_model: str = ""  # the LLM for LLM judges and MT-Bench grading ('' = the evaluated base model: weak)
    judge_max: int = 40  # replies given to LLM judges named in judges_extra (0 = all)
    polarity_compare: str = (
        ""  # optional chosen/rejected JSONL whose polarity is reported beside the triplets'
    )
    max_empty_share: float = 0.5  # an eval whose replies are more often empty or near-empty than this
    # stops (a template that ends the turn at once scores as perfectly safe); over 5 % a warning
    bootstrap: int = 1000  # resamples for 95% confidence intervals
    show_unsafe: bool = False  # show unredacted harmful generations in reports
    seed: int = 0

    def __post_init__(self) -> None:
        for e in self.evals:
            _check(e in EVAL_NAMES, "eval.evals", e, "a list drawn from " + ", ".join(EVAL_NAMES))
        for a in self.attacks:
            _check(a in ATTACK_NAMES, "eval.attacks", a, "a list drawn from " + ", ".join(ATTACK_NAMES))
        _check("direct" in self.attacks, "eval.attacks", self.attacks, "a list that includes direct")
        _check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            "eval.dtype",
            self.dtype,
            "auto, float32, bfloat16 or float16",
        )
        for k in (
            "max_harmful",
            "max_safe",
            "max_mtbench",
            "max_hhh",
            "autodan_goals",
            "judge_max",
            "max_contrast",
        ):
            _check(getattr(self, k) >= 0, f"eval.{k}", getattr(self, k), ">= 0 (0 = all)")
        _check(self.autodan_steps >= 1, "eval.autodan_steps", self.autodan_steps, ">= 1")
        _check(self.autodan_population >= 2, "eval.autodan_population", self.autodan_population, ">= 2")
        _check(self.max_new_tokens >= 1, "eval.max_new_tokens", self.max_new_tokens, ">= 1")
        _check(
            self.helpful_max_new_tokens >= 1,
            "eval.helpful_max_new_tokens",
            self.helpful_max_new_tokens,
            ">= 1",
        )
        _check(
            self.score_tokens == 0 or self.score_tokens >= 64,
            "eval.score_tokens",
            self.score_tokens,
            ">= 64, or 0 for the device's",
        )
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, ">= 1")
        _check(
            self.judge in JUDGE_NAMES,
            "eval.judge",
            self.judge,
            "one of " + ", ".join(JUDGE_NAMES) + " (the old 'llm' is harmbench with eval.judge_model)",
        )
        for j in self.judges_extra:
            _check(j in JUDGE_NAMES, "eval.judges_extra", j, "a list drawn from " + ", ".join(JUDGE_NAMES))
        harmless = [e for e in ("overrefusal", "helpful") if e in self.evals]
        _check(
            self.judge not in HARM_ONLY_JUDGES or not harmless,
            "eval.judge",
            self.judge,
            f"a judge of refusal while eval.evals has {' and '.join(harmless)} ({self.judge} judges harm: "
            "'safe' is no refusal); keep eval.judge=minilm_smol and add it to eval.judges_extra, or drop "
            f"{' and '.join(harmless)} from eval.evals",
        )
        _check(
            self.engine in typing.get_args(EvalEngine),
            "eval.engine",
            self.engine,
            "one of " + ", ".join(typing.get_args(EvalEngine)),
        )
        _check(self.bootstrap >= 0, "eval.bootstrap", self.bootstrap, ">= 0")
        _check(0.0 <= self.max_empty_share <= 1.0, "eval.max_empty_share", self.max_empty_share, "in [0, 1]")


@dataclass
class ReportConfig:
    show_unsafe: bool = False  # include unredacted toxic/harmful text in the HTML report
    max_examples: int = 5  # example generations shown per section


@dataclass
class RunConfig:
    run_dir: str = "runs/quick"  # where every stage reads and writes
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        _check(bool(self.run_dir), "run_dir", self.run_dir, "a non-empty directory path")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self, *sections: str) -> str:
        """Short hash of the named sections (all when none): the config identity stored in records.

        A field declared with a `neutral` value (one that reproduces what the code did before the field
        existed) is left out while it holds that value, so adding an option does not change the identity
        of every existing run (their --resume, their sweeps' base evaluation)."""
        d = self.to_dict()
        for sec in dataclasses.fields(self):
            sub = getattr(self, sec.name)
            if not dataclasses.is_dataclass(sub):
                continue
            for f in dataclasses.fields(sub):
                if "neutral" in f.metadata and getattr(sub, f.name) == f.metadata["neutral"]:
                    del d[sec.name][f.name]
        if sections:
            d = {k: d[k] for k in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
