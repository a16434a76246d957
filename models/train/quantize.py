"""Measures int8 post-training quantization of an exported model on the validation split.

    python quantize.py --data ../../../shared/data/rsna-100px --model ../boneage-lite0.onnx \
        --out-dir /tmp/boneage-int8

Static quantization with ONNX Runtime's tool: weights int8 per output channel, activations
uint8 with ranges calibrated on training images (never validation ones). Writes two files,
one per ONNX quantized form, both with the f32 model's metadata so `boneage` can load them:

- `qoperator.onnx`: QLinearConv / QLinearMatMul nodes (integer kernels in tract and ORT);
- `qdq.onnx`: QuantizeLinear/DequantizeLinear pairs around float ops (ORT fuses them).

Prints the one-view validation MAE of each against the f32 model (ONNX Runtime, CPU), so
the decision rests on the issue's budget: at most 0.2 months worse than f32.
"""
import argparse
import csv
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image


def load(data, ident, mean, std):
    img = np.asarray(Image.open(os.path.join(data, "images", ident + ".png")).convert("L"),
                     dtype=np.float32) / 255.0
    return ((img - mean) / std)[None, None].astype(np.float32)


def is_male(row):
    return np.array([[1.0 if row["male"].strip().lower() == "true" else 0.0]], np.float32)


class Calibration(CalibrationDataReader):
    def __init__(self, data, rows, mean, std):
        self.items = iter([{"image": load(data, r["id"], mean, std), "male": is_male(r)}
                           for r in rows])

    def get_next(self):
        return next(self.items, None)


def mae(path, data, rows, mean, std):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    preds = np.array([float(sess.run(None, {"image": load(data, r["id"], mean, std),
                                            "male": is_male(r)})[0].ravel()[0]) for r in rows])
    ages = np.array([float(r["boneage"]) for r in rows])
    return float(np.abs(preds - ages).mean()), preds


def copy_metadata(src, dst):
    meta = {p.key: p.value for p in onnx.load(src).metadata_props}
    model = onnx.load(dst)
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--split", default=os.path.join(os.path.dirname(__file__), "split.csv"))
    ap.add_argument("--calibration-images", type=int, default=200)
    ap.add_argument("--method", default="minmax", choices=["minmax", "percentile", "entropy"])
    ap.add_argument("--ops", default="Conv,Clip,Relu,MatMul",
                    help="op types to quantize. Not Add or Gemm: they become QLinearAdd and "
                         "QGemm, ONNX Runtime extensions tract cannot load. Clip and Relu "
                         "let each convolution absorb its activation (without them the "
                         "convolution outputs are calibrated before clipping: MAE 16.7)")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    meta = {p.key: p.value for p in onnx.load(args.model).metadata_props}
    mean, std = float(meta["preprocess.mean"]), float(meta["preprocess.std"])
    split = {r["id"]: r["split"] for r in csv.DictReader(open(args.split))}
    rows = list(csv.DictReader(open(os.path.join(args.data, "labels.csv"))))
    val = [r for r in rows if split.get(r["id"]) == "val"]
    train = [r for r in rows if split.get(r["id"]) == "train"]
    rng = np.random.default_rng(20171)
    calib = [train[i] for i in rng.choice(len(train), args.calibration_images, replace=False)]

    pre = os.path.join(args.out_dir, "preprocessed.onnx")
    quant_pre_process(args.model, pre)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[args.method]
    base_mae, base = mae(args.model, args.data, val, mean, std)
    out = {"n": len(val), "calibration_images": len(calib), "method": args.method,
           "ops": args.ops,
           "f32": {"mae": round(base_mae, 3), "bytes": os.path.getsize(args.model)}}
    for name, fmt in (("qoperator", QuantFormat.QOperator), ("qdq", QuantFormat.QDQ)):
        path = os.path.join(args.out_dir, name + ".onnx")
        quantize_static(pre, path, Calibration(args.data, calib, mean, std), quant_format=fmt,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=method,
                        op_types_to_quantize=args.ops.split(","))
        copy_metadata(args.model, path)
        q_mae, q = mae(path, args.data, val, mean, std)
        out[name] = {"mae": round(q_mae, 3), "mae_change": round(q_mae - base_mae, 3),
                     "mean_abs_diff_vs_f32": round(float(np.abs(q - base).mean()), 3),
                     "max_abs_diff_vs_f32": round(float(np.abs(q - base).max()), 3),
                     "bytes": os.path.getsize(path)}
        print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
