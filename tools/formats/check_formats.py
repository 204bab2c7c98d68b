"""Reads synfer's output with the tools people use, as a test of the formats (not run by
`cargo test`: it needs Python packages; see tools/README.md).

    python tools/formats/check_formats.py OUT_WDS [OUT_PNG.png]

OUT_WDS: a `synfer synth --format webdataset` folder. Its tars are read with `webdataset`
(WebDataset, decoding KEY.png / KEY.json / KEY.cls) and with Hugging Face `datasets`
(`load_dataset("webdataset", ...)`); both must give every kept item of `manifest.jsonl` once, with
the class index of its label and its metadata record. OUT_PNG: a PNG written by `synfer
generate`; its `parameters` text is read with `sd-parsers` (an AUTOMATIC1111 metadata reader) and
must give back the prompt, negative prompt, steps, sampler, CFG scale, seed and model of the
record inside it.
"""

import glob
import json
import os
import sys

CLASSES = ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"]


def check_webdataset(out: str) -> None:
    import webdataset as wds
    from datasets import load_dataset

    manifest = [json.loads(l) for l in open(os.path.join(out, "manifest.jsonl"))]
    kept = {r["id"]: r for r in manifest if r["file_name"]}
    tars = sorted(glob.glob(os.path.join(out, "*.tar")))
    assert tars, f"no tar in {out}"
    seen = {}
    for sample in wds.WebDataset(tars, shardshuffle=False).decode("pil"):
        key = sample["__key__"]
        assert key not in seen, f"{key} twice"
        meta, cls, img = sample["json"], sample["cls"], sample["png"]
        assert CLASSES[cls] == meta["label"] == kept[key]["label"], key
        assert img.size[0] > 0 and meta["file_name"] == f"{key}.png"
        seen[key] = cls
    assert set(seen) == set(kept), f"webdataset read {len(seen)} items, manifest keeps {len(kept)}"
    ds = load_dataset("webdataset", data_files={"train": tars}, split="train")
    assert len(ds) == len(kept), (len(ds), len(kept))
    for row in ds:
        assert CLASSES[row["cls"]] == row["json"]["label"] == kept[row["__key__"]]["label"]
    print(f"webdataset: {len(tars)} tars, {len(seen)} items read by webdataset and datasets")


def check_png(path: str) -> None:
    from PIL import Image
    from sd_parsers import ParserManager

    record = json.loads(Image.open(path).info["synfer"])
    info = ParserManager().parse(path)
    assert info is not None, "sd-parsers found no metadata"
    sampler = info.samplers[0]
    params = sampler.parameters
    req = record["request"]
    assert sampler.prompts[0].value == record["prompt_used"]
    negative = req.get("negative_prompt") or ""
    assert (sampler.negative_prompts[0].value if sampler.negative_prompts else "") == negative
    assert int(params["steps"]) == req["steps"]
    assert float(params["cfg_scale"]) == req["guidance_scale"]
    assert int(params["seed"]) == record["seed"]
    assert sampler.model.name == os.path.basename(record["model"])
    print(f"png: sd-parsers reads {sampler.name}, {params} from {path}")


if __name__ == "__main__":
    check_webdataset(sys.argv[1])
    if len(sys.argv) > 2:
        check_png(sys.argv[2])
