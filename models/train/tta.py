"""Measures test-time augmentation (TTA) for an exported model on the validation split.

    python tta.py --data ../../../shared/data/rsna-100px --model ../boneage-lite0.onnx

Views are integer pixel shifts of the 100x100 input (edge-replicated), which the Rust side
could reproduce exactly without interpolation. Prints the MAE for each view set so the
choice (and whether TTA earns its cost: N views = N inferences) rests on numbers.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train  # noqa: E402
from export import shift  # noqa: E402  (the shift the shipped reading uses)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", default=os.path.join(HERE, "split.csv"))
    args = ap.parse_args()
    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    mean, std = float(meta["preprocess.mean"]), float(meta["preprocess.std"])
    # The training pipeline's loader: same split, same decoding.
    _, images, male, age, is_val = train.load_dataset(args.data, args.split,
                                                      os.path.join(HERE, "runs"))
    views = {"1 (none)": [(0, 0)],
             "5 (+-2 px cross)": [(0, 0), (2, 0), (-2, 0), (0, 2), (0, -2)],
             "9 (+-2 px grid)": [(dx, dy) for dx in (-2, 0, 2) for dy in (-2, 0, 2)],
             "9 (+-3 px grid)": [(dx, dy) for dx in (-3, 0, 3) for dy in (-3, 0, 3)]}
    allv = sorted({v for vs in views.values() for v in vs})
    preds = {v: [] for v in allv}
    for img_u8, m in zip(images[is_val], male[is_val]):
        img = img_u8.astype(np.float32) / 255.0
        m_in = np.array([[m]], np.float32)
        for v in allv:
            x = ((shift(img, *v) - mean) / std)[None, None].astype(np.float32)
            preds[v].append(float(sess.run(None, {"image": x, "male": m_in})[0].ravel()[0]))
    ages = age[is_val]
    out = {}
    for name, vs in views.items():
        p = np.mean([preds[v] for v in vs], axis=0)
        out[name] = round(float(np.abs(p - ages).mean()), 3)
    print(json.dumps({"n": len(ages), "mae_by_views": out}, indent=1))


if __name__ == "__main__":
    main()
