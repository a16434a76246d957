"""Adds an out-of-distribution score to the exported model: a second output `ood_score`.

    python ood.py --data ../../../shared/data/rsna-100px --model ../boneage-lite0.onnx \
        --out ../boneage-lite0.onnx --version 1.3.0

Why: the network returns a bone age for any picture it is given, a rotated or inverted
radiograph, a chest film, a photograph, a blank page. `ood_score` says how far an image is
from the training radiographs, inside the same ONNX file, so the Rust side (tract and ONNX
Runtime alike) gets it from the one inference it already runs. It is ~1 on training
images; the appliance refuses a reading above the metadata key `ood.threshold`, the 99.9th
percentile of the training images' scores. It measures "looks like the training
radiographs", not "is a hand": a right hand passes, a rotated or over-exposed radiograph
only partly fails, other body parts were never tested.

How the score is built (a feasibility study compared ~70 variants; this one rejected all
foreign pictures tried at 0.4% of the validation radiographs):
- three feature vectors read from tensors the graph already computes: the per-channel
  spatial mean and standard deviation of the outputs of blocks 4 (40 channels) and 10
  (112 channels) of Lite0 (blocks 6 and 14 of Lite2: `find_taps`), and the pooled head
  features (1280);
- one Gaussian distance per vector, fitted on the TRAINING images of split.csv only,
  centre view: a ridge Mahalanobis distance (covariance + 0.01 x its mean eigenvalue) for
  the two block statistics, and for the head features probabilistic PCA, the Mahalanobis
  distance on the top 64 principal components plus the squared residual divided by the
  mean remaining eigenvalue;
- each distance divided by its own training 99.9th percentile, the three summed, divided
  by the training mean of the sum, square-rooted.
All of it is standard ONNX (ReduceMean, Sub, Mul, Sqrt, Flatten, Concat, MatMul, Gemm,
ReduceSum, Add) hanging off existing tensors, with the normalisations folded into the
weights; `bone_age_months` is computed by the unchanged original nodes.

What it does, in order:
1. Loads the images with train.load_dataset (the fixed split.csv), extracts the three
   feature vectors for every image with a batched copy of the model, fits the score on the
   training images and sets the threshold.
2. Writes the model with the added nodes and output (float32 [1,1]) to a temporary file,
   metadata: `version` = --version, `ood.threshold`, `ood.method`,
   `ood.validation_rejected` (centre view), `ood.orientation_margin` (ORIENTATION_MARGIN),
   `ood.mirror_margin` (MIRROR_MARGIN);
   every other key is left as it is.
3. Checks the temporary file with ONNX Runtime on every validation image and each of the
   test-time views (preprocess.tta_shifts_px, shifted as export.shift does):
   `bone_age_months` must equal the input model's (max |diff| < 1e-5, in practice 0) and
   `ood_score` must equal the numpy score; only then renames it to --out, so --out may be
   --model. A model that already has `ood_score` is refused: run this on export.py's output.
4. Adds `ood_score_onnxruntime` (centre view) and `ood_score_onnxruntime_tta` (mean over
   the views) to models/validation/predictions.csv and an "ood" object to metrics.json
   and `ood_score_tta` to tests/fixtures/val/expected.csv (after export.py, which rewrites
   them without these; --validation-dir '' skips this).
About two minutes on 2 CPU cores.

With `--study`, also evaluates the written model (or, if --model already has `ood_score`,
that model, without writing anything) on pictures that are not training-like radiographs
and prints a markdown table: 300 validation radiographs flipped, rotated, inverted,
over/under-exposed, blurred, zoomed, shrunk; pictures found on this machine (*.png / *.jpg
over 20 kB outside /work, /tmp, /proc, /sys and the repository; check that none of them is a
hand radiograph), scikit-image's bundled pictures and LFW faces if --skimage-path holds
skimage/data, gradients / sinusoids / noise; plus the time cost. A few minutes more.

    python ood.py --data ../../../shared/data/rsna-100px --model ../boneage-lite0.onnx \
        --study --skimage-path /path/to/site-packages --study-out study.md
"""
import argparse
import copy
import csv
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import train  # noqa: E402
from export import shift  # noqa: E402  (the shift the shipped reading uses)

