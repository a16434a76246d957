"""Measures test-time augmentation (TTA) for an exported model on the validation split.

    python tta.py --data ../../../shared/data/rsna-100px --model ../boneage-lite0.onnx

Views are integer pixel shifts of the 100x100 input (edge-replicated), which the Rust side
could reproduce exactly without interpolation. Prints the MAE for each view set so the
choice (and whether TTA earns its cost: N views = N inferences) rests on numbers.
"""
import argparse
import csv
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image


def shift(img, dx, dy):
    p = max(abs(dx), abs(dy))
    if p == 0:
        return img
    padded = np.pad(img, p, mode="edge")
    h, w = img.shape
    return padded[p - dy:p - dy + h, p - dx:p - dx + w]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", default=os.path.join(os.path.dirname(__file__), "split.csv"))
    args = ap.parse_args()
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    mean, std = float(meta["preprocess.mean"]), float(meta["preprocess.std"])
    val = {r["id"] for r in csv.DictReader(open(args.split)) if r["split"] == "val"}
    rows = [r for r in csv.DictReader(open(os.path.join(args.data, "labels.csv"))) if r["id"] in val]
    views = {"1 (none)": [(0, 0)],
             "5 (+-2 px cross)": [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)],
             "9 (+-2 px grid)": [(dx, dy) for dx in (-2, 0, 2) for dy in (-2, 0, 2)],
             "9 (+-3 px grid)": [(dx, dy) for dx in (-3, 0, 3) for dy in (-3, 0, 3)]}
    allv = sorted({v for vs in views.values() for v in vs})
    preds = {v: [] for v in allv}
    ages = []
    for r in rows:
        img = np.asarray(Image.open(os.path.join(args.data, "images", r["id"] + ".png")).convert("L"),
                         dtype=np.float32) / 255.0
        male = np.array([[1.0 if r["male"].strip().lower() == "true" else 0.0]], np.float32)
        ages.append(float(r["boneage"]))
        for v in allv:
            x = ((shift(img, *v) - mean) / std)[None, None].astype(np.float32)
            preds[v].append(float(sess.run(None, {"image": x, "male": male})[0].ravel()[0]))
    ages = np.array(ages)
    out = {}
    for name, vs in views.items():
        p = np.mean([preds[v] for v in vs], axis=0)
        out[name] = round(float(np.abs(p - ages).mean()), 3)
    print(json.dumps({"n": len(ages), "mae_by_views": out}, indent=1))


if __name__ == "__main__":
    main()
