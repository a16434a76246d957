"""Measures test-time augmentation (TTA) for an exported model on the validation split.

    python tta.py --data ../../../shared/data/rsna-100px --model ../boneage-lite0.onnx

Views are integer pixel shifts of the 100x100 input (edge-replicated), which the Rust side
could reproduce exactly without interpolation. Prints the MAE for each view set so the
choice (and whether TTA earns its cost: N views = N inferences) rests on numbers.

With `--intensity`, also the shipped 5-view cross repeated on grey-level variants of the
image (gamma 0.85 and 1.15, contrast 0.9x and 1.1x about the image mean, rounded back to
8 bits): 15 and 25 views, with a paired bootstrap interval for the change against the
5 shifts alone.

With `--geometric`, also rotated and scaled views (rotation +-5 and +-10 degrees, scale 0.95
and 1.05 about the centre, bilinear, edges replicated), alone and added to the 5 shifts,
with the same paired interval against the 5 shifts.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train  # noqa: E402
from export import shift  # noqa: E402  (the shift the shipped reading uses)


# Grey-level variants for --intensity, on 0-255 floats.
INTENSITY = {
    "none": lambda a: a,
    "gamma0.85": lambda a: 255 * (a / 255) ** 0.85,
    "gamma1.15": lambda a: 255 * (a / 255) ** 1.15,
    "contrast0.9": lambda a: np.clip(a.mean() + 0.9 * (a - a.mean()), 0, 255),
    "contrast1.1": lambda a: np.clip(a.mean() + 1.1 * (a - a.mean()), 0, 255),
}


def warp(img, rotate_deg, scale):
    """Rotates and scales a [0, 1] image about its centre (bilinear, edges replicated)."""
    if rotate_deg == 0 and scale == 1:
        return img
    pad = 20  # wider than any corner moves at these angles and scales
    a = np.pad(img, pad, mode="edge").astype(np.float32)
    c = a.shape[0] / 2
    t = math.radians(rotate_deg)
    ca, sa = math.cos(t) / scale, math.sin(t) / scale
    # PIL maps each output pixel back to an input pixel: the inverse transform.
    coeffs = (ca, -sa, c - ca * c + sa * c, sa, ca, c - sa * c - ca * c)
    out = Image.fromarray(a, mode="F").transform(a.shape[::-1], Image.AFFINE, coeffs,
                                                 resample=Image.BILINEAR)
    return np.asarray(out)[pad:-pad, pad:-pad]


def paired_ci(diff, rng):
    boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    return [round(float(np.percentile(boots, q)), 3) for q in (2.5, 97.5)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", default=os.path.join(HERE, "split.csv"))
    ap.add_argument("--intensity", action="store_true",
                    help="also grey-level variants of the shipped views (5x slower)")
    ap.add_argument("--geometric", action="store_true",
                    help="also rotated and scaled views")
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
    views = {name: [(dx, dy, "none", 0, 1) for dx, dy in vs] for name, vs in views.items()}
    if args.intensity:
        cross = [(dx, dy) for dx, dy, *_ in views["5 (+-2 px cross)"]]
        for name, tfs in (("15 (cross x gamma 0.85/1/1.15)", ["none", "gamma0.85", "gamma1.15"]),
                          ("15 (cross x contrast 0.9/1/1.1)", ["none", "contrast0.9", "contrast1.1"]),
                          ("25 (cross x all five)", list(INTENSITY))):
            views[name] = [(dx, dy, tf, 0, 1) for tf in tfs for dx, dy in cross]
    if args.geometric:
        cross = views["5 (+-2 px cross)"]
        rot = lambda d: [(0, 0, "none", -d, 1), (0, 0, "none", d, 1)]  # noqa: E731
        scale = [(0, 0, "none", 0, 0.95), (0, 0, "none", 0, 1.05)]
        views["3 (rotate 0/+-5)"] = [cross[0]] + rot(5)
        views["3 (rotate 0/+-10)"] = [cross[0]] + rot(10)
        views["3 (scale 1/0.95/1.05)"] = [cross[0]] + scale
        views["7 (cross + rotate +-5)"] = cross + rot(5)
        views["7 (cross + rotate +-10)"] = cross + rot(10)
        views["9 (cross + rotate +-10 + scale)"] = cross + rot(10) + scale
    allv = sorted({v for vs in views.values() for v in vs})
    preds = {v: [] for v in allv}
    for img_u8, m in zip(images[is_val], male[is_val]):
        m_in = np.array([[m]], np.float32)
        for dx, dy, tf, rot, sc in allv:
            img = np.round(INTENSITY[tf](img_u8.astype(np.float32))) / 255.0
            img = warp(img, rot, sc)
            x = ((shift(img, dx, dy) - mean) / std)[None, None].astype(np.float32)
            out = sess.run(None, {"image": x, "male": m_in})[0]
            preds[(dx, dy, tf, rot, sc)].append(float(out.ravel()[0]))
    ages = age[is_val]
    out, err = {}, {}
    for name, vs in views.items():
        err[name] = np.abs(np.mean([preds[v] for v in vs], axis=0) - ages)
        out[name] = round(float(err[name].mean()), 3)
    result = {"n": len(ages), "mae_by_views": out}
    # Paired bootstrap: is a change against the shipped views more than resampling noise?
    rng = np.random.default_rng(0)
    if args.intensity:
        diff = err["25 (cross x all five)"] - err["5 (+-2 px cross)"]
        result["25_minus_5_ci95"] = paired_ci(diff, rng)
    if args.geometric:
        result["minus_5_ci95"] = {
            name: paired_ci(err[name] - err["5 (+-2 px cross)"], rng)
            for name in views if any(v[3] or v[4] != 1 for v in views[name])}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