OUTPUT = "ood_score"
PREFIX = "ood/"  # every added node, tensor and initializer is named ood/...
# Tensors of export.py's graph the score reads.
HEAD = "/ReduceMean_output_0"  # [1,1280] global average pool of the head
BLOCK_OUT = re.compile(r"/_blocks\.(\d+)/Add_output_0")  # NCHW output of a residual block
# The score's parts' distances: ridgeA = Mahalanobis with covariance + A x mean eigenvalue
# (block statistics); ppcaK = T^2 on the top K principal components + residual / sigma^2
# (head features).
BLOCK_DISTANCE, HEAD_DISTANCE = "ridge0.01", "ppca64"
PERCENTILE = 99.9  # of the training images' scores: each part's scale and the threshold
# The appliance compares the score of the image as given with its three quarter turns and
# refuses it as turned when a turn lowers the score by more than this (to under the
# threshold). Measured with v1.3.0 (scores of each image and its np.rot90 turns, centre
# view): on every 5th training image (2,090) 0.19% of upright images would be refused as
# turned and 99.7% of turned ones refused; on the validation split 0.09% and 99.4-99.9%.
# 0.1 refuses more upright images (0.24%), 0.3 catches fewer turned ones (98.9% at 180).
ORIENTATION_MARGIN = 0.2
# The appliance also scores the image mirrored left-right and warns (does not refuse) when
# that lowers the score by more than this, to under the threshold: most likely a right hand,
# which v1.3.1 reads with a validation MAE of 10.1 against 8.1 for the left hands as given
# (5 views; single readings move by up to 60 months). Measured with v1.3.1, centre view:
# on every 5th training image (2,090) 1.00% of the images as given would be warned and
# 71.9% of their mirrored copies; on the validation split 1.37% and 71.4%. 0.05 catches
# 88% of mirrored images but warns 2.2% of the rest; 0.2 warns 0.14% but catches 28%.
MIRROR_MARGIN = 0.1
REPORT_PCTS = [50, 90, 99, 99.5, 99.9, 100]


# ============================================================================= the graph
def stat_nodes(tap, tensor):
    """Nodes: per-channel spatial mean and (two-pass) std of `tensor` -> ood/<tap>/ms [N,2C]."""
    p = f"{PREFIX}{tap}/"
    node = lambda op, i, o, **kw: helper.make_node(op, i, [p + o], name=p + o, **kw)  # noqa: E731
    return [node("ReduceMean", [tensor], "mean4", axes=[2, 3], keepdims=1),
            node("Sub", [tensor, p + "mean4"], "dev"),
            node("Mul", [p + "dev", p + "dev"], "dev2"),
            node("ReduceMean", [p + "dev2"], "var", axes=[2, 3], keepdims=0),
            node("Sqrt", [p + "var"], "std"),
            node("Flatten", [p + "mean4"], "mean", axis=1),
            node("Concat", [p + "mean", p + "std"], "ms", axis=1)], p + "ms"


def find_taps(model):
    """{"b<k>": tensor}: the block outputs whose statistics the score reads, the last block of
    the second and of the fourth stage that has residual blocks (stages told apart by their
    channel count): blocks 4 (40 channels, 1/8 of the backbone's resolution) and 10 (112,
    1/16) of Lite0, 6 and 14 of Lite2. Mid-level texture and shape, which the pooled head
    features alone summarise too coarsely to tell a blurred radiograph from a sharp one."""
    inferred = onnx.shape_inference.infer_shapes(model)
    blocks = sorted((int(m.group(1)), v.name, v.type.tensor_type.shape.dim[1].dim_value)
                    for v in inferred.graph.value_info
                    if (m := BLOCK_OUT.fullmatch(v.name)) and len(v.type.tensor_type.shape.dim) == 4)
    last = {}  # channel count -> (block index, tensor) of that stage's last block, in block order
    for k, name, channels in blocks:
        last[channels] = (k, name)
    stages = list(last.values())
    have = {o for n in model.graph.node for o in n.output}
    if HEAD not in have or len(stages) < 4:
        raise SystemExit(f"the model has no {HEAD} or fewer than four stages with residual blocks "
                         f"({[t for _, t in stages]}): ood.py expects export.py's EfficientNet-Lite graph")
    return {f"b{k}": t for k, t in (stages[1], stages[3])}


def method_text(taps):
    """The `ood.method` metadata value for a score reading `taps`."""
    blocks = " and ".join(k[1:] for k in taps)
    return (f"Gaussian distance from the training radiographs (channel mean/std of blocks {blocks}: "
            "ridge Mahalanobis; pooled head features: PPCA-64 + residual), parts scaled by their "
            "training p99.9, summed, square-rooted; ~1 in distribution")


def feature_model(model, taps):
    """A copy whose outputs are the features the parts read, with a dynamic batch."""
    m = copy.deepcopy(model)
    g = m.graph
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(HEAD, TensorProto.FLOAT, None))
    for tap, tensor in taps.items():
        nodes, out = stat_nodes(tap, tensor)
        g.node.extend(nodes)
        g.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    for vi in g.input:
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del g.value_info[:]
    return m


