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
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train  # noqa: E402


def feeds(images_u8, male, mean, std):
    """Model inputs for each image, normalized as the contract in the model says."""
    return [{"image": ((img.astype(np.float32) / 255.0 - mean) / std)[None, None],
             "male": np.array([[m]], np.float32)} for img, m in zip(images_u8, male)]


class Calibration(CalibrationDataReader):
    def __init__(self, items):
        self.items = iter(items)

    def get_next(self):
        return next(self.items, None)


def predict(path, items):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.array([float(sess.run(None, x)[0].ravel()[0]) for x in items])


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
    ap.add_argument("--split", default=os.path.join(HERE, "split.csv"))
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
    # The training pipeline's loader: same split, same decoding, decoded once.
    _, images, male, age, is_val = train.load_dataset(args.data, args.split,
                                                      os.path.join(HERE, "runs"))
    val = feeds(images[is_val], male[is_val], mean, std)
    train_idx = np.flatnonzero(~is_val)
    rng = np.random.default_rng(20171)
    pick = rng.choice(train_idx, args.calibration_images, replace=False)
    calib = feeds(images[pick], male[pick], mean, std)

    pre = os.path.join(args.out_dir, "preprocessed.onnx")
    quant_pre_process(args.model, pre)
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[args.method]
    base = predict(args.model, val)
    base_mae = float(np.abs(base - age[is_val]).mean())
    out = {"n": len(val), "calibration_images": len(calib), "method": args.method,
           "ops": args.ops,
           "f32": {"mae": round(base_mae, 3), "bytes": os.path.getsize(args.model)}}
    for name, fmt in (("qoperator", QuantFormat.QOperator), ("qdq", QuantFormat.QDQ)):
        path = os.path.join(args.out_dir, name + ".onnx")
        quantize_static(pre, path, Calibration(calib), quant_format=fmt,
                        per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=method,
                        op_types_to_quantize=args.ops.split(","))
        copy_metadata(args.model, path)
        q = predict(path, val)
        q_mae = float(np.abs(q - age[is_val]).mean())
        out[name] = {"mae": round(q_mae, 3), "mae_change": round(q_mae - base_mae, 3),
                     "mean_abs_diff_vs_f32": round(float(np.abs(q - base).mean()), 3),
                     "max_abs_diff_vs_f32": round(float(np.abs(q - base).max()), 3),
                     "bytes": os.path.getsize(path)}
        print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
