#!/usr/bin/env python3
"""Writes the tiny `torch.save` fixtures for tests/torch_pickle.rs to tests/fixtures/torch/.

Every `<name>.pt` is written by `torch.save` itself (default protocol unless the name says
otherwise); `expected/<name>.safetensors` holds the same tensors, flattened with the reader's
documented key rules (nested dicts/lists -> dotted keys, non-tensor leaves skipped) and made
contiguous, so the Rust test can compare keys, dtypes, shapes and bytes exactly.

Hand-made files:
  * malicious.pt / malicious_p4.pt: torch-style zips whose data.pkl calls `posix.system` /
    `builtins.exec` through REDUCE. They are written as raw pickle bytes and never unpickled here
    (only disassembled with pickletools). Loading them with Python's pickle WOULD run a shell
    command, so do not `torch.load(..., weights_only=False)` them.
  * big_endian.pt: dtypes.pt rewritten with byteorder "big" and byte-swapped storages.
  * compressed.pt: dtypes.pt re-zipped with DEFLATE (torch never does this; must be refused).

Usage: /work/venv/bin/python tools/make_torch_fixtures.py [--gan path/to/weights.tar OUT.safetensors]
The optional --gan mode writes the flattened `netG_state_dict` of gan-face-generate's weights
as safetensors (for the opt-in test driven by SYNFER_GAN_WEIGHTS / SYNFER_GAN_EXPECTED).
"""

import collections
import io
import os
import pickle
import pickletools
import sys
import zipfile

import torch
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.manual_seed(0)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch")
EXPECTED = os.path.join(ROOT, "expected")


def flatten(obj, prefix=""):
    """The Rust reader's key rules."""
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (torch.Tensor, dict, list, tuple)):
                assert isinstance(k, (str, int)) and not isinstance(k, bool), k
                out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            if isinstance(v, (torch.Tensor, dict, list, tuple)):
                out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def save(name, obj, protocol=None, expected_from=None):
    path = os.path.join(ROOT, name + ".pt")
    if protocol is None:
        torch.save(obj, path)
    else:
        torch.save(obj, path, pickle_protocol=protocol)
    flat = flatten(obj if expected_from is None else expected_from)
    tensors = {k: v.detach().clone().contiguous() for k, v in flat.items()}
    save_file(tensors, os.path.join(EXPECTED, name + ".safetensors"))
    # Round trip through torch itself: its safe loader where it can (it lacks FRAME, so the
    # protocol 4/5 files -- written just above from our own tensors -- use the plain one).
    back = flatten(torch.load(path, weights_only=protocol is None))
    assert back.keys() == flat.keys(), (name, back.keys(), flat.keys())
    for k in flat:
        assert torch.equal(back[k], flat[k]), (name, k)
    return path


def module_from_keys(shapes):
    """An nn.Module tree whose state_dict() has exactly these keys (with `_metadata`)."""
    root = torch.nn.Module()
    for key, shape in shapes.items():
        *parts, leaf = key.split(".")
        m = root
        for p in parts:
            if not hasattr(m, p):
                m.add_module(p, torch.nn.Module())
            m = getattr(m, p)
        m.register_parameter(leaf, torch.nn.Parameter(torch.randn(*shape)))
    return root


def attn_processors():
    # FineFace's attn_processors.ckpt: AU cross-attention projections per attn2 processor.
    keys = {}
    for block in ["down_blocks.0.attentions.0", "mid_block.attentions.0", "up_blocks.1.attentions.2"]:
        base = f"{block}.transformer_blocks.0.attn2.processor"
        keys[f"{base}.au_to_k.weight"] = (8, 12)
        keys[f"{base}.au_to_v.weight"] = (8, 12)
    sd = module_from_keys(keys).state_dict()
    save("attn_processors", sd)


def au_encoder():
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.au_encoder = torch.nn.Linear(12, 16)

    save("au_encoder", Wrapper().state_dict())


def dtypes():
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(2, 3)
    sd["f16"] = torch.randn(3, 2).half()
    sd["bf16"] = torch.randn(5).bfloat16()
    sd["f64"] = torch.randn(2, 2, dtype=torch.float64)
    sd["i64"] = torch.tensor([-3, 0, 2**40, -(2**62)], dtype=torch.int64)
    sd["i32"] = torch.tensor([[1, -2], [3, 2**31 - 1]], dtype=torch.int32)
    sd["i16"] = torch.tensor([-7, 300], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 9], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.randn(4))  # _rebuild_parameter
    save("dtypes", sd)
    return sd