def session(model_or_path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def features(sess, images_u8, male, mean, std, bs=64):
    """uint8 [N,H,W] -> {"head": [N,1280], "b4": [N,80], "b10": [N,224]} (Lite0), centre view."""
    names = [o.name for o in sess.get_outputs()]
    taps = [n[len(PREFIX):-len("/ms")] for n in names if n.startswith(PREFIX)]
    keys = ["head"] + taps
    acc = {k: [] for k in keys}
    for i in range(0, len(images_u8), bs):
        x = ((images_u8[i:i + bs].astype(np.float32) / 255.0 - mean) / std)[:, None]
        out = dict(zip(names, sess.run(None, {"image": x.astype(np.float32),
                                              "male": male[i:i + bs, None].astype(np.float32)})))
        acc["head"].append(out[HEAD].reshape(len(x), -1))
        for tap in taps:
            acc[tap].append(out[f"{PREFIX}{tap}/ms"])
    return {k: np.concatenate(v).astype(np.float64) for k, v in acc.items()}


# ============================================================================= the score
class Part:
    """||(x-mu) A||^2 (+ c^2 ||r||^2, r = the residual of x-mu off the top-k components U)."""

    def __init__(self, src, method, x):
        self.src, self.method = src, method
        self.mu = x.mean(0)
        xc = x - self.mu
        lam, u = np.linalg.eigh(xc.T @ xc / len(xc))
        order = np.argsort(lam)[::-1]
        lam, u = np.maximum(lam[order], 0), u[:, order]
        self.U, self.w, self.c = None, None, 0.0
        if method.startswith("ridge"):
            self.A = u / np.sqrt(lam + float(method[5:]) * lam.mean())[None]
        elif method.startswith("ppca"):
            k = int(method[4:])
            self.U, self.w, self.c = u[:, :k], 1 / np.sqrt(lam[:k]), 1 / np.sqrt(lam[k:].mean())
            self.A = self.U * self.w[None]
        else:
            raise ValueError(method)
        self.norm = float(np.percentile(self.raw(x), PERCENTILE))

    def raw(self, x):
        d = x - self.mu
        s = ((d @ self.A) ** 2).sum(1)
        if self.U is not None:
            s += self.c ** 2 * ((d - (d @ self.U) @ self.U.T) ** 2).sum(1)
        return s


class Score:
    """sqrt(sum_p raw_p / norm_p / mean_s), mean_s = training mean of the sum."""

    def __init__(self, feats_train, taps):
        self.taps = taps
        parts = [(tap, BLOCK_DISTANCE) for tap in taps] + [("head", HEAD_DISTANCE)]
        self.parts = [Part(src, method, feats_train[src]) for src, method in parts]
        self.mean_s = 1.0
        self.mean_s = float(np.mean(self.sum(feats_train)))

    def sum(self, feats):
        return sum(p.raw(feats[p.src]) / p.norm for p in self.parts) / self.mean_s

    def __call__(self, feats):
        return np.sqrt(self.sum(feats))

    def add_to(self, model):
        """Appends the nodes computing the score and the output `ood_score` [1,1]."""
        g = model.graph
        init = lambda name, a: g.initializer.append(numpy_helper.from_array(a, name))  # noqa: E731
        node = lambda op, i, o, **kw: g.node.append(helper.make_node(op, i, [o], name=o, **kw))  # noqa: E731
        init(PREFIX + "axes1", np.array([1], np.int64))
        terms = []
        for i, p in enumerate(self.parts):
            if p.src == "head":
                x = HEAD
            else:
                nodes, x = stat_nodes(p.src, self.taps[p.src])
                g.node.extend(nodes)
            s = 1.0 / np.sqrt(p.norm * self.mean_s)  # both normalisations folded into the weights
            pre = f"{PREFIX}p{i}_{p.src}/"
            init(pre + "mu", p.mu.astype(np.float32)[None])
            node("Sub", [x, pre + "mu"], pre + "d")
            if p.U is None:  # y = d A
                init(pre + "A", (p.A * s).astype(np.float32))
                node("MatMul", [pre + "d", pre + "A"], pre + "y")
            else:  # z = d U, y = z w; residual r = d - z U^T, scaled by c
                init(pre + "U", p.U.astype(np.float32))
                init(pre + "w", (p.w * s).astype(np.float32)[None])
                init(pre + "c", np.array([p.c * s], np.float32))
                node("MatMul", [pre + "d", pre + "U"], pre + "z")
                node("Mul", [pre + "z", pre + "w"], pre + "y")
                node("Gemm", [pre + "z", pre + "U"], pre + "rec", transB=1)
                node("Sub", [pre + "d", pre + "rec"], pre + "res")
                node("Mul", [pre + "res", pre + "c"], pre + "rc")
                node("Mul", [pre + "rc", pre + "rc"], pre + "rc2")
                node("ReduceSum", [pre + "rc2", PREFIX + "axes1"], pre + "r", keepdims=1)
                terms.append(pre + "r")
            node("Mul", [pre + "y", pre + "y"], pre + "y2")
            node("ReduceSum", [pre + "y2", PREFIX + "axes1"], pre + "t", keepdims=1)
            terms.append(pre + "t")
        acc = terms[0]
        for j, t in enumerate(terms[1:]):
            node("Add", [acc, t], f"{PREFIX}sum{j}")
            acc = f"{PREFIX}sum{j}"
        node("Sqrt", [acc], OUTPUT)
        g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 1]))


def without_ood(model):
    """The graph as export.py wrote it: the added nodes, weights and output removed."""
    m = copy.deepcopy(model)
    g = m.graph
    keep = [n for n in g.node if not (n.output[0].startswith(PREFIX) or n.output[0] == OUTPUT)]
    del g.node[:]
    g.node.extend(keep)
    keep = [t for t in g.initializer if not t.name.startswith(PREFIX)]
    del g.initializer[:]
    g.initializer.extend(keep)
    keep = [o for o in g.output if o.name != OUTPUT]
    del g.output[:]
    g.output.extend(keep)
    return m


# ============================================================================= helpers
def meta(model):
    return {p.key: p.value for p in model.metadata_props}


