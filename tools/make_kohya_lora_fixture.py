"""Write FineFace's fixture LoRA again in the kohya / sd-scripts key form (what LCM-LoRA and most
shared LoRA files use) and check that diffusers reads it as the same update.

    python tools/make_kohya_lora_fixture.py

Reads tests/fixtures/au/fineface/pytorch_lora_weights.safetensors (PEFT keys
`unet.<module>.lora_A.weight` / `lora_B.weight`, no alpha: scale α/r = 1) and writes
tests/fixtures/au/lora_kohya/pytorch_lora_weights.safetensors with keys
`lora_unet_<module, dots as underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha`, where
α = r/2 and `lora_up` is doubled, so the merged update W + (α/r)·up·down is unchanged while the
alpha path is exercised. diffusers 0.42.1's `StableDiffusionPipeline.lora_state_dict` (its
non-diffusers converter) must give back, module by module, the same `(α/r)·up·down`.
"""

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

SRC = Path("tests/fixtures/au/fineface/pytorch_lora_weights.safetensors")
OUT = Path("tests/fixtures/au/lora_kohya/pytorch_lora_weights.safetensors")

peft = load_file(SRC)
kohya = {}
updates = {}
for key, down in peft.items():
    if not key.endswith(".lora_A.weight"):
        continue
    module = key[len("unet."):-len(".lora_A.weight")]
    up = peft[key.replace(".lora_A.", ".lora_B.")]
    rank = down.shape[0]
    stem = "lora_unet_" + module.replace(".", "_")
    kohya[f"{stem}.lora_down.weight"] = down.contiguous()
    kohya[f"{stem}.lora_up.weight"] = (2 * up).contiguous()
    kohya[f"{stem}.alpha"] = torch.tensor(rank / 2, dtype=torch.float32)
    updates[module] = up @ down
OUT.parent.mkdir(parents=True, exist_ok=True)
save_file(kohya, OUT)

# diffusers' own reading of the kohya file.
state, alphas = StableDiffusionPipeline.lora_state_dict(str(OUT.parent), weight_name=OUT.name)
checked = 0
for module, want in updates.items():
    # diffusers names them in the attention-processor form: `<attn>.processor.to_k_lora.down.weight`
    # (`to_out.0` -> `to_out_lora`), each alpha under `<down key>.alpha`.
    attn, proj = module.rsplit(".", 1) if not module.endswith("to_out.0") else (module[:-len(".to_out.0")], "to_out")
    prefix = f"unet.{attn}.processor.{proj}_lora"
    down, up = state[f"{prefix}.down.weight"], state[f"{prefix}.up.weight"]
    alpha = alphas[f"{prefix}.down.weight.alpha"]
    got = (alpha / down.shape[0]) * (up @ down)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-7), module
    checked += 1
assert checked == len(updates) and checked > 0
print(f"{OUT}: {len(kohya)} tensors, {checked} modules read back by diffusers as the same update")
