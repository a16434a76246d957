"""Measures how much an exported model's reading moves when the validation images pass
through the degradations of a real acquisition chain (JPEG, resampling, blur, noise).

    python robustness.py --data ../../../shared/data/rsna-100px --model ../boneage-lite0.onnx

One view per image (ONNX Runtime), or with `--tta` the shipped reading: the mean over the
test-time views (export.TTA_SHIFTS). For each condition: MAE against the labels, and the
shift of each reading from the clean image's reading (mean, 95th percentile, maximum).
With `--tta` and a model that carries `uncertainty.view_spread_warn_months`, also how
often the appliance's "views disagree" warning fires and how many large shifts it catches.
With a model that carries `uncertainty.interval95_bands_months`, also how often the 95%
interval the appliance would show holds the label: the age-band table alone, and (with
`--tta`) widened for flagged readings by `uncertainty.interval95_flagged_months`, as
`Contract::interval95_months` does.
The clean MAE is the model card's figure for the same number of views. The last three conditions are not among
the degradations `train.py --degrade/--consistency` trains with, so they show whether
robustness carries over to what training did not see.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train  # noqa: E402
from train import jpeg  # noqa: E402  (the round trip train.degrade uses)
# The views and the interval of the shipped reading.
from export import TTA_SHIFTS, half_widths, shift, shipped_half_widths  # noqa: E402


# A reading that moves more than this when the image is degraded counts as a large shift.
BIG_SHIFT_MONTHS = 12


def conditions(size):
    big = size * 4
    return [
        ("JPEG q95 at 100 px", lambda im: jpeg(im, 95)),
        ("JPEG q85 at 100 px", lambda im: jpeg(im, 85)),
        ("JPEG q75 at 100 px", lambda im: jpeg(im, 75)),
        ("4x bicubic up, JPEG q80, bilinear down",
         lambda im: jpeg(im.resize((big, big), Image.BICUBIC), 80).resize((size, size), Image.BILINEAR)),
        ("4x bicubic up, box down",
         lambda im: im.resize((big, big), Image.BICUBIC).resize((size, size), Image.BOX)),
        ("down to 80% and back up, bilinear (not trained)",
         lambda im: im.resize((size * 4 // 5,) * 2, Image.BILINEAR).resize((size, size), Image.BILINEAR)),
        ("Gaussian blur radius 0.6 (not trained)", lambda im: im.filter(ImageFilter.GaussianBlur(0.6))),
        ("Gaussian noise sigma 3 grey levels, fixed seed", None),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", default=os.path.join(HERE, "split.csv"))
    ap.add_argument("--tta", action="store_true", help="mean over the test-time views (5x slower)")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    mean, std = float(meta["preprocess.mean"]), float(meta["preprocess.std"])
    _, images, male, age, is_val = train.load_dataset(args.data, args.split, os.path.join(HERE, "runs"))
    val = np.flatnonzero(is_val)

    views = TTA_SHIFTS if args.tta else [(0, 0)]

    def read(imgs):
        out = []
        for k, i in enumerate(val):
            readings = []
            for dx, dy in views:
                x = ((shift(imgs[k], dx, dy).astype(np.float32) / 255 - mean) / std)[None, None]
                readings.append(float(sess.run(None, {"image": x, "male": male[i].reshape(1, 1)})[0].reshape(-1)[0]))
            out.append((np.mean(readings), np.std(readings)))
        return np.array(out).T

    # The appliance's "views disagree" warning (docs/model-contract.md), when it can apply.
    warn = float(meta["uncertainty.view_spread_warn_months"]) \
        if args.tta and "uncertainty.view_spread_warn_months" in meta else None

    # The appliance's 95% interval (docs/model-contract.md), when the model has one.
    bands = [tuple(float(x) for x in band.replace(":", "-").split("-"))
             for band in meta["uncertainty.interval95_bands_months"].split(";")] \
        if "uncertainty.interval95_bands_months" in meta else None
    flagged_hw = float(meta["uncertainty.interval95_flagged_months"]) \
        if warn is not None and "uncertainty.interval95_flagged_months" in meta else None

    def coverage(pred, sd):
        """Share of labels inside the table's interval, and inside the shipped one."""
        hw = half_widths(bands, pred)
        out = dict(interval95_coverage_bands=round(float((np.abs(pred - age[val]) <= hw).mean()), 3))
        if flagged_hw is not None:
            hw = shipped_half_widths(bands, pred, sd, warn, flagged_hw)
            out["interval95_coverage"] = round(float((np.abs(pred - age[val]) <= hw).mean()), 3)
        return out

    def flag_text(r):
        text = ""
        if "interval95_coverage_bands" in r:
            text += f"  interval holds {100 * r['interval95_coverage_bands']:.1f}%"
            if "interval95_coverage" in r:
                text += f" (widened: {100 * r['interval95_coverage']:.1f}%)"
        if warn is None:
            return text
        text += f"  flagged {100 * r['flagged_share']:.1f}%"
        if "big_shifts_flagged" in r:
            text += f" (of the {r['big_shifts']} shifts > {BIG_SHIFT_MONTHS} mo: {100 * r['big_shifts_flagged']:.0f}%)"
        return text

    clean, spread = read(images[val])
    result = {"model": os.path.basename(args.model), "version": meta.get("version", "?"),
              "views": len(views), "clean_mae": round(float(np.abs(clean - age[val]).mean()), 2)}
    clean_r = coverage(clean, spread) if bands else {}
    if warn is not None:
        result["warn_from_months"] = warn
        result["clean_flagged_share"] = clean_r["flagged_share"] = round(float((spread >= warn).mean()), 3)
    result["clean"] = clean_r
    print(f"{'clean':50s} MAE {result['clean_mae']:.2f}" + flag_text(clean_r), flush=True)
    rng = np.random.default_rng(0)
    shifts = {}
    for name, fn in conditions(images.shape[1]):
        if fn is None:
            noisy = images[val].astype(np.float32) + rng.normal(0, 3, images[val].shape)
            degraded = np.clip(noisy, 0, 255).round().astype(np.uint8)
        else:
            degraded = np.stack([np.asarray(fn(Image.fromarray(images[i])), dtype=np.uint8) for i in val])
        got, got_spread = read(degraded)
        moved = np.abs(got - clean)
        r = dict(mae=round(float(np.abs(got - age[val]).mean()), 2), mean_shift=round(float(moved.mean()), 2),
                 p95_shift=round(float(np.percentile(moved, 95)), 1), max_shift=round(float(moved.max()), 1))
        if bands:
            r.update(coverage(got, got_spread))
        if warn is not None:
            # How often the warning fires on the degraded copy, and how many of the readings
            # that moved a lot it catches.
            flagged, big = got_spread >= warn, moved > BIG_SHIFT_MONTHS
            r["flagged_share"] = round(float(flagged.mean()), 3)
            r["big_shifts"] = int(big.sum())
            if big.any():
                r["big_shifts_flagged"] = round(float(flagged[big].mean()), 3)
        result[name] = r
        shifts[name] = moved
        print(f"{name:50s} MAE {r['mae']:.2f}  shift mean {r['mean_shift']:.2f}  p95 {r['p95_shift']:.1f}  "
              f"max {r['max_shift']:.1f}" + flag_text(r), flush=True)
    if args.tta:
        # Does the disagreement between the views (known at inference, no label needed) mark
        # the readings that are least accurate and least stable?
        wide = spread >= np.percentile(spread, 90)
        err = np.abs(clean - age[val])
        q85 = shifts["JPEG q85 at 100 px"]
        result["view_spread_top10"] = dict(
            threshold_months=round(float(spread[wide].min()), 2), n=int(wide.sum()),
            mae=[round(float(err[wide].mean()), 2), round(float(err[~wide].mean()), 2)],
            jpeg85_mean_shift=[round(float(q85[wide].mean()), 2), round(float(q85[~wide].mean()), 2)])
        r = result["view_spread_top10"]
        print(f"views' SD >= {r['threshold_months']:.2f} months (top 10%, n {r['n']}) vs the rest: "
              f"MAE {r['mae'][0]:.2f} vs {r['mae'][1]:.2f}, JPEG q85 mean shift "
              f"{r['jpeg85_mean_shift'][0]:.2f} vs {r['jpeg85_mean_shift'][1]:.2f}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
