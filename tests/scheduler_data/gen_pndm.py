"""diffusers `PNDMScheduler` reference cases for tests/scheduler.rs (`pndm_reference_cases`).

Run from the repository root with diffusers 0.42.1 / torch 2.15.0 (see tools/requirements.txt):

    python tests/scheduler_data/gen_pndm.py

Reads the shared `sample`/`noise` ([1, 4, 2, 2]) from tests/fixtures/reference/schedulers.safetensors
and writes tests/scheduler_data/pndm_cases.json (configs, timesteps, expected errors) and
tests/scheduler_data/pndm_cases.safetensors (`<case>.prev_sample`, and for the non-matrix cases
`<case>.pred_original_sample`, each `[len(timesteps), 1, 4, 2, 2]`).

Each case builds `Source.from_config(json.loads(config_json))`, optionally converts it with
`Target.from_config(source.config)` (`convert_to`), calls `set_timesteps(num_inference_steps)` and
runs the shared fake-model loop over `scheduler.timesteps` (one `step` per entry, repeats
included):

    x = sample * init_noise_sigma
    for t in timesteps:
        xin = scale_model_input(x, t)
        model_output = xin * (float(t) / (float(t) + 1)) + 0.3 * noise
        x = step(model_output, t, x).prev_sample

The model output is not stored: the Rust test recomputes it with the same float32 operations.
PNDM returns no `pred_original_sample`; the stored one is synfer's convention, the x0 implied by
the raw model output and the step's input sample at `alphas_cumprod[t]`.
`start_index` cases run only `timesteps[start_index:]` (img2img style, right after
`set_timesteps`); their tensors hold those steps only. Cases where diffusers raises record `error` (the exception) and `error_at` (`set_timesteps` or
`step`).
"""

import itertools
import json

import torch
import diffusers
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ref = load_file("tests/fixtures/reference/schedulers.safetensors")
SAMPLE, NOISE = ref["sample"], ref["noise"]
assert SAMPLE.shape == (1, 4, 2, 2)

SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
PNDM_SD15 = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}
SD2_DPM = open("tests/scheduler_data/sd2_dpm_scheduler_config.json").read()
PNDM, DDIM, DPM, EULER = "PNDMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"
LINEAR_BETAS = [0.0001 + i * (0.02 - 0.0001) / 999 for i in range(1000)]
STEPS = (1, 2, 3, 4, 7, 25, 50)
PRED_SHORT = {"epsilon": "eps", "v_prediction": "v"}

# (name, class of config_json, config, steps, convert_to, store pred_original_sample)
CASES = []
for skip, pred, spacing, offset, one, n in itertools.product(
    (True, False), ("epsilon", "v_prediction"), ("leading", "linspace", "trailing"), (0, 1), (True, False), STEPS
):
    name = f"{'plms' if skip else 'prk'}-{PRED_SHORT[pred]}-{spacing}-off{offset}-{'one' if one else 'a0'}-n{n}"
    config = {**SD, "skip_prk_steps": skip, "prediction_type": pred, "timestep_spacing": spacing,
              "steps_offset": offset, "set_alpha_to_one": one}
    CASES.append((name, PNDM, config, n, None, False))
MATRIX = len(CASES)

for n in (1, 2, 3, 4, 5, 7, 10, 25, 50):
    CASES.append((f"sd15-n{n}", PNDM, PNDM_SD15, n, None, True))
