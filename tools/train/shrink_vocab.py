#!/usr/bin/env python3
"""Shrink a model's CLIP BPE vocabulary to the tokens it can use, keeping its outputs.

synfer-tiny's text encoder is 2 layers of width 128, but its token embedding holds all 49,408
CLIP tokens (6.3 M of its 6.7 M parameters, 12.6 MB in fp16), although the captions it was
trained on use a few hundred of them and every other row is still at its random
initialisation. This script keeps

  * the 512 byte tokens (with and without `</w>`) and the two specials, so that *any* text still
    tokenizes (unknown words fall back to smaller pieces, as BPE always can);
  * the first `--keep-merges` merges of CLIP's list (the most frequent pieces of English);
  * every merge that the words of the `--corpus` files need (the training captions, prompts),

renumbers them in CLIP's order, and gathers the matching rows of the embedding. BPE applies the
lowest-ranked merge among the pairs present; a word whose whole merge chain is kept therefore
tokenizes exactly as before, and its ids map one to one, so the text encoder's output on such
text is unchanged bit for bit (checked below with transformers' CLIPTokenizer and
CLIPTextModel on every corpus line).

    .venv/bin/python tools/train/shrink_vocab.py models/synfer-tiny --corpus DATA/metadata.jsonl \
        --corpus-text prompts.txt [--keep-merges 8000] [--out DIR]

Writes the model folder in place (or to --out): tokenizer/vocab.json, merges.txt,
text_encoder/model.safetensors and config.json (vocab_size, bos/eos/pad ids).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import regex
import torch
from safetensors.torch import load_file, save_file

# CLIP's pre-tokenizer (transformers' CLIPTokenizer.pat), on lowercased text.
PAT = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE = bytes_to_unicode()


def word_merges(word: str, ranks: dict[tuple[str, str], int]) -> list[int]:
    """Ranks of the merges CLIP's BPE applies to `word` (already byte-encoded)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    used = []
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1 << 62), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        r, _ = min(pairs)
        if r == 1 << 62:
            break
        used.append(r)
        a, b = next((parts[i], parts[i + 1]) for rr, i in pairs if rr == r)
        out, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                out.append(a + b)
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return used


def corpus_lines(args) -> list[str]:
    lines = []
    for p in args.corpus or []:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line)["caption"])
    for p in args.corpus_text or []:
        lines += [line for line in Path(p).read_text().splitlines() if line.strip()]
    return lines


def words_of(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text).strip().lower()
    return ["".join(BYTE[b] for b in tok.encode("utf-8")) for tok in PAT.findall(text) if tok not in (BOS, EOS)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--corpus", action="append", help="metadata.jsonl whose captions must tokenize unchanged")
    ap.add_argument("--corpus-text", action="append", help="text file, one prompt per line")
    ap.add_argument("--keep-merges", type=int, default=8000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    src = args.model
    out = args.out or src
    if out != src:
        shutil.copytree(src, out, dirs_exist_ok=True)

    vocab = json.loads((src / "tokenizer/vocab.json").read_text())
    merges_lines = (src / "tokenizer/merges.txt").read_text().split("\n")
    header, merges = merges_lines[0], [tuple(m.split()) for m in merges_lines[1:] if m]
    ranks = {m: i for i, m in enumerate(merges)}
    lines = corpus_lines(args)

    keep = set(range(min(args.keep_merges, len(merges))))
    for line in lines:
        for w in words_of(line):
            keep.update(word_merges(w, ranks))
    kept = [merges[r] for r in sorted(keep)]
    byte_tokens = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i < 512]
    tokens = byte_tokens + ["".join(m) for m in kept] + [BOS, EOS]
    assert len(set(tokens)) == len(tokens), "duplicate token"
    old_ids = torch.tensor([vocab[t] for t in tokens])
    new_vocab = {t: i for i, t in enumerate(tokens)}
    print(f"vocabulary {len(vocab)} -> {len(new_vocab)} ({len(kept)} merges: {min(args.keep_merges, len(merges))} "
          f"most frequent + {len(kept) - min(args.keep_merges, len(merges))} for {len(lines)} corpus lines)")

    # Reference outputs before the change (on the source folder).
    from transformers import CLIPTextModel, CLIPTokenizer

    tok_old = CLIPTokenizer.from_pretrained(src / "tokenizer")
    te_old = CLIPTextModel.from_pretrained(src / "text_encoder", torch_dtype=torch.float32).eval()
    probe = sorted(set(lines))[:2000] + ["", "a photo of a surprised woman", "a photo of a face"]
    with torch.no_grad():
        ids_old = tok_old(probe, padding="max_length", truncation=True, return_tensors="pt").input_ids
        ref = te_old(ids_old).last_hidden_state

    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    (out / "tokenizer/vocab.json").write_text(json.dumps(new_vocab, ensure_ascii=False))
    (out / "tokenizer/merges.txt").write_text("\n".join([header] + [" ".join(m) for m in kept]) + "\n")
    sd = load_file(src / "text_encoder/model.safetensors")
    key = next(k for k in sd if k.endswith("token_embedding.weight"))
    sd[key] = sd[key][old_ids].contiguous()
    cfg = json.loads((src / "text_encoder/config.json").read_text())
    cfg.update(vocab_size=len(tokens), bos_token_id=new_vocab[BOS], eos_token_id=new_vocab[EOS],
               pad_token_id=new_vocab[EOS])
    save_file(sd, out / "text_encoder/model.safetensors", metadata={"format": "pt"})
    (out / "text_encoder/config.json").write_text(json.dumps(cfg, indent=2) + "\n")

    tok_new = CLIPTokenizer.from_pretrained(out / "tokenizer")
    te_new = CLIPTextModel.from_pretrained(out / "text_encoder", torch_dtype=torch.float32).eval()
    with torch.no_grad():
        ids_new = tok_new(probe, padding="max_length", truncation=True, return_tensors="pt").input_ids
        got = te_new(ids_new).last_hidden_state
    assert torch.equal(old_ids[ids_new], ids_old), "a corpus line tokenizes differently"
    assert torch.equal(got, ref), f"text encoder output changed: {(got - ref).abs().max()}"
    print(f"checked {len(probe)} prompts: same tokens, text encoder output identical")


if __name__ == "__main__":
    main()
