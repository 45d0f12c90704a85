"""Training-step throughput and peak memory: ptalign vs TRL DPOTrainer vs TRL SFTTrainer.

Same model, same LoRA (r16, all linear layers), same triplets, same batch of triplets per optimizer
step; each method runs in its own subprocess (so peak memory is its own) through transformers'
Trainer loop, and the median step time after warm-up is reported (on a GPU from CUDA events, with no
host sync between steps). FLOPs: MFU at 6N per token, and the matrix FLOPs of one step as counted by
torch (flops_per_token_counted, mfu_counted), which for LoRA is well under 6N.

Tokens per triplet = prompt + positive + toxic tokens, counted once with ptalign's tokenisation, the
same number for all three methods (TRL's DPO and SFT process the prompt twice; that is their cost).
  - ptalign: MLE(pos) + 0.4·UT(tox), packed [prompt | pos | tox] rows, chunked loss.
  - trl_dpo: DPOTrainer, chosen = pos, rejected = tox, reference = adapter disabled.
  - trl_sft: SFTTrainer on (prompt, pos) and (prompt, tox) as two completion-only examples.

Peak memory: CUDA max_memory_allocated on a GPU; on CPU the process's peak RSS (getrusage maxrss,
which includes the loaded model, the same for every method).

    python bench/train_step.py                                     # embedded model, CPU
    python bench/train_step.py --shape qwen2.5-0.5b --device cuda --bf16 --batch 32 --tokenizer DIR

Prints one JSON object (ptalign_tokens_per_s, trl_dpo_tokens_per_s, trl_sft_tokens_per_s,
ratio_vs_dpo, ratio_vs_sft, peak_mem_ratio_vs_sft, and per-method details).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

METHODS = ("ptalign", "trl_dpo", "trl_sft")
# Random-init shapes for GPU runs (no download): Qwen2.5-0.5B as in the issue.
SHAPES = {
    "qwen2.5-0.5b": dict(
        arch="Qwen2Config",
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
    "tiny": dict(
        arch="LlamaConfig",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    ),
}
WORDS = (
    "the safe way to handle this is to ask for help and keep everyone out of harm while you check the "
    "facts with someone you trust then plan each step calmly and write down what you learn today"
).split()
PEAK_FLOPS = {"cuda": 989e12}  # H100 SXM dense bf16


def _text(rng: random.Random, tok: Any, n_tokens: int) -> str:
    ids = tok(" ".join(rng.choice(WORDS) for _ in range(n_tokens * 2)), add_special_tokens=False)[
        "input_ids"
    ][:n_tokens]
    return tok.decode(ids).strip()


def make_triplets(tok: Any, n: int, prompt_len: int, resp_len: int, seed: int = 0) -> list[dict[str, Any]]:
    """Harmless placeholder triplets; tox shares the first fifth of pos, as refusal-prefixed pairs do."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        pos = _text(rng, tok, resp_len)
        cut = len(pos) // 5
        out.append(
            {
                "id": f"b{i}",
                "instruction": _text(rng, tok, prompt_len),
                "pos": pos,
                "tox": pos[:cut] + " " + _text(rng, tok, resp_len - resp_len // 5),
                "kind": "benign" if i % 2 else "harmful",  # half each, as the preset's triplets
            }
        )
    return out


def load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch
    import transformers

    dtype = torch.bfloat16 if (args.bf16 and args.device == "cuda") else torch.float32  # CPU: fp32 + autocast
    if args.shape:
        from ptalign.models import load_tokenizer

        tok = load_tokenizer(args.tokenizer) if args.tokenizer else None
        if tok is None:
            from ptalign.models import hf_dir

            tok = load_tokenizer(hf_dir("embedded"))
        spec = dict(SHAPES[args.shape])
        spec.setdefault("vocab_size", len(tok))
        cfg = getattr(transformers, spec.pop("arch"))(
            **spec,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(0)
        with torch.device(args.device):  # initialise on the GPU: random init of 0.5 B on a CPU takes long
            model = transformers.AutoModelForCausalLM.from_config(
                cfg, dtype=dtype, attn_implementation=args.attn
            )
    else:
        from ptalign.models import hf_dir, load_tokenizer

        d = hf_dir(args.model)
        tok = load_tokenizer(d)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            d, dtype=dtype, attn_implementation=args.attn
        )
    model.config.use_cache = False
    return model.to(args.device), tok


class StepTimer:
    """Time of each optimizer step: wall clock on the CPU, CUDA events on a GPU.

    On a GPU a host sync per step would stall the queue at every step boundary, exposing the next
    step's collation and kernel launches that a real run overlaps with the GPU's work. So the timer
    records an event in the stream where each step ends (and where the first begins) and reads them
    once training is over: step i's time is end(i-1) → end(i), what a run's throughput is made of.
    """

    def __init__(self, device: str):
        from transformers import TrainerCallback

        timer = self
        self._times: list[float] = []
        self._events: list[Any] = []  # CUDA: first step's begin, then each step's end
        # process CPU seconds per step (all threads): robust to other jobs on a shared CPU
        self.cpu_times: list[float] = []
        self.device = device

        class _CB(TrainerCallback):
            def on_step_begin(self, *a: Any, **k: Any) -> None:
                if timer.device == "cuda" and not timer._events:
                    timer._events.append(timer._record())
                timer._t, timer._c = time.perf_counter(), time.process_time()

            def on_step_end(self, *a: Any, **k: Any) -> None:
                if timer.device == "cuda":
                    timer._events.append(timer._record())
                else:
                    timer._times.append(time.perf_counter() - timer._t)
                timer.cpu_times.append(time.process_time() - timer._c)

        self.callback = _CB()

    @staticmethod
    def _record() -> Any:
        import torch

        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    @property
    def times(self) -> list[float]:
        """Seconds per step; on a GPU waits for the stream first (call after training)."""
        if self.device != "cuda":
            return self._times
        import torch

        torch.cuda.synchronize()
        ev = self._events
        return [a.elapsed_time(b) / 1000 for a, b in zip(ev[:-1], ev[1:], strict=True)]


def _addmm_flop(
    self_shape: Any, a_shape: Any, b_shape: Any, *_: Any, out_shape: Any = None, **__: Any
) -> int:
    """torch's own addmm formula takes a 4th positional argument as out_shape, so the dtype_out overload
    (`torch.addmm(..., out_dtype=torch.float32)`, TRL's chunked log-prob backward on CUDA) raises a
    TypeError inside FlopCounterMode (torch 2.11-2.13); the same count, without that clash."""
    m, k = a_shape
    return 2 * m * k * b_shape[1]


class FlopCount:
    """Matrix FLOPs of the first (warm-up) step, counted by torch's FlopCounterMode.

    MFU at 6N per token is the convention the targets use. Under LoRA the frozen weights need no
    weight gradients, so a step does nearer 4N per token plus the head and attention (and DPO its
    reference pass): this count, over the step time, says how busy the matrix units really were.
    Not used with torch.compile (the mode would send the step through eager, then compile in a
    timed one); the same method and batch without --compile counts the same work.
    """

    def __init__(self) -> None:
        from transformers import TrainerCallback

        counter = self
        self.flops: int | None = None
        self._mode: Any = None

        class _CB(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, *a: Any, **k: Any) -> None:
                if state.global_step == 0:
                    import torch
                    from torch.utils.flop_counter import FlopCounterMode

                    mapping = {torch.ops.aten.addmm: _addmm_flop}
                    counter._mode = FlopCounterMode(display=False, custom_mapping=mapping)
                    counter._mode.__enter__()

            def on_step_end(self, *a: Any, **k: Any) -> None:
                if counter._mode is not None:
                    counter._mode.__exit__(None, None, None)
                    counter.flops, counter._mode = counter._mode.get_total_flops(), None

        self.callback = _CB()


def run_one(method: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from peft import LoraConfig

    from ptalign.config import TrainConfig
    from ptalign.train import set_threads, training_kwargs
    from ptalign.train.collate import encode_all

    if args.device == "cpu":
        set_threads()
    model, tok = load_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    records = make_triplets(tok, args.batch * (args.steps + args.warmup), args.prompt_len, args.resp_len)
    tcfg = TrainConfig(
        batch_size=args.batch,
        max_length=args.prompt_len + args.resp_len + 64,
        epochs=1.0,
        warmup_ratio=0.0,
        lora_r=args.lora_r,
        lora_dropout=0.0,
        bf16=args.bf16,
        liger=args.liger,
        compile=args.compile,
        gradient_checkpointing=args.grad_ckpt,
        save_steps=10**6,
        logging_steps=10**6,
    )
    examples, stats = encode_all(tok, records, tcfg.max_length)
    tokens_per_triplet = stats["tokens"] / len(examples)
    kw = training_kwargs(tcfg, Path(args.workdir) / method)
    if args.no_bucket:
        kw["train_sampling_strategy"] = "random"
    kw.update(max_steps=args.steps + args.warmup, save_strategy="no", logging_steps=10**6, disable_tqdm=True)
    if args.compile and method != "ptalign":
        kw["torch_compile"] = True  # TRL wraps the model itself: transformers compiles the whole of it
    timer = StepTimer(args.device)
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if method == "ptalign":
        from peft import get_peft_model
        from transformers import TrainingArguments

        from ptalign.train import Examples, compile_layers, skip_adapter_input_casts
        from ptalign.train.collate import GPU_PAD_MULTIPLE, TripletCollator
        from ptalign.train.trainer import DualTrainer

        model = get_peft_model(model, lora)
        if args.bf16 and not args.peft_casts:
            skip_adapter_input_casts(model)  # as ptalign train does under bf16 (same numbers)
        if args.compile:
            compile_layers(model)  # as ptalign train does with train.compile
        trainer = DualTrainer(
            model=model,
            args=TrainingArguments(**kw),
            train_dataset=Examples(examples),
            data_collator=TripletCollator(  # rows padded as ptalign train pads them
                tok.pad_token_id,
                packed=not args.no_packing,
                pad_multiple=args.pad_multiple or (GPU_PAD_MULTIPLE if args.device == "cuda" else 1),
            ),
            callbacks=[timer.callback],
            lam=0.4,
            chunked=not args.no_chunk,
            compiled_head=args.compile and args.device == "cuda",  # as ptalign train does
            reroute=args.reroute,
        )
    elif method == "trl_dpo":
        from trl import DPOConfig, DPOTrainer

        from ptalign.train.dpo import dpo_dataset

        kw["train_sampling_strategy"] = "random"  # TRL's DPO dataset has no input_ids for length grouping
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**kw, max_length=tcfg.max_length, beta=0.1),
            train_dataset=dpo_dataset(records),
            processing_class=tok,
            peft_config=lora,
            callbacks=[timer.callback],
        )
    elif method == "trl_sft":
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        rows = [
            {
                "prompt": [{"role": "user", "content": r["instruction"]}],
                "completion": [{"role": "assistant", "content": r[side]}],
            }
            for r in records
            for side in ("pos", "tox")
        ]
        kw["per_device_train_batch_size"] = 2 * args.batch  # the same triplets per step: two sequences each
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**kw, max_length=tcfg.max_length, packing=False),
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            peft_config=lora,
            callbacks=[timer.callback],
        )
    else:
        raise SystemExit(f"unknown method {method}")
    flops = FlopCount()
    if not args.compile:
        trainer.add_callback(flops.callback)
    if args.profile_out:  # which kernels the steps spend their time in (timings then carry profiler overhead)
        from torch.profiler import ProfilerActivity, profile, schedule
        from transformers import TrainerCallback

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        # the timed steps only: warm-up (and torch.compile's tracing in it) would fill the table
        with profile(
            activities=acts, schedule=schedule(wait=args.warmup, warmup=0, active=args.steps)
        ) as prof:

            class _Step(TrainerCallback):
                def on_step_end(self, *a: Any, **k: Any) -> None:
                    prof.step()

            trainer.add_callback(_Step())
            trainer.train()
        key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        Path(args.profile_out).write_text(prof.key_averages().table(sort_by=key, row_limit=25) + "\n")
        if args.trace_out:  # the timeline, for where the device sits idle between kernels
            prof.export_chrome_trace(args.trace_out)
    else:
        trainer.train()
    timed = timer.times[args.warmup :]
    med = statistics.median(timed)
    tps = args.batch * tokens_per_triplet / med
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu_med = statistics.median(timer.cpu_times[args.warmup :])
    res = {
        "method": method,
        "tokens_per_s": round(tps, 1),
        "median_step_s": round(med, 4),
        "tokens_per_cpu_s": round(args.batch * tokens_per_triplet / cpu_med, 1),
        "median_step_cpu_s": round(cpu_med, 3),
        "steps_timed": len(timed),
        "tokens_per_triplet": round(tokens_per_triplet, 1),
        "peak_mem_bytes": int(peak),
        "params": n_params,
        "threads": torch.get_num_threads(),
    }
    if flops.flops:
        res["flops_per_token_counted"] = round(flops.flops / (args.batch * tokens_per_triplet))
    if args.device in PEAK_FLOPS:
        res["mfu_6n"] = round(6 * n_params * tps / PEAK_FLOPS[args.device], 4)
        if flops.flops:
            res["mfu_counted"] = round(flops.flops / med / PEAK_FLOPS[args.device], 4)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded", help="model spec (ignored with --shape)")
    ap.add_argument(
        "--shape", choices=sorted(SHAPES), help="random-init model of this shape instead of --model"
    )
    ap.add_argument("--tokenizer", help="tokenizer dir for --shape (default: the embedded model's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast (GPU: bf16 weights; CPU: fp32 weights, needs AVX512-BF16/AMX)",
    )
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile: ptalign per decoder layer, TRL the whole model"
    )
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--batch", type=int, default=4, help="triplets per optimizer step")
    ap.add_argument("--steps", type=int, default=4, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--resp-len", type=int, default=96)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--reroute", type=float, default=0.0, help="ptalign: train.reroute's weight (0 = off)")
    ap.add_argument("--no-packing", action="store_true", help="ptalign: two rows per triplet (ablation)")
    ap.add_argument("--no-chunk", action="store_true", help="ptalign: full logits (ablation)")
    ap.add_argument(
        "--liger",
        action="store_true",
        help="Liger's kernels through use_liger_kernel, for every method (CUDA)",
    )
    ap.add_argument(
        "--peft-casts",
        action="store_true",
        help="ptalign: keep peft's fp32 casts of LoRA inputs under bf16 (ablation)",
    )
    ap.add_argument(
        "--no-bucket", action="store_true", help="random batches instead of length buckets (ptalign and SFT)"
    )
    ap.add_argument("--profile-out", help="write torch.profiler's top kernels here (one method per call)")
    ap.add_argument(
        "--pad-multiple",
        type=int,
        default=0,
        help="ptalign's rows padded to this (default: as ptalign train)",
    )
    ap.add_argument("--trace-out", help="with --profile-out: also its Chrome trace (JSON) here")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method in this process
    ap.add_argument("--workdir", default="/tmp/ptalign-bench-train")
    ap.add_argument("--json-out", help="also write the JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.method:
        print("RESULT " + json.dumps(run_one(args.method, args)), flush=True)
        return 0
    results: dict[str, dict[str, Any]] = {}
    passthrough, skip = [], False
    for a in argv if argv is not None else sys.argv[1:]:
        if skip or a.startswith("--json-out"):
            skip = a == "--json-out"  # its value follows
            continue
        passthrough.append(a)
    for m in args.methods.split(","):
        proc = subprocess.run(
            [sys.executable, __file__, *passthrough, "--method", m], capture_output=True, text=True
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{m} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            results[m] = {
                "error": proc.stderr.strip().splitlines()[-1]
                if proc.stderr.strip()
                else f"exit {proc.returncode}"
            }
            continue
        results[m] = json.loads(line[len("RESULT ") :])
        print(
            f"{m}: {results[m]['tokens_per_s']} tokens/s, peak {results[m]['peak_mem_bytes'] / 2**30:.2f} GiB",
            file=sys.stderr,
        )

    def tps(m: str) -> float | None:
        return results.get(m, {}).get("tokens_per_s")

    def cpu(m: str) -> float | None:
        return results.get(m, {}).get("tokens_per_cpu_s")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    mem = {m: results.get(m, {}).get("peak_mem_bytes") for m in METHODS}
    out = {
        "device": args.device,
        "model": args.shape or args.model,
        "batch_triplets": args.batch,
        "ptalign_tokens_per_s": tps("ptalign"),
        "trl_dpo_tokens_per_s": tps("trl_dpo"),
        "trl_sft_tokens_per_s": tps("trl_sft"),
        "ratio_vs_dpo": ratio(tps("ptalign"), tps("trl_dpo")),
        "ratio_vs_sft": ratio(tps("ptalign"), tps("trl_sft")),
        "peak_mem_ratio_vs_sft": ratio(mem["ptalign"], mem["trl_sft"]),
        # the same ratios from process CPU time per step: what a shared CPU's wall clock hides
        "cpu_ratio_vs_dpo": ratio(cpu("ptalign"), cpu("trl_dpo")),
        "cpu_ratio_vs_sft": ratio(cpu("ptalign"), cpu("trl_sft")),
        "peak_mem_bytes": mem,
        "methods": results,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