CASES += [
    # class defaults: linear betas, PRK warm-up, leading, no offset
    ("defaults-n4", PNDM, {}, 4, None, True),
    ("defaults-n10", PNDM, {}, 10, None, True),
    ("defaults-n3", PNDM, {}, 3, None, True),  # diffusers fails: PRK needs 4 steps
    ("cosine-plms", PNDM, {"beta_schedule": "squaredcos_cap_v2", "skip_prk_steps": True}, 12, None, True),
    ("cosine-prk-v", PNDM, {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}, 12, None, True),
    ("trained-betas-prk", PNDM, {"trained_betas": LINEAR_BETAS}, 8, None, True),
    ("linear-plms-trailing", PNDM, {"beta_schedule": "linear", "skip_prk_steps": True, "timestep_spacing": "trailing"}, 9, None, True),
    ("train500-prk-linspace", PNDM, {**SD, "num_train_timesteps": 500, "timestep_spacing": "linspace"}, 9, None, True),
    ("train500-plms-leading-off2", PNDM, {**SD, "num_train_timesteps": 500, "skip_prk_steps": True, "steps_offset": 2}, 9, None, True),
    ("prk-odd-ratio", PNDM, {**SD, "steps_offset": 1}, 6, None, True),  # ratio 166: half step 83
    # keys PNDM does not take are ignored, as diffusers' from_config drops them
    ("zero-snr-ignored", PNDM, {**SD, "rescale_betas_zero_snr": True, "skip_prk_steps": True, "clip_sample": True, "thresholding": True}, 6, None, True),
    ("sample-prediction", PNDM, {**SD, "prediction_type": "sample"}, 6, None, True),  # diffusers fails at step
    # with_kind conversions: Target.from_config(Source.from_config(config_json).config)
    ("ddim-to-pndm", DDIM, {**SD, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "v_prediction"}, 10, PNDM, True),
    ("ddim-defaults-to-pndm", DDIM, {**SD}, 10, PNDM, True),  # DDIM's set_alpha_to_one default does not carry
    ("sd2dpm-to-pndm", DPM, SD2_DPM, 10, PNDM, True),
    ("euler-zero-snr-to-pndm", EULER, {**SD, "rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "use_karras_sigmas": True}, 7, PNDM, True),
    ("euler-sample-to-pndm", EULER, {**SD, "prediction_type": "sample"}, 7, PNDM, True),  # fails at step
    ("sd15-to-pndm", PNDM, PNDM_SD15, 10, PNDM, True),
    ("prk-v-to-ddim", PNDM, {**SD, "prediction_type": "v_prediction", "set_alpha_to_one": True, "timestep_spacing": "trailing"}, 10, DDIM, True),
]
# Runs that start mid-schedule right after set_timesteps (as img2img does): diffusers' counter
# starts at 0 there, whatever the index.
STARTS = [
    ("sd15-n10-from3", PNDM, PNDM_SD15, 10, None, True, 3),
    ("sd15-n10-from1", PNDM, PNDM_SD15, 10, None, True, 1),
    ("prk-n10-from5", PNDM, {**SD, "steps_offset": 1}, 10, None, True, 5),
    ("prk-v-n10-from14", PNDM, {**SD, "prediction_type": "v_prediction"}, 10, None, True, 14),
]


def run(name, src_cls, config, steps, convert_to, store_pred, start=0):
    text = config if isinstance(config, str) else json.dumps({"_class_name": src_cls, **config})
    sch = getattr(diffusers, src_cls).from_config(json.loads(text))
    if convert_to is not None:
        sch = getattr(diffusers, convert_to).from_config(sch.config)
    case = {"name": name, "config_json": text, "convert_to": convert_to, "num_inference_steps": steps,
            "class": type(sch).__name__}
    try:
        sch.set_timesteps(steps)
    except Exception as e:  # noqa: BLE001
        return {**case, "error": f"{type(e).__name__}: {e}", "error_at": "set_timesteps"}, {}
    x = SAMPLE * sch.init_noise_sigma
    prevs, preds = [], []
    try:
        for t in sch.timesteps[start:]:
            xin = sch.scale_model_input(x, t)
            model_output = xin * (float(t) / (float(t) + 1)) + 0.3 * NOISE
            out = sch.step(model_output, t, x)
            pred = getattr(out, "pred_original_sample", None)
            if pred is None:  # PNDM: synfer's convention
                a = sch.alphas_cumprod[int(t)]
                if sch.config.prediction_type == "v_prediction":
                    pred = a**0.5 * x - (1 - a) ** 0.5 * model_output
                else:
                    pred = (x - (1 - a) ** 0.5 * model_output) / a**0.5
            x = out.prev_sample
            prevs.append(x.clone())
            preds.append(pred.clone())
    except Exception as e:  # noqa: BLE001
        return {**case, "error": f"{type(e).__name__}: {e}", "error_at": "step"}, {}
    full = {k: v for k, v in dict(sch.config).items() if not k.startswith("_")}
    case.update(
        timesteps=[int(v) for v in sch.timesteps],
        init_noise_sigma=float(sch.init_noise_sigma),
        full_config=None if store_pred is False else json.dumps({"_class_name": type(sch).__name__, **full}),
        has_pred_original_sample=store_pred,
        start_index=start,
    )
    tensors = {f"{name}.prev_sample": torch.stack(prevs).contiguous()}
    if store_pred:
        tensors[f"{name}.pred_original_sample"] = torch.stack(preds).contiguous()
    return case, tensors


cases, tensors = [], {}
for c in CASES + STARTS:
    case, ts = run(*c)
    cases.append(case)
    tensors.update(ts)
    print(case["name"], case.get("timesteps", case.get("error"))[:8] if "timesteps" in case else case["error"], flush=True)
assert len({c["name"] for c in cases}) == len(cases)
save_file(tensors, "tests/scheduler_data/pndm_cases.safetensors", metadata={"generator": "tests/scheduler_data/gen_pndm.py"})
with open("tests/scheduler_data/pndm_cases.json", "w") as f:
    json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__, "sample_shape": list(SAMPLE.shape),
               "model_noise_weight": 0.3, "matrix_cases": MATRIX, "cases": cases}, f, separators=(",", ":"))
    f.write("\n")
print(len(cases), "cases,", sum(1 for c in cases if "error" in c), "expected errors,", len(tensors), "tensors")
