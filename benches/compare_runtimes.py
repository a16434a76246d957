"""Per-image latency of the shipped ONNX model in tract (`boneage bench`), ONNX Runtime and
PyTorch (same weights from the training run), one thread, one view, in one run on the same
images. Run on an otherwise idle machine:

    python benches/compare_runtimes.py --model models/boneage-lite0.onnx --images samples \
        --boneage target/release/boneage [--checkpoint models/train/runs/lite0-128-ft/last.pt]

Prints one JSON object per runtime (p50/p95 inference ms, load ms, peak RSS), then the
ratios of tract to ONNX Runtime.
"""
import argparse
import glob
import json
import os
import resource
import sys
import time

import numpy as np
from PIL import Image


def timings(fn, runs, warmup=10):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
    t.sort()
    return dict(p50_ms=round(t[len(t) // 2], 3), p95_ms=round(t[int(len(t) * 0.95)], 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--boneage", help="boneage binary: also time tract with `boneage bench`")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()

    import subprocess

    import onnx
    import onnxruntime as ort
    results = {}
    if args.boneage:
        out = subprocess.run([args.boneage, "--model", args.model, "--threads", "1", "--no-tta",
                              "bench", "--json", "--images", args.images, "--runs", str(args.runs)],
                             check=True, capture_output=True, text=True).stdout
        b = json.loads(out.strip().splitlines()[-1])
        results["tract"] = dict(runtime="tract (boneage bench)", threads=1,
                                p50_ms=round(b["inference_ms_p50"], 3),
                                p95_ms=round(b["inference_ms_p95"], 3),
                                load_ms=round(b["load_ms"], 1), peak_rss_mib=b["peak_rss_mib"])
        print(json.dumps(results["tract"]), flush=True)
    meta = {p.key: p.value for p in onnx.load(args.model).metadata_props}
    size, mean, std = int(meta["preprocess.width"]), float(meta["preprocess.mean"]), float(meta["preprocess.std"])
    files = sorted(glob.glob(os.path.join(args.images, "*.png")))
    x = np.stack([np.asarray(Image.open(f).convert("L").resize((size, size)), np.float32) / 255.0
                  for f in files])
    x = ((x - mean) / std)[:, None].astype(np.float32)
    male = np.array([[1.0]], np.float32)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    t0 = time.perf_counter()
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    i = [0]

    def run_ort():
        i[0] += 1
        sess.run(None, {"image": x[i[0] % len(x)][None], "male": male})

    r = timings(run_ort, args.runs)
    r.update(runtime="onnxruntime " + ort.__version__, threads=1, load_ms=round(load_ms, 1),
             peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    results["ort"] = r
    print(json.dumps(r), flush=True)
    if "tract" in results:
        t, o = results["tract"], results["ort"]
        print(json.dumps({"tract_over_onnxruntime_p50": round(t["p50_ms"] / o["p50_ms"], 2),
                          "tract_over_onnxruntime_p95": round(t["p95_ms"] / o["p95_ms"], 2)}),
              flush=True)

    if args.checkpoint:
        import torch
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models", "train"))
        import train
        torch.set_num_threads(1)
        ck = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
        net = train.model_from_stats(ck["stats"])
        # "ema+bn" = EMA weights with re-estimated batch-norm statistics; for timing the
        # stored EMA weights are the same network.
        net.load_state_dict(ck[meta.get("weights", "ema").split("+")[0]], strict=False)
        net.eval()
        xt, mt = torch.from_numpy(x), torch.from_numpy(male)

        def run_torch():
            i[0] += 1
            with torch.no_grad():
                net(xt[i[0] % len(x)][None], mt)

        r = timings(run_torch, args.runs)
        r.update(runtime="pytorch " + torch.__version__, threads=1)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