def parse_shifts(text):
    return [tuple(int(v) for v in s.split(",")) for s in text.split(";")]


def pcts(a):
    return {("max" if q == 100 else f"p{q:g}"): round(float(np.percentile(a, q)), 4) for q in REPORT_PCTS}


def run_views(sess, img_u8, male, mean, std, shifts):
    """The shipped reading's inputs, as export.py builds them -> [(age, ood or None) per view]."""
    img = img_u8.astype(np.float32) / 255.0
    m_in = np.array([[male]], np.float32)
    out = []
    for dx, dy in shifts:
        x = ((shift(img, dx, dy) - mean) / std)[None, None].astype(np.float32)
        o = sess.run(None, {"image": x, "male": m_in})
        out.append((float(o[0].ravel()[0]), float(o[1].ravel()[0]) if len(o) > 1 else None))
    return out


# ============================================================================= build
def build(args, model, ids, images, male, age, is_val):
    t0 = time.time()
    md = meta(model)
    mean, std = float(md["preprocess.mean"]), float(md["preprocess.std"])
    shifts = parse_shifts(md["preprocess.tta_shifts_px"])
    size_before = os.path.getsize(args.model)
    taps = find_taps(model)

    # 1. fit on the training images, centre view
    fs = session(feature_model(model, taps), args.threads)
    feats = features(fs, images, male, mean, std)
    tr, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    score = Score({k: v[tr] for k, v in feats.items()}, taps)
    s_train = score({k: v[tr] for k, v in feats.items()})
    s_val_np = score({k: v[val] for k, v in feats.items()})
    threshold = float(f"{np.percentile(s_train, PERCENTILE):.4f}")
    print(f"fitted on {len(tr)} training images in {time.time() - t0:.0f} s; parts "
          + ", ".join(f"{p.src}:{p.method} ({len(p.mu)}-d)" for p in score.parts)
          + f"; threshold (training p{PERCENTILE:g}) {threshold:.4f}", flush=True)

    # 2. the model with ood_score, to a temporary file next to --out
    new = copy.deepcopy(model)
    score.add_to(new)
    n_rej_np = int((s_val_np > threshold).sum())
    props = {"version": args.version, "ood.threshold": f"{threshold:.4f}", "ood.method": method_text(taps),
             "ood.validation_rejected": f"{n_rej_np}/{len(val)}",
             "ood.orientation_margin": f"{ORIENTATION_MARGIN:g}",
             "ood.mirror_margin": f"{MIRROR_MARGIN:g}"}
    for e in new.metadata_props:
        if e.key in props:
            e.value = props.pop(e.key)
    for k, v in props.items():
        new.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(new, full_check=True)
    tmp = args.out + ".tmp"
    onnx.save(new, tmp)
    try:
        # 3. every validation image, every view: ages as before, score as numpy's
        s_old, s_new = session(model, args.threads), session(tmp, args.threads)
        names = [o.name for o in s_new.get_outputs()]
        if names != ["bone_age_months", OUTPUT]:
            raise SystemExit(f"unexpected outputs {names}")
        age_old, age_new, ood = [], [], []
        for i in val:
            age_old.append([a for a, _ in run_views(s_old, images[i], male[i], mean, std, shifts)])
            o = run_views(s_new, images[i], male[i], mean, std, shifts)
            age_new.append([a for a, _ in o])
            ood.append([s for _, s in o])
        age_old, age_new, ood = np.array(age_old), np.array(age_new), np.array(ood)
        age_diff = float(np.abs(age_new - age_old).max())
        rel_err = float((np.abs(ood[:, 0] - s_val_np) / s_val_np).max())
        print(f"validation, {len(val)} images x {len(shifts)} views: max |bone_age_months new - "
              f"input model| = {age_diff:.3g}; ood_score onnxruntime vs numpy max rel err "
              f"{rel_err:.1e}", flush=True)
        if age_diff >= 1e-5:
            raise SystemExit("bone_age_months changed: not writing the model")
        if rel_err > 1e-4:
            raise SystemExit("ood_score in the graph disagrees with the numpy score: not writing")
        centre, tta = ood[:, 0], ood.mean(1)
        n_rej = int((centre > threshold).sum())
        if n_rej != n_rej_np:  # a score within float error of the threshold: the file's count wins
            print(f"onnxruntime rejects {n_rej} validation images, numpy {n_rej_np}: storing {n_rej}")
            for e in new.metadata_props:
                if e.key == "ood.validation_rejected":
                    e.value = f"{n_rej}/{len(val)}"
            onnx.save(new, tmp)
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    size_after = os.path.getsize(args.out)

    # 4. the validation files and the summary
    rej = np.flatnonzero(centre > threshold)
    err_c, err_t = np.abs(age_new[:, 0] - age[val]), np.abs(age_new.mean(1) - age[val])
    summary = {
        "model_version": args.version, "output": OUTPUT, "threshold": threshold,
        "threshold_definition": f"{PERCENTILE:g}th percentile of the training images' scores",
        "method": method_text(score.taps), "parts": [f"{p.src}:{p.method}" for p in score.parts],
        "n_train": int(len(tr)),
        "validation": {"n": int(len(val)), "rejected_centre": n_rej,
                       "rejected_tta_mean": int((tta > threshold).sum()),
                       "rejected_any_view": int((ood > threshold).any(1).sum()),
                       "rejected_ids_centre": [int(ids[val[k]]) for k in rej],
                       "rejected_abs_error_months_tta": [round(float(err_t[k]), 2) for k in rej],
                       "mae_accepted_tta": float(err_t[centre <= threshold].mean())},
        "percentiles": {"train_centre": pcts(s_train), "validation_centre": pcts(centre),
                        "validation_tta_mean": pcts(tta)},
        "size_bytes": {"before": size_before, "after": size_after},
    }
    if args.validation_dir:
        update_validation_files(args.validation_dir, ids[val], centre, tta, summary)
    pc = lambda n: f"{n}/{len(val)} ({100 * n / len(val):.1f}%)"  # noqa: E731
    v = summary["validation"]
    print(f"wrote {args.out}: version {args.version}, ood.threshold {threshold:.4f}, "
          f"{size_before / 1e6:.3f} MB -> {size_after / 1e6:.3f} MB "
          f"(+{(size_after - size_before) / 1e3:.0f} kB)")
    print(f"validation rejected: centre view {pc(v['rejected_centre'])}, mean of {len(shifts)} views "
          f"{pc(v['rejected_tta_mean'])}, any view {pc(v['rejected_any_view'])}")
    for k in rej:
        print(f"  id {ids[val[k]]}: ood_score {centre[k]:.3f} (views mean {tta[k]:.3f}), "
              f"|bone-age error| {err_c[k]:.1f} months centre, {err_t[k]:.1f} with the views")
    print(f"validation MAE (views) {err_t.mean():.2f} months, of the accepted {v['mae_accepted_tta']:.2f}")
    for name, p in summary["percentiles"].items():
        print(f"ood_score {name:20s} " + "  ".join(f"{k} {x:.3f}" for k, x in p.items()))
    print(f"done in {time.time() - t0:.0f} s")
    return summary


