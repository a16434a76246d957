"""Scores finished training runs the way export.py would ship them, to compare recipes.

For each run: validation MAE of the EMA weights as trained (one view), and of the EMA
weights with batch-norm statistics re-estimated on training images (one view and the
shipped 5-view reading), with a 95% bootstrap interval (export.py may instead ship the
live or plain EMA weights when they score better; they rarely do). Optionally saves the
re-estimated weights (float16, with the run's stats) as <folder>/<run name>.pt; copied to
RUN/last.pt, export.py takes them without retraining.

    python sweep_eval.py --data ../../../shared/data/rsna-100px --runs runs/a runs/b --out sweep.json
"""
import argparse
import json
import os

import numpy as np
import torch

import export
import train

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--out", required=True, help="JSON file with one record per run")
    ap.add_argument("--save-weights", default="", help="folder for <run>.pt (EMA + re-estimated BN, float16)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    results = []
    cache = None
    for run in args.runs:
        ck = torch.load(os.path.join(run, "last.pt"), weights_only=False, map_location="cpu")
        stats = ck["stats"]
        if cache is None:
            cache = train.load_dataset(args.data, os.path.join(HERE, "split.csv"), os.path.dirname(run.rstrip("/")) or ".")
        _, images, male, age, is_val = cache
        val = np.flatnonzero(is_val)
        net = train.model_from_stats(stats).to(dev)
        net.load_state_dict(ck["ema"])
        net.eval()
        pm, ps = stats["pix_mean"], stats["pix_std"]
        ema1 = train.predict(net, images[val], male[val], pm, ps, device=dev)
        export.recalibrate_bn(net, images[~is_val], male[~is_val], stats, device=dev)
        views = []
        for dx, dy in export.TTA_SHIFTS:
            shifted = np.stack([export.shift(images[i], dx, dy) for i in val])
            views.append(train.predict(net, shifted, male[val], pm, ps, device=dev))
        bn1, bn5 = views[0], np.mean(views, axis=0)
        err = np.abs(bn5 - age[val])
        rng = np.random.default_rng(0)
        boot = [err[rng.integers(0, len(err), len(err))].mean() for _ in range(2000)]
        rec = dict(run=os.path.basename(run.rstrip("/")), epochs_done=ck["epoch"] + 1,
                   planned=ck.get("epochs"), args=stats["args"],
                   mae_ema_1view=round(float(np.abs(ema1 - age[val]).mean()), 3),
                   mae_bn_1view=round(float(np.abs(bn1 - age[val]).mean()), 3),
                   mae_bn_5view=round(float(err.mean()), 3),
                   ci95=[round(float(np.percentile(boot, 2.5)), 3), round(float(np.percentile(boot, 97.5)), 3)],
                   bias=round(float((bn5 - age[val]).mean()), 3))
        print(json.dumps(rec), flush=True)
        results.append(rec)
        if args.save_weights:
            os.makedirs(args.save_weights, exist_ok=True)
            state = {k: (v.half() if v.dtype.is_floating_point else v).cpu() for k, v in net.state_dict().items()}
            torch.save(dict(ema=state, stats=stats, epoch=ck["epoch"], epochs=ck.get("epochs")),
                       os.path.join(args.save_weights, rec["run"] + ".pt"))
    json.dump(results, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
