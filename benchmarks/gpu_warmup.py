"""Why the first epoch on a GPU is slow: the cost of cuDNN's first call per convolution shape.

On the H200 (torch 2.11, cuDNN 9) geotune's first epoch of tf_efficientnet_lite0 took 73 s and
the next ones 1 s (benchmarks/gpu.sh, benchmarks/results/2026-11-29-gpu-h200.md). cuDNN >= 9.10
compiles an execution plan at
runtime the first time it meets a depthwise convolution shape (NVIDIA/cudnn-frontend#1066), and
`cudnn.benchmark` compiles every candidate. This times, in a fresh process per setting, the first
and the steady-state training step, a new batch size (a last partial batch) and the first
evaluation batch, so the default can be chosen by measurement.

    python benchmarks/gpu_warmup.py            # every setting, each in its own process
    python benchmarks/gpu_warmup.py --setting benchmark-on   # one setting, this process
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import timm
import torch

SETTINGS = {
    "benchmark-on": {"benchmark": True, "cudnn": True},
    "benchmark-off": {"benchmark": False, "cudnn": True},
    "cudnn-off": {"benchmark": False, "cudnn": False},
}


def timed(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def one_setting(name: str, model_name: str, size: int) -> dict:
    torch.backends.cudnn.benchmark = SETTINGS[name]["benchmark"]
    torch.backends.cudnn.enabled = SETTINGS[name]["cudnn"]
    device = torch.device("cuda")
    t_init = timed(lambda: torch.zeros(1, device=device))
    model = timm.create_model(model_name, num_classes=30).to(
        device, memory_format=torch.channels_last
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def batch(n):
        x = torch.randn(n, 3, size, size, device=device).contiguous(
            memory_format=torch.channels_last
        )
        return x, torch.randint(0, 30, (n,), device=device)

    def train_step(n):
        x, y = batch(n)
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def eval_step(n):
        x, _ = batch(n)
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)

    out = {"setting": name, "cudnn_version": torch.backends.cudnn.version(), "cuda_init_s": t_init}
    out["first_train_step_b32_s"] = timed(lambda: train_step(32))
    out["second_train_step_b32_s"] = timed(lambda: train_step(32))
    out["first_train_step_b6_s"] = timed(lambda: train_step(6))  # a last, partial batch
    out["first_eval_b64_s"] = timed(lambda: eval_step(64))
    steps = 30
    t = timed(lambda: [train_step(32) for _ in range(steps)])
    out["steady_train_images_per_s"] = 32 * steps / t
    t = timed(lambda: [eval_step(64) for _ in range(steps)])
    out["steady_eval_images_per_s"] = 64 * steps / t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=list(SETTINGS))
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--timeout", type=int, default=150, help="seconds per setting")
    args = ap.parse_args()
    if args.setting:
        print(json.dumps(one_setting(args.setting, args.model, args.size)))
        return
    for name in SETTINGS:
        cmd = [
            sys.executable,
            __file__,
            "--setting",
            name,
            "--model",
            args.model,
            "--size",
            str(args.size),
        ]
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            line = r.stdout.strip().splitlines()[-1] if r.returncode == 0 else r.stderr[-500:]
        except subprocess.TimeoutExpired:
            line = f"timed out after {args.timeout}s"
        print(f"{name} ({time.perf_counter() - t0:.0f}s wall): {line}", flush=True)


if __name__ == "__main__":
    main()