def update_validation_files(vdir, val_ids, centre, tta, summary):
    """predictions.csv: two columns added (or replaced); metrics.json: an "ood" object."""
    path = os.path.join(vdir, "predictions.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if [int(r[0]) for r in body] != [int(i) for i in val_ids]:
        raise SystemExit(f"{path} does not list the validation split in order: run export.py first")
    cols = ["ood_score_onnxruntime", "ood_score_onnxruntime_tta"]
    keep = [j for j, h in enumerate(header) if h not in cols]
    with open(path, "w", newline="") as f:  # csv's default \r\n, as export.py writes it
        w = csv.writer(f)
        w.writerow([header[j] for j in keep] + cols)
        for r, c, t in zip(body, centre, tta):
            w.writerow([r[j] for j in keep] + [f"{c:.6f}", f"{t:.6f}"])
    path = os.path.join(vdir, "metrics.json")
    with open(path) as f:
        m = json.load(f)
    m["ood"] = summary
    with open(path, "w") as f:
        json.dump(m, f, indent=1)
    print(f"updated {vdir}/predictions.csv (+{', '.join(cols)}) and metrics.json (\"ood\")")
    # The Rust tests compare tract's score with this one on the committed fixtures.
    path = os.path.join(REPO, "tests", "fixtures", "val", "expected.csv")
    if os.path.exists(path):
        by_id = {int(i): t for i, t in zip(val_ids, tta)}
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        col = "ood_score_tta"
        keep = [j for j, h in enumerate(rows[0]) if h != col]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([rows[0][j] for j in keep] + [col])
            for r in rows[1:]:
                w.writerow([r[j] for j in keep] + [f"{by_id[int(r[0])]:.6f}"])
        print(f"updated {path} (+{col})")


# ============================================================================= --study
def app_load(path):
    """Like the app: whole picture to grey, squashed to 100x100 (bilinear ~ triangle), uint8."""
    im = Image.open(path)
    im.load()
    if im.mode in ("I;16", "I;16B", "I"):
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray((255 * (a - a.min()) / max(np.ptp(a), 1)).astype(np.uint8))
    return np.asarray(im.convert("L").resize((100, 100), Image.BILINEAR), dtype=np.uint8)


def is_grey(path):
    im = Image.open(path)
    if im.mode in ("L", "LA", "1", "I", "I;16"):
        return True
    a = np.asarray(im.convert("RGB").resize((64, 64)), dtype=np.int16)
    return bool(np.abs(a - a[..., :1]).max() <= 2)


def find_pictures(prune):
    """*.png / *.jpg over 20 kB on this machine outside `prune`, identical files once."""
    expr = " -o ".join(f"-path '{p}'" for p in prune)
    cmd = (f"find / -xdev \\( {expr} \\) -prune -o \\( -name '*.jpg' -o -name '*.jpeg' -o "
           "-name '*.png' \\) -size +20k -print")
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.split("\n")
    seen, files = set(), []
    for p in sorted(x for x in out if x):
        try:
            h = hashlib.sha1(open(p, "rb").read()).hexdigest()
        except OSError:
            continue
        if h not in seen:
            seen.add(h)
            files.append(p)
    return files


def load_files(paths):
    imgs, names, grey = [], [], []
    for p in paths:
        try:
            imgs.append(app_load(p))
            grey.append(is_grey(p))
        except Exception as e:  # noqa: BLE001 - an unreadable picture is just skipped
            print(f"skip {p}: {e}")
            continue
        names.append(p)
    return np.array(imgs, np.uint8).reshape(-1, 100, 100), names, np.array(grey, bool)


def to_u8(a):
    return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)


