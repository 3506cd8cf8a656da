#!/usr/bin/env python3
"""Export parva's model set as TorchScript with random weights, plus KServe v2 metadata.

    python scripts/export_models.py --meta-only                # models/<name>.json only (no torch needed)
    python scripts/export_models.py [--out models] [MODEL...]  # TorchScript + metadata (needs torch,
                                                               # and torchvision for the CNNs)
    python scripts/export_models.py --fixtures                 # the tiny test fixtures in models/fixtures/

The model set is ParvaGPU's: torchvision resnet50/101/152, vgg16/19, densenet121/169/201,
inception_v3, mobilenet_v2 (weights=None: random), and a BERT-large sequence classifier built
from torch.nn (24 layers, hidden 1024, 16 heads, FFN 4096, vocab 30522, 2 classes; sequence
length 128). Names follow the profile files (`inceptionv3`, `mobilenetv2`). Large .pt files are
never committed (.gitignore); the metadata files are.

Fixtures (committed, a few KB, deterministic so tests can compute expected outputs themselves):
- `linear`: input__0 FP32 [-1, 4] -> output__0 FP32 [-1, 3], y = x W^T + b with
  W[i][j] = (i - j) / 4 (i < 3, j < 4) and b[i] = i - 1.
- `two_io`: ids INT64 [-1, 3] and scale FP32 [-1, 1] -> scaled FP32 [-1, 1] = sum(ids) * scale
  and total INT64 [-1, 1] = sum(ids).
"""
import argparse
import json
import os
import sys

IMAGE = [-1, 3, 224, 224]
CLASSES = [-1, 1000]
SEQ = 128

MODELS = {
    "resnet50": ("resnet50", IMAGE),
    "resnet101": ("resnet101", IMAGE),
    "resnet152": ("resnet152", IMAGE),
    "vgg16": ("vgg16", IMAGE),
    "vgg19": ("vgg19", IMAGE),
    "densenet121": ("densenet121", IMAGE),
    "densenet169": ("densenet169", IMAGE),
    "densenet201": ("densenet201", IMAGE),
    "inceptionv3": ("inception_v3", [-1, 3, 299, 299]),
    "mobilenetv2": ("mobilenet_v2", IMAGE),
    "bert": (None, None),
}


def tensor(name, datatype, shape):
    return {"name": name, "datatype": datatype, "shape": shape}


def metadata(name):
    if name == "bert":
        return {
            "name": "bert",
            "platform": "pytorch_torchscript",
            "description": "BERT-large sequence classifier (24 layers, hidden 1024, 16 heads), random weights; "
            "token ids and attention mask (1 = real token) of length 128",
            "inputs": [tensor("input_ids", "INT64", [-1, SEQ]), tensor("attention_mask", "INT64", [-1, SEQ])],
            "outputs": [tensor("logits", "FP32", [-1, 2])],
        }
    tv_name, shape = MODELS[name]
    return {
        "name": name,
        "platform": "pytorch_torchscript",
        "description": f"torchvision {tv_name}, random weights; NCHW float image",
        "inputs": [tensor("input__0", "FP32", shape)],
        "outputs": [tensor("output__0", "FP32", CLASSES)],
    }


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def bert_large():
    import torch

    class BertClassifier(torch.nn.Module):
        def __init__(self, vocab=30522, hidden=1024, layers=24, heads=16, ffn=4096, classes=2, max_len=512):
            super().__init__()
            self.tok = torch.nn.Embedding(vocab, hidden)
            self.pos = torch.nn.Embedding(max_len, hidden)
            self.typ = torch.nn.Embedding(2, hidden)
            self.norm = torch.nn.LayerNorm(hidden, eps=1e-12)
            layer = torch.nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, activation="gelu", batch_first=True)
            self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.pool = torch.nn.Linear(hidden, hidden)
            self.head = torch.nn.Linear(hidden, classes)
            # A buffer, not torch.arange in forward: tracing records arange's device as a constant
            # (cpu), and the traced model then fails on CUDA with a device mismatch.
            self.register_buffer("position_ids", torch.arange(max_len).unsqueeze(0), persistent=False)

        def forward(self, input_ids, attention_mask):
            pos = self.position_ids[:, : input_ids.shape[1]]
            x = self.tok(input_ids) + self.pos(pos) + self.typ(torch.zeros_like(input_ids))
            x = self.encoder(self.norm(x), src_key_padding_mask=attention_mask == 0)
            return self.head(torch.tanh(self.pool(x[:, 0])))

    return BertClassifier()


def export(name, out):
    import torch

    torch.manual_seed(0)
    meta = metadata(name)
    if name == "bert":
        model = bert_large().eval()
        example = (torch.randint(0, 30522, (2, SEQ)), torch.ones(2, SEQ, dtype=torch.int64))
    else:
        import torchvision

        ctor = getattr(torchvision.models, MODELS[name][0])
        kwargs = {"aux_logits": False, "init_weights": False} if name == "inceptionv3" else {}
        model = ctor(weights=None, **kwargs).eval()
        example = (torch.randn([2] + MODELS[name][1][1:]),)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    traced.save(os.path.join(out, f"{name}.pt"))
    write_json(os.path.join(out, f"{name}.json"), meta)
    print(f"exported {name}", file=sys.stderr)


def fixtures(out):
    import torch

    class TwoIO(torch.nn.Module):
        def forward(self, ids: torch.Tensor, scale: torch.Tensor):
            total = ids.sum(dim=1, keepdim=True)
            return total.to(torch.float32) * scale, total

    lin = torch.nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[(i - j) / 4 for j in range(4)] for i in range(3)]))
        lin.bias.copy_(torch.tensor([i - 1.0 for i in range(3)]))
    torch.jit.script(lin.eval()).save(os.path.join(out, "linear.pt"))
    write_json(os.path.join(out, "linear.json"), {
        "name": "linear",
        "platform": "pytorch_torchscript",
        "description": "test fixture: y = x W^T + b, W[i][j] = (i - j) / 4, b[i] = i - 1",
        "inputs": [tensor("input__0", "FP32", [-1, 4])],
        "outputs": [tensor("output__0", "FP32", [-1, 3])],
    })
    torch.jit.script(TwoIO().eval()).save(os.path.join(out, "two_io.pt"))
    write_json(os.path.join(out, "two_io.json"), {
        "name": "two_io",
        "platform": "pytorch_torchscript",
        "description": "test fixture: scaled = sum(ids) * scale, total = sum(ids)",
        "inputs": [tensor("ids", "INT64", [-1, 3]), tensor("scale", "FP32", [-1, 1])],
        "outputs": [tensor("scaled", "FP32", [-1, 1]), tensor("total", "INT64", [-1, 1])],
    })
    print(f"wrote fixtures to {out}", file=sys.stderr)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help=f"models to export (default: all of {', '.join(MODELS)})")
    ap.add_argument("--out", default=os.path.join(root, "models"))
    ap.add_argument("--meta-only", action="store_true", help="write metadata only (no torch needed)")
    ap.add_argument("--fixtures", action="store_true", help="write the test fixtures to <out>/fixtures")
    args = ap.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    os.makedirs(args.out, exist_ok=True)
    if args.fixtures:
        d = os.path.join(args.out, "fixtures")
        os.makedirs(d, exist_ok=True)
        fixtures(d)
        return
    for name in args.models or list(MODELS):
        if args.meta_only:
            write_json(os.path.join(args.out, f"{name}.json"), metadata(name))
        else:
            export(name, args.out)


if __name__ == "__main__":
    main()
