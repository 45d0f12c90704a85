"""Write a random-init HF model of a named shape (bench/train_step.py SHAPES) with a given tokenizer.

For GPU runs where no checkpoint can be downloaded or carried (the device machine takes 64 MiB): the
weights are meaningless, so such a run measures speed and exercises every stage, not safety.

    python bench/random_model.py --shape qwen2.5-0.5b --tokenizer .bench_assets/tokenizer --out /tmp/rand
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    import torch
    import transformers
    from train_step import SHAPES

    from ptalign.models import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    ap.add_argument("--tokenizer", required=True, help="tokenizer dir (with a chat template)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tok = load_tokenizer(args.tokenizer)
    spec = dict(SHAPES[args.shape])
    spec["vocab_size"] = len(tok)  # the tokenizer we carry, not the shape's own vocabulary
    cfg = getattr(transformers, spec.pop("arch"))(
        **spec, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(args.seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(args.out, safe_serialization=True)
    tok.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"random {args.shape}: {n / 1e6:.0f} M parameters → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