def resize(a_u8, size=(100, 100)):
    return np.asarray(Image.fromarray(a_u8).resize(size, Image.BILINEAR), np.uint8)


def radiograph_variants(x):
    """x: uint8 [N,100,100] validation radiographs -> transformed sets (uint8)."""
    f = x.astype(np.float32) / 255

    def zoom(a, frac):  # centre crop to frac of the side, squashed back to 100x100
        m = int(round(100 * (1 - frac) / 2))
        return resize(a[m:100 - m, m:100 - m])

    def shrink(a, frac):  # the whole radiograph smaller, inside a black frame
        s, o = int(round(100 * frac)), np.zeros((100, 100), np.uint8)
        m = (100 - s) // 2
        o[m:m + s, m:m + s] = resize(a, (s, s))
        return o
    blur = lambda r: np.array([np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(r)))  # noqa: E731
                               for a in x])
    return {"flip left-right (right hand)": x[:, :, ::-1], "rotated 90": np.rot90(x, 1, axes=(1, 2)),
            "rotated 180": np.rot90(x, 2, axes=(1, 2)), "rotated 270": np.rot90(x, 3, axes=(1, 2)),
            "inverted (255-x)": 255 - x, "overexposed (3x)": to_u8(3 * f), "dark (x/3)": to_u8(f / 3),
            "blur r=3 px": blur(3), "blur r=6 px": blur(6),
            "zoom: centre 70% crop": np.array([zoom(a, 0.7) for a in x]),
            "shrunk to 70% in black": np.array([shrink(a, 0.7) for a in x])}


def patterns(rng):
    yy, xx = np.mgrid[0:100, 0:100] / 99.0
    r = np.hypot(xx - .5, yy - .5) / .71
    out = [xx, yy, (xx + yy) / 2, 1 - xx, r, 1 - r, np.exp(-((xx - .5) ** 2 + (yy - .5) ** 2) / .08)]
    for freq in (1, 2, 4, 8, 16):
        for th in np.deg2rad([0, 45, 90]):
            out.append(0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(th) * xx + np.sin(th) * yy)))
    out += [np.full((100, 100), c) for c in (0.0, 0.2, 0.5, 0.8, 1.0)]
    out += [0.3 + s * rng.standard_normal((100, 100)) for s in (0.1, 0.3)] + [rng.random((100, 100))]
    return np.array([to_u8(a) for a in out])


