"""The one interface every generation backend meets.

Synthesis, judging and evaluation only ever see `Backend.generate(chats, params)`; the call cache,
retries and progress wrap it once (see cache.py), not per backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol, runtime_checkable

from ptalign.errors import BackendError  # noqa: F401  (declared with the other errors, raised by engines)

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
Chat = list[Message]


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # generation ends before the first stop string
    seed: int = 0  # per-call sampling seed (same seed + same prompt = same text where the engine allows)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    def unseeded(self) -> GenParams:
        """The same settings with seed 0: calls that differ only in seed can share one engine batch."""
        return replace(self, seed=0)


# One GenParams for every chat of a call, or one per chat (e.g. a per-request seed, so a synthesis
# round can go to a batch engine in one call and still sample each chat as it would alone).
Params = GenParams | Sequence[GenParams]


def per_chat(params: Params, n: int) -> list[GenParams]:
    """`params` as one GenParams per chat; a list must have exactly one per chat."""
    if isinstance(params, GenParams):
        return [params] * n
    out = list(params)
    if len(out) != n:
        raise ValueError(f"{len(out)} GenParams for {n} chats: pass one GenParams, or one per chat")
    return out


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""  # "stop" | "length" | ""
    cached: bool = False
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str  # "llamacpp" | "transformers" | "openai" | "vllm"
    model_id: str  # identity of the weights (file hash or path) for the call cache

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        """One Generation per chat, in order; `params` is shared or one per chat (`per_chat`)."""
        ...

    def close(self) -> None: ...
