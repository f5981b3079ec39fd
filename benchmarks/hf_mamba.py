"""transformers' MambaForCausalLM / Mamba2ForCausalLM with and without scanforge's switch, in one run.

    python benchmarks/hf_mamba.py [--layers 24] [--hidden 768] [--seq 512] [--new-tokens 64] [--quick]
    python benchmarks/hf_mamba.py --mamba2 [--layers 24] [--hidden 768] [--seq 512] [--new-tokens 64] [--quick]

Mamba-1: random weights at the mamba-130m shape (hidden 768, 24 layers, state 16, vocab 50280). Mamba-2
(``--mamba2``): the mamba2-130m shape (hidden 768, 24 layers, state 128, head_dim 64, one group, chunk 256, vocab
50280). Batch 1: a forward over
``--seq`` tokens (no grad) and ``generate()`` of ``--new-tokens`` greedy tokens after a ``--seq``-token prompt
(prefill + decode steps with the cache). The same model object is timed with the switch off (transformers' own
path: without mamba-ssm, its PyTorch fallback) and on. Writes benchmarks/results/hf_mamba.json or hf_mamba2.json
(``-cuda`` on a GPU).
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import median_seconds, write_results
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM
from transformers.utils import logging as hf_logging

from scanforge.integrations import transformers as hf
from scanforge.testing.accuracy import rel_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mamba2", action="store_true", help="Mamba2ForCausalLM and apply_scanforge_to_mamba2")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--new-tokens", type=int)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()  # the fallback's "install mamba-ssm" warnings
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    if args.mamba2:
        args.layers, args.hidden, args.new_tokens = args.layers or 24, args.hidden or 768, args.new_tokens or 64
        state, name = 128, "hf_mamba2"
        config = Mamba2Config(hidden_size=args.hidden, num_hidden_layers=args.layers, state_size=state, expand=2,
                              head_dim=64, num_heads=2 * args.hidden // 64, n_groups=1, chunk_size=256,
                              vocab_size=50280)
        model, apply, revert = Mamba2ForCausalLM(config), hf.apply_scanforge_to_mamba2, hf.revert_scanforge_to_mamba2
    else:
        args.layers, args.hidden, args.new_tokens = args.layers or 24, args.hidden or 768, args.new_tokens or 64
        state, name = 16, "hf_mamba"
        config = MambaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, state_size=state, expand=2)
        model, apply, revert = MambaForCausalLM(config), hf.apply_scanforge_to_mamba, hf.revert_scanforge_to_mamba
    model = model.to(device).eval()
    ids = torch.randint(2, config.vocab_size, (1, args.seq), device=device)
    gen_kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                      attention_mask=torch.ones_like(ids), pad_token_id=0)
    fwd_reps = dict(warmup=1, repeats=2) if args.quick else dict(warmup=1, repeats=5)
    gen_reps = dict(warmup=1, repeats=1) if args.quick else dict(warmup=1, repeats=3)

    results, outputs = {}, {}
    for impl in ("transformers", "scanforge"):
        if impl == "scanforge":
            t0 = time.perf_counter()
            apply(model)
            with torch.no_grad():
                model(ids[:, :8])  # first call: Numba compile or disk-cache load, reported apart
            first_call = time.perf_counter() - t0
        with torch.no_grad():
            outputs[impl] = (model(ids).logits, model.generate(ids, **gen_kwargs))
            fwd = median_seconds(lambda: model(ids), **fwd_reps)
            gen = median_seconds(lambda: model.generate(ids, **gen_kwargs), **gen_reps)
        results[impl] = (fwd, gen)
    revert(model)

    rows = []
    for impl, (fwd, gen) in results.items():
        base_fwd, base_gen = results["transformers"]
        rows.append({"impl": impl, "forward_s": fwd, "generate_s": gen, "forward_tokens_per_s": args.seq / fwd,
                     "forward_speedup": base_fwd / fwd, "generate_speedup": base_gen / gen})
    logits_err = rel_error(outputs["scanforge"][0], outputs["transformers"][0])
    same_tokens = torch.equal(outputs["scanforge"][1], outputs["transformers"][1])
    notes = (f"{name}: {device.type}, fp32, batch 1, hidden {args.hidden}, {args.layers} layers, state {state}, vocab "
             f"{config.vocab_size}, forward over {args.seq} tokens, generate {args.new_tokens} greedy tokens after a "
             f"{args.seq}-token prompt; random weights. transformers {__import__('transformers').__version__} "
             f"without mamba-ssm/causal-conv1d (its PyTorch fallback). logits rel err scanforge vs transformers "
             f"{logits_err:.2e}; generated tokens identical: {same_tokens}; first scanforge call (compile or cache "
             f"load) {first_call:.1f} s, not in the timings.")
    for row in rows:
        print(f"{row['impl']:>12}: forward {row['forward_s']:.3f} s ({row['forward_speedup']:.2f}x), "
              f"generate {row['generate_s']:.3f} s ({row['generate_speedup']:.2f}x)")
    print(notes)
    print(write_results(name if device.type == "cpu" else f"{name}-{device.type}", rows, notes))


if __name__ == "__main__":
    main()