def auroc(neg, pos):
    """P(score of a positive > score of a negative), ties count half."""
    allv = np.concatenate([neg, pos])
    _, inv, cnt = np.unique(allv, return_inverse=True, return_counts=True)
    r = np.argsort(np.argsort(allv, kind="mergesort"), kind="mergesort").astype(np.float64) + 1
    r = (np.bincount(inv, r) / cnt)[inv]
    return (r[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def turn_and_mirror_rates(sess, images, male, mean, std, th):
    """The appliance's orientation and mirror checks (centre view) on `images`: the share of
    upright images refused as turned, of each quarter turn refused (as turned or by the
    likeness limit), of images as given warned as mirrored and of their mirror copies warned.
    As in the appliance, only an image that is not refused is checked for mirroring. A turned
    copy's own turns are the other turns of the original, so five passes per image (as
    given, three turns, mirrored) cover every case but one: a mirror copy's own turns are
    not scored, so the few of them the orientation check would refuse count as warned."""
    def score(a, m):
        return run_views(sess, a, m, mean, std, [(0, 0)])[0][1]
    s = np.array([[score(np.rot90(a, k), m) for k in range(4)] + [score(a[:, ::-1], m)]
                  for a, m in zip(images, male)])
    rot, mir = s[:, :4], s[:, 4]

    def refused_as_turned(r):  # copy turned by r: its turns are the other rotations
        others = np.delete(rot, r, axis=1)
        return ((rot[:, r:r + 1] - others > ORIENTATION_MARGIN) & (others <= th)).any(1)
    upright = refused_as_turned(0)
    turned = {90 * r: (refused_as_turned(r) | (rot[:, r] > th)) for r in (1, 2, 3)}
    given = (rot[:, 0] <= th) & ~upright & (rot[:, 0] - mir > MIRROR_MARGIN) & (mir <= th)
    copies = (mir <= th) & (mir - rot[:, 0] > MIRROR_MARGIN) & (rot[:, 0] <= th)
    return {"n": len(images), "upright_refused_as_turned": float(upright.mean()),
            "turned_refused": {k: float(v.mean()) for k, v in turned.items()},
            "given_warned_mirrored": float(given.mean()), "mirror_copies_warned": float(copies.mean()),
            "given_score_below_mirror": float((rot[:, 0] < mir).mean())}


def study(args, path, ids, images, male, age, is_val):
    """Rejection rates of the model at `path` on validation, transformed and foreign sets."""
    t0 = time.time()
    model = onnx.load(path)
    md = meta(model)
    mean, std = float(md["preprocess.mean"]), float(md["preprocess.std"])
    shifts = parse_shifts(md["preprocess.tta_shifts_px"])
    th = float(md["ood.threshold"])
    rng = np.random.default_rng(0)
    val = np.flatnonzero(is_val)
    syn = rng.choice(val, min(args.n_synth, len(val)), replace=False)
    sets = {"validation": (images[val], male[val], age[val], [f"id{i}" for i in ids[val]]),
            f"validation, the {len(syn)} below untransformed": (images[syn], male[syn], age[syn], None)}
    for name, x in radiograph_variants(images[syn]).items():
        sets[name] = (np.ascontiguousarray(x), male[syn], age[syn], None)
    prune = sorted({"/proc", "/sys", "/tmp", "/work", REPO, os.path.realpath(args.data)})
    fx, fnames, fgrey = load_files(find_pictures(prune))
    one = lambda n: np.ones(n, np.float32)  # noqa: E731 - foreign pictures run as male
    sets["pictures on this machine, colour -> grey"] = (fx[~fgrey], one((~fgrey).sum()), None,
                                                        [n for n, g in zip(fnames, fgrey) if not g])
    sets["pictures on this machine, already grey"] = (fx[fgrey], one(fgrey.sum()), None,
                                                      [n for n, g in zip(fnames, fgrey) if g])
    sk = os.path.join(args.skimage_path, "skimage", "data") if args.skimage_path else None
    if sk and os.path.isfile(os.path.join(sk, "camera.png")):
        sx, snames, _ = load_files(sorted(p for p in glob.glob(os.path.join(sk, "*"))
                                          if p.endswith((".png", ".jpg"))))
        sets["scikit-image pictures"] = (sx, one(len(sx)), None, snames)
        lfw = os.path.join(sk, "lfw_subset.npy")
        if os.path.isfile(lfw):
            faces = np.array([resize(to_u8(a)) for a in np.load(lfw)])
            sets["LFW faces (25 px, upscaled)"] = (faces, one(len(faces)), None,
                                                   [f"lfw{i}" for i in range(len(faces))])
    else:
        print("no skimage/data under --skimage-path: scikit-image pictures and LFW faces skipped")
    px = patterns(rng)
    sets["gradients, sinusoids, constants, noise"] = (px, one(len(px)), None, [f"pattern{i}" for i in range(len(px))])

    sess = session(path, args.threads)
    res = {}
    for name, (x, m, _, _) in sets.items():
        o = np.array([run_views(sess, a, b, mean, std, shifts) for a, b in zip(x, m)])  # [n,V,2]
        res[name] = (o[:, :, 0], o[:, :, 1])
        print(f"  {name}: {len(x)} images", flush=True)
    pc = lambda v: f"{100 * np.mean(v):.1f}"  # noqa: E731
    lines = [f"ood_score of `{os.path.basename(path)}` (version {md.get('version')}), threshold "
             f"{th:.4f}; {len(shifts)} views = preprocess.tta_shifts_px; transformed sets = the same "
             f"{len(syn)} validation radiographs (seed 0); bone-age MAE from the mean over the views.", "",
             "| set | n | median score | min score | rejected % centre view | rejected % mean of views "
             "| rejected % any view | bone-age MAE, all / accepted (months) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (x, m, a, _) in sets.items():
        ages, sc = res[name]
        mae = "-"
        if a is not None:
            err = np.abs(ages.mean(1) - a)
            acc = sc.mean(1) <= th
            mae = f"{err.mean():.1f} / " + (f"{err[acc].mean():.1f}" if acc.any() else "-")
        lines.append(f"| {name} | {len(x)} | {np.median(sc[:, 0]):.2f} | {sc[:, 0].min():.2f} | "
                     f"{pc(sc[:, 0] > th)} | {pc(sc.mean(1) > th)} | {pc((sc > th).any(1))} | {mae} |")
    foreign = [k for k, v in sets.items() if v[2] is None]
    v_sc = res["validation"][1][:, 0]
    fo = np.concatenate([res[k][1][:, 0] for k in foreign if k.startswith(("pictures", "scikit"))] or [[]])
    allo = np.concatenate([res[k][1][:, 0] for k in foreign])
    lines += [""]
    if len(fo):
        lines.append(f"AUROC validation vs pictures on this machine + scikit-image: {auroc(v_sc, fo):.4f}; "
                     f"vs every non-radiograph set: {auroc(v_sc, allo):.4f}.")
    vname = sets["validation"][3]
    vages, vsc = res["validation"]
    rej = np.flatnonzero(vsc[:, 0] > th)
    lines += ["", "Validation radiographs rejected (centre view): "
              + ("; ".join(f"{vname[k]} score {vsc[k, 0]:.2f}, |error| {abs(vages[k].mean() - age[val][k]):.1f} "
                           "months" for k in rej) or "none"), ""]
    accepted = [(float(res[k][1][i, 0]), k, sets[k][3][i]) for k in foreign
                for i in np.flatnonzero((res[k][1] <= th).any(1))]
    lines.append("Non-radiograph pictures accepted by some view: "
                 + ("; ".join(f"{n} ({k}, {s:.3f})" for s, k, n in sorted(accepted)) or "none"))
    low = sorted((float(res[k][1][i, 0]), k, sets[k][3][i]) for k in foreign for i in range(len(sets[k][0])))
    lines += ["", "Lowest-scoring non-radiograph pictures (centre view): "
              + "; ".join(f"{s:.3f} {os.path.basename(n)} ({k})" for s, k, n in low[:8])]

    # the orientation and mirror checks, at ORIENTATION_MARGIN / MIRROR_MARGIN
    lines += ["", f"Orientation (margin {ORIENTATION_MARGIN:g}) and mirror (margin {MIRROR_MARGIN:g}) "
              "checks, centre view:", ""]
    for name, idx in (("every 5th training image", np.flatnonzero(~is_val)[::5]), ("validation", val)):
        r = turn_and_mirror_rates(sess, images[idx], male[idx], mean, std, th)
        lines.append(f"- {name} ({r['n']}): upright refused as turned {100 * r['upright_refused_as_turned']:.2f}%; "
                     "turned refused " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in r["turned_refused"].items())
                     + f"; as given warned as mirrored {100 * r['given_warned_mirrored']:.2f}%, mirror copies "
                     f"warned {100 * r['mirror_copies_warned']:.1f}%; score as given below its mirror's "
                     f"{100 * r['given_score_below_mirror']:.0f}%")

    # time: one thread, one image, the graph with and without the added nodes
    s1, s0 = session(path, 1), session(without_ood(model), 1)
    x = ((images[val[0]].astype(np.float32) / 255.0 - mean) / std)[None, None].astype(np.float32)
    feeds = {"image": x, "male": np.array([[male[val[0]]]], np.float32)}
    tt = ([], [])
    for rep in range(330):
        for n, s in enumerate((s0, s1)):
            a = time.perf_counter()
            s.run(None, feeds)
            if rep >= 30:
                tt[n].append(time.perf_counter() - a)
    t_old, t_new = np.median(tt[0]) * 1e3, np.median(tt[1]) * 1e3
    n_add = sum(n.output[0].startswith(PREFIX) or n.output[0] == OUTPUT for n in model.graph.node)
    add_bytes = sum(t.ByteSize() for t in model.graph.initializer if t.name.startswith(PREFIX))
    lines += ["", f"Cost: {n_add} added nodes, {add_bytes / 1e3:.0f} kB of added weights "
              f"(file {os.path.getsize(path) / 1e6:.3f} MB); ONNX Runtime, 1 thread, median of 300 runs: "
              f"{t_old:.3f} ms without the score, {t_new:.3f} ms with it ({t_new - t_old:+.3f} ms, "
              f"{100 * (t_new / t_old - 1):+.1f}%).", "", f"(study: {time.time() - t0:.0f} s)"]
    text = "\n".join(lines)
    print(text)
    if args.study_out:
        with open(args.study_out, "w") as f:
            f.write(text + "\n")
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="ONNX file from export.py (no ood_score yet)")
    ap.add_argument("--out", help="ONNX file to write (may be --model)")
    ap.add_argument("--version", help="metadata version of the written model")
    ap.add_argument("--split", default=os.path.join(HERE, "split.csv"))
    ap.add_argument("--validation-dir", default=os.path.join(REPO, "models", "validation"),
                    help="predictions.csv + metrics.json to extend ('' to leave them alone)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--study", action="store_true", help="also the foreign / transformed-image table")
    ap.add_argument("--skimage-path", default="", help="--study: site dir holding skimage/data (optional)")
    ap.add_argument("--n-synth", type=int, default=300, help="--study: radiographs per transformed set")
    ap.add_argument("--study-out", default="", help="--study: also write the table to this file")
    args = ap.parse_args()

    model = onnx.load(args.model)
    has_ood = any(o.name == OUTPUT for o in model.graph.output)
    if has_ood and not (args.study and not args.out):
        raise SystemExit(f"{args.model} already has an `{OUTPUT}` output (ood.threshold "
                         f"{meta(model).get('ood.threshold')}, version {meta(model).get('version')}): "
                         "ood.py adds it to a model straight from export.py; re-export it, or take "
                         "the earlier file from git. (--study without --out evaluates this model.)")
    if not has_ood and not (args.out and args.version):
        raise SystemExit("--out and --version are required to add the score")
    if not has_ood and any(k.startswith("ood.") for k in meta(model)):
        raise SystemExit(f"{args.model} has ood.* metadata but no `{OUTPUT}` output: not touching it")

    ids, images, male, age, is_val = train.load_dataset(args.data, args.split, os.path.join(HERE, "runs"))
    print(f"dataset: {len(images)} images, {int(is_val.sum())} validation", flush=True)
    if not has_ood:
        build(args, model, ids, images, male, age, is_val)
    if args.study:
        study(args, args.model if has_ood else args.out, ids, images, male, age, is_val)


if __name__ == "__main__":
    main()
