"""Times one training step of train.py's model, to see what a machine needs for a full run.

Random data, the shipped shapes (batch 64, 100 px input, backbone at 144 px), AdamW, the
same memory settings as train.py; prints seconds per step after two warm-up steps (the
first compiled step takes about a minute). A 27-epoch run is 27 x 163 steps, plus ~25%
for augmentation and validation (measured: 189 s per epoch against 163 x 0.93 s).

    python step_time.py                      # as train.py trains: paddings folded, compiled
    python step_time.py --no-compile --no-fold
"""
import argparse
import time

import torch
import torch.nn.functional as F

import train


def main():
    train.use_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--no-fold", dest="fold", action="store_false", help="keep the separate padding layers")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--net-size", type=int, default=144)
    ap.add_argument("--backbone", default="lite0", choices=sorted(train.BACKBONES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = train.build_model(127.0, 41.0, pretrained=False, net_size=args.net_size,
                              backbone=args.backbone).to(memory_format=torch.channels_last)
    if args.fold:
        train.fold_same_padding(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = torch.compile(model, dynamic=False) if args.compile else model
    size = train.INPUT_SIZE
    x = torch.randn(args.batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    male = torch.ones(args.batch, 1)
    y = torch.randn(args.batch, 1)

    def step():
        loss = F.l1_loss(forward(x, male), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = time.time()
    for _ in range(2):
        step()
    warm = time.time() - t
    t = time.time()
    for _ in range(args.steps):
        step()
    per = (time.time() - t) / args.steps
    print(f"compile {'on' if args.compile else 'off'}, paddings {'folded' if args.fold else 'separate'}: "
          f"{args.backbone}: {per:.3f} s per step of {args.batch} at {args.net_size} px, {args.threads} threads "
          f"(warm-up {warm:.0f} s)")


if __name__ == "__main__":
    main()
