"""How much would averaging several trained models gain? Reads every radiograph with each.

An average of independent runs only helps where their errors differ. This script reads
all images (training and validation) with each model, one unshifted view each, and
reports each model's MAE, the MAE of their mean reading, and how strongly the models'
validation errors are correlated; the readings go to a CSV (id, split, mean, one column
per model) for further study, e.g. as distillation targets.

    python ensemble.py --data ../../../shared/data/rsna-100px \
        --models runs/a/last.pt runs/b/last.pt ../boneage-lite0.onnx --out runs/ensemble.csv

A `.pt` is a train.py checkpoint (its EMA weights as trained) or a sweep_eval.py
--save-weights file (batch-norm statistics re-estimated, as export.py ships them); an
`.onnx` is an exported model, preprocessed as its metadata says. Both are read with ONNX
Runtime, about 5x faster than PyTorch on a small CPU (28 s per model for the
11,611 images on 2 cores).
"""
import argparse
import csv
import os
import tempfile
import time

import numpy as np
import onnx
import torch

import export
import ood
import train

HERE = os.path.dirname(os.path.abspath(__file__))


def pt_to_onnx(path, folder, threads):
    """Exports the EMA weights of a checkpoint with a free batch dimension (ONNX Runtime
    reads ~5x faster than PyTorch on a small CPU); returns the session and pixel stats."""
    ck = torch.load(path, weights_only=False, map_location="cpu")
    st = ck["stats"]
    net = train.model_from_stats(st)
    net.load_state_dict({k: v.float() if v.dtype.is_floating_point else v for k, v in ck["ema"].items()})
    net.eval()
    out = os.path.join(folder, "m.onnx")
    export.to_onnx(net, st["input_size"], out, free_batch=True)
    return ood.session(out, threads), st["pix_mean"], st["pix_std"]


def exported_onnx(path, threads):
    """An exported model and the preprocessing its metadata names."""
    md = ood.meta(onnx.load(path, load_external_data=False))
    return ood.session(path, threads), float(md["preprocess.mean"]), float(md["preprocess.std"])


def read_all(sess, images_u8, male, pix_mean, pix_std, batch=128):
    x_all = ((images_u8.astype(np.float32) / 255.0 - pix_mean) / pix_std)[:, None]
    m_all = male.astype(np.float32)[:, None]
    # The shipped graph has a fixed batch of one; a checkpoint exported here has a free one.
    step = 1 if sess.get_inputs()[0].shape[0] == 1 else batch
    out = []
    for i in range(0, len(x_all), step):
        res = sess.run(["bone_age_months"], {"image": x_all[i:i + step], "male": m_all[i:i + step]})
        out.append(res[0].reshape(-1))
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default=os.path.join(HERE, "split.csv"))
    ap.add_argument("--models", nargs="+", required=True, help="run checkpoints (last.pt) or exported .onnx files")
    ap.add_argument("--out", required=True, help="CSV: id, split, mean, one column per model")
    ap.add_argument("--cache", default=os.path.join(HERE, "runs"), help="folder of the dataset cache")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ids, images, male, age, is_val = train.load_dataset(args.data, args.split, args.cache)
    cols = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            t = time.time()
            if path.endswith(".onnx"):
                sess, pm, ps = exported_onnx(path, args.threads)
            else:
                sess, pm, ps = pt_to_onnx(path, tmp, args.threads)
            name = os.path.basename(os.path.dirname(path)) if path.endswith("last.pt") else \
                os.path.splitext(os.path.basename(path))[0]
            if name in cols:
                raise SystemExit(f"two models are named {name}: give each its own run folder or file name")
            cols[name] = read_all(sess, images, male, pm, ps)
            print(f"{name}: validation MAE {np.abs(cols[name][is_val] - age[is_val]).mean():.3f}, "
                  f"training MAE {np.abs(cols[name][~is_val] - age[~is_val]).mean():.3f} "
                  f"({time.time() - t:.0f} s)", flush=True)
    target = np.mean(list(cols.values()), axis=0)
    print(f"mean of {len(cols)}: validation MAE {np.abs(target[is_val] - age[is_val]).mean():.3f}, "
          f"training MAE {np.abs(target[~is_val] - age[~is_val]).mean():.3f}", flush=True)
    if len(cols) > 1:
        errors = np.array([cols[c][is_val] - age[is_val] for c in cols])
        corr = np.corrcoef(errors)[np.triu_indices(len(cols), 1)]
        print(f"validation error correlation between models: {corr.min():.2f}-{corr.max():.2f} "
              f"(mean {corr.mean():.2f})", flush=True)
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "split", "mean"] + list(cols))
        for i in range(len(ids)):
            w.writerow([int(ids[i]), "val" if is_val[i] else "train", f"{target[i]:.4f}"]
                       + [f"{cols[c][i]:.4f}" for c in cols])


if __name__ == "__main__":
    main()