def views():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    half = torch.randn(3, 5).half()
    shared = torch.randn(3, 4)
    sd = {
        "base": base,
        "transposed": base.t(),  # non-contiguous, same storage
        "slice": base[1:3, 2:5],  # storage offset + row stride
        "column": base[:, 4],  # stride 6
        "scalar_view": base[2, 3],  # 0-d with offset
        "expanded": torch.arange(3, dtype=torch.float32).expand(2, 3),  # stride 0
        "half_t": half.t(),  # 2-byte elements, strided
        "shared_a": shared,  # the same tensor object twice (memo)
        "shared_b": shared,
        "shared_row": shared[1],  # another view of the same storage
        "flipped_perm": base.reshape(2, 2, 6).permute(2, 0, 1),
    }
    save("views", sd)


def nested():
    gen = torch.nn.Module()
    gen.main = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(4, 8, 4, 1, 0, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(True),
        torch.nn.ConvTranspose2d(8, 3, 4, 2, 1, bias=False),
        torch.nn.Tanh(),
    )
    opt = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    out = gen.main(torch.randn(2, 4, 1, 1))  # train mode: updates running stats
    out.mean().backward()
    opt.step()
    ckpt = {
        "netG_state_dict": gen.state_dict(),
        "optimizerG_state_dict": opt.state_dict(),
        "epoch": 3,
        "losses": [0.5, 0.25],
        "note": "tiny DCGAN-shaped checkpoint",
    }
    save("nested", ckpt)


def protocols(sd):
    save("protocol4", sd, protocol=4)
    save("protocol5", sd, protocol=5)


def write_zip(path, files, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in files:
            z.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), data, compress_type=compression)


def malicious():
    # {'w': 1, 'evil': posix.system('echo pwned')} -- raw protocol-2 bytes, never unpickled here.
    cmd = b"echo pwned"
    p2 = (
        b"\x80\x02}q\x00(X\x01\x00\x00\x00wq\x01K\x01X\x04\x00\x00\x00evilq\x02"
        b"cposix\nsystem\nq\x03X" + len(cmd).to_bytes(4, "little") + cmd + b"q\x04\x85q\x05Rq\x06u."
    )
    # builtins.exec via STACK_GLOBAL (protocol 4 framing).
    body = (
        b"\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94\x8c\x0bprint('hi')\x94\x85\x94R\x94."
    )
    p4 = b"\x80\x04\x95" + len(body).to_bytes(8, "little") + body
    for name, pkl in [("malicious", p2), ("malicious_p4", p4)]:
        out = io.StringIO()
        pickletools.dis(pkl, out=out)  # validates the opcode stream without executing it
        write_zip(
            os.path.join(ROOT, name + ".pt"),
            [(f"{name}/data.pkl", pkl), (f"{name}/byteorder", b"little"), (f"{name}/version", b"3\n")],
        )


def rezip(src, dst, big_endian=False, compression=zipfile.ZIP_STORED, dtypes=None):
    with zipfile.ZipFile(src) as z:
        files = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    prefix = os.path.basename(dst)[: -len(".pt")]
    out = []
    for name, data in files:
        rest = name.split("/", 1)[1]
        if big_endian and rest == "byteorder":
            data = b"big"
        elif big_endian and rest.startswith("data/"):
            size = dtypes[rest[len("data/"):]]
            data = b"".join(data[i : i + size][::-1] for i in range(0, len(data), size))
        out.append((f"{prefix}/{rest}", data))
    write_zip(dst, out, compression)


def storage_element_sizes(path):
    """storage key -> element size, read from the persistent ids by a restricted unpickler
    (only OrderedDict and torch names resolve; tensors come back as None)."""
    sizes = {"FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "DoubleStorage": 8,
             "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
             "ByteStorage": 1, "BoolStorage": 1}
    result = {}

    class Capture(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch" and name in sizes:
                return name
            if module == "torch._utils" and name.startswith("_rebuild_"):
                return lambda *args: None
            raise pickle.UnpicklingError(f"{module}.{name}")

        def persistent_load(self, pid):
            result[pid[2]] = sizes[pid[1]]

    with zipfile.ZipFile(path) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    Capture(io.BytesIO(pkl)).load()
    return result


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--gan":
        ckpt = torch.load(sys.argv[2], map_location="cpu", weights_only=True)
        flat = flatten(ckpt["netG_state_dict"])
        save_file({k: v.contiguous() for k, v in flat.items()}, sys.argv[3])
        print(f"wrote {len(flat)} tensors to {sys.argv[3]}")
        return
    os.makedirs(EXPECTED, exist_ok=True)
    attn_processors()
    au_encoder()
    sd = dtypes()
    views()
    nested()
    protocols(sd)
    malicious()
    dt = os.path.join(ROOT, "dtypes.pt")
    rezip(dt, os.path.join(ROOT, "big_endian.pt"), big_endian=True, dtypes=storage_element_sizes(dt))
    rezip(dt, os.path.join(ROOT, "compressed.pt"), compression=zipfile.ZIP_DEFLATED)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"fixtures in {os.path.normpath(ROOT)}: {total} bytes")


if __name__ == "__main__":
    main()
