"""`ptalign merge`: base model + LoRA adapter → one HF safetensors directory (for vLLM, llama.cpp's
converter, or the hub).

Reads: the adapter directory (and its ptalign_train.json for the base model spec). Writes: OUT/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptalign.errors import UserError
from ptalign.train.setup import TRAIN_INFO, save_dir, save_pretrained


def merge(adapter: Path, out: Path, model_spec: str | None, cfg: Any) -> Path:
    """Base model + LoRA adapter → a merged HF safetensors directory at out (never overwrites one)."""
    adapter, out = Path(adapter), Path(out)
    from ptalign import models
    from ptalign.errors import ModelLoadError

    if not (adapter / "adapter_config.json").is_file() and (adapter / "config.json").is_file():
        raise UserError(
            f"{adapter} already holds a whole model (a full fine-tune, train.lora_r=0): nothing to merge; "
            "use that directory as it is (vLLM, transformers, llama.cpp's converter)"
        )
    try:
        models.check_adapter(adapter)
    except ModelLoadError as e:
        raise UserError(str(e)) from None
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; pass a directory to --out (the merged model is a directory)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose another --out or delete it")
    if model_spec is None:
        info = adapter / TRAIN_INFO
        model_spec = json.loads(info.read_text())["base_model"] if info.is_file() else cfg.model.name

    model, _ = models.load(
        model_spec,
        dtype=cfg.model.dtype,
        cache_dir=cfg.model.cache_dir or None,
        adapter=adapter,
        device="cpu",
    )
    tok = models.load_tokenizer(
        adapter
        if (adapter / "tokenizer_config.json").is_file()
        else models.hf_dir(model_spec, cfg.model.cache_dir or None)
    )
    save_dir(save_pretrained(model, tok), out)  # an empty out (checked above) is replaced
    return out
