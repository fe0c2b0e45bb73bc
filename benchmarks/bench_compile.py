"""Does torch.compile (inductor, CPU) buy epochs? A bf16 training step of the recipe, eager against compiled.

Both models are detkit's recipe model (configs/bccd_recipe.yaml: ResNet-18 FPN-128, bf16 autocast,
channels_last), built with the same seed, trained on the same pre-loaded multi-scale BCCD batches
(data loading excluded). The compiled one has ``--target`` compiled in place with ``nn.Module.compile``
(its state_dict keys unchanged):

  backbone   the ResNet + FPN (the dense part; fixed-structure convolutions, BatchNorm, ReLU)
  model      the whole detector (graph breaks where NMS, sampling and matching leave the graph)

Printed: the warm-up cost (compilation included) and the number of graphs compiled; the steady-state
images/s of both in alternating blocks and the median of the per-block ratios; and parity: the first
step's losses of both models on the same batch (same weights, same sampler seeds) and the largest
difference between their backbone outputs.

    python -m benchmarks.bench_compile [--config configs/bccd_recipe.yaml] [--target backbone]
                                       [--dynamic] [--blocks 4] [--iters 4] [--warmup 8] [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench_train import alternate, config_from_args, make_train_step, training_batches
from benchmarks.bench_variants import make_variants
from detkit.atomic_io import write_json_atomic
from detkit.modeling.detector import build_detector
from detkit.runtime.cpu import cpu_model, describe_cpu

TARGETS = ("backbone", "model")


def compile_in_place(model: torch.nn.Module, target: str, dynamic) -> None:
    """Compile ``model``'s ``target`` (see TARGETS) with inductor, in place. ``dynamic``: torch.compile's
    (None: specialise on the first shapes, then recompile with the dimensions that changed dynamic)."""
    if target == "backbone":
        model.backbone.compile(dynamic=dynamic)
    elif target == "model":
        model.compile(dynamic=dynamic)
    else:
        raise SystemExit(f"--target {target!r}: choose one of {', '.join(TARGETS)}")


def first_step_parity(eager, compiled, batch, autocast) -> dict:
    """Losses of both models on one batch in training mode, and their backbone outputs' largest gap."""
    images, targets = batch
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    out = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        model.train()
        with autocast():
            losses = model(images, targets)
        out[name] = {k: float(v.detach()) for k, v in losses.items()}
    with torch.no_grad(), autocast():
        batch_tensor, _ = eager.preprocess(images)
        a = eager.backbone(batch_tensor)
        b = compiled.backbone(batch_tensor)
    out["backbone_max_abs_diff"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    out["backbone_max_abs"] = max(float(a[k].float().abs().max()) for k in a)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/bccd_recipe.yaml")
    p.add_argument("--target", default="backbone", choices=TARGETS)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--iters", type=int, default=4, help="training steps per block")
    p.add_argument("--warmup", type=int, default=8, help="steps before timing (compilation happens here)")
    p.add_argument("--dynamic", action="store_true",
                   help="compile shape-generic graphs from the start (multi-scale batches change H and W)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    train_set, _, batches = training_batches(cfg, args.blocks * args.iters + args.warmup)
    num_classes = len(train_set.classes)

    def build(base: str):
        torch.manual_seed(cfg.train.seed)
        return build_detector(cfg, num_classes, log=lambda s: None)

    variants = make_variants(["detkit_fast"], build)
    eager = variants["detkit_fast"]
    compiled_variant = make_variants(["detkit_fast"], build)["detkit_fast"]
    compiled_variant.name = f"compiled_{args.target}"
    compile_in_place(compiled_variant.train_model, args.target, True if args.dynamic else None)

    parity = first_step_parity(eager.train_model, compiled_variant.train_model, batches[0], eager.autocast)
    steps = {"eager": make_train_step(eager, batches, lr=1e-3),
             compiled_variant.name: make_train_step(compiled_variant, batches, lr=1e-3)}
    warmup_s = {}
    for name, step in steps.items():  # the compiled model compiles (and recompiles per new shape) here
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        warmup_s[name] = time.perf_counter() - t0
    counters = torch._dynamo.utils.counters
    graphs_before = int(counters["stats"]["unique_graphs"])
    blocks = alternate(steps, args.blocks, args.iters)
    recompiled_while_timed = int(counters["stats"]["unique_graphs"]) - graphs_before
    name = compiled_variant.name
    ratios = [te / tc for te, tc in zip(blocks["eager"], blocks[name])]
    result = {
        "config": args.config, "target": args.target, "dynamic": args.dynamic, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "cpu": describe_cpu(), "warmup_steps": args.warmup, "warmup_s": warmup_s,
        "graphs_compiled": int(counters["stats"]["unique_graphs"]),
        "graphs_compiled_while_timed": recompiled_while_timed,
        "train_img_per_s": {n: 1.0 / statistics.median(v) for n, v in blocks.items()},
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "parity": parity, "blocks_s_per_img": blocks,
    }
    what = args.target + (", dynamic" if args.dynamic else "")
    print(f"torch.compile ({what}), {args.config}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.blocks} blocks x {args.iters} steps; cpu: {result['cpu']}")
    print(f"warm-up ({args.warmup} steps): eager {warmup_s['eager']:.1f} s, compiled {warmup_s[name]:.1f} s; "
          f"graphs compiled {result['graphs_compiled']} ({recompiled_while_timed} while timed)")
    for n, v in result["train_img_per_s"].items():
        print(f"{n:20s} {v:8.3f} img/s")
    print(f"training speed {name} / eager: {result['ratio_median']:.2f}x "
          f"(blocks {result['ratio_min']:.2f}..{result['ratio_max']:.2f}) [{cpu_model()}]")
    gap = parity["backbone_max_abs_diff"] / max(parity["backbone_max_abs"], 1e-12)
    print(f"parity: backbone outputs differ by at most {parity['backbone_max_abs_diff']:.4g} "
          f"({gap:.2%} of their largest magnitude)")
    for key in parity["eager"]:
        print(f"  {key:20s} eager {parity['eager'][key]:.5f}  compiled {parity['compiled'][key]:.5f}")
    if args.json:
        write_json_atomic(result, args.json, indent=2)
    return result


if __name__ == "__main__":
    main()
