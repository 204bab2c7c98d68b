//! LoRA fine-tuning of the UNet's attention projections (`to_q`, `to_k`, `to_v`, `to_out.0`
//! of every `attn1`/`attn2`, diffusers' default targets), PEFT initialisation (`A` uniform
//! `±1/√in`, `B` zero, so training starts from the base model), `α = r`.
//!
//! After training the update is merged into the exported folder and also written as a PEFT
//! LoRA file (`unet.<module>.lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`) that
//! `synfer generate --lora` and diffusers' `load_lora_weights` read.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};

use super::export::KeyMap;
use crate::error::{Error, Result};
use crate::nn::{Linear, LoraDelta};
use crate::tensor::HostTensor;
use crate::unet::UNet2DConditionModel;

/// Attaches rank-`rank` LoRA updates to every attention projection of `unet`.
pub fn attach(unet: &mut UNet2DConditionModel, rank: usize, seed: u64, device: &Device) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (_, attn) in unet.attentions_mut() {
        for layer in [
            &mut attn.to_q,
            &mut attn.to_k,
            &mut attn.to_v,
            &mut attn.to_out,
        ] {
            layer.lora = Some(delta(layer, rank, &mut rng, device));
        }
    }
}

fn delta(layer: &Linear, rank: usize, rng: &mut rand::rngs::StdRng, device: &Device) -> LoraDelta {
    let [d_in, d_out] = layer.weight.dims();
    let bound = 1.0 / (d_in.max(1) as f32).sqrt();
    let uniform = Uniform::new_inclusive(-bound, bound).expect("valid bound");
    let down: Vec<f32> = (0..d_in * rank).map(|_| uniform.sample(rng)).collect();
    LoraDelta {
        down: Param::from_tensor(Tensor::from_data(
            TensorData::new(down, [d_in, rank]),
            device,
        )),
        up: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
        scale: 1.0,
    }
}

/// One trained update, by the path of the weight it modifies.
#[derive(Debug, Clone)]
pub struct Update {
    /// `A`, `[in, r]`.
    pub down: HostTensor,
    /// `B`, `[r, out]`.
    pub up: HostTensor,
}

/// Removes the LoRA tensors from `values` (parameters by path) and adds `A B` to the weights
/// they update (`[in, out]` layout, scale 1); returns the updates by weight path.
pub fn merge(values: &mut BTreeMap<String, HostTensor>) -> Result<BTreeMap<String, Update>> {
    let downs: Vec<String> = values
        .keys()
        .filter(|k| k.ends_with(".lora.down"))
        .cloned()
        .collect();
    let mut updates = BTreeMap::new();
    for down_path in downs {
        let base = down_path.trim_end_matches(".lora.down");
        let missing = |key: String| Error::MissingKey {
            file: "LoRA parameters".into(),
            key,
        };
        let down = values
            .remove(&down_path)
            .ok_or_else(|| missing(down_path.clone()))?;
        let up_path = format!("{base}.lora.up");
        let up = values.remove(&up_path).ok_or_else(|| missing(up_path))?;
        let weight_path = format!("{base}.weight");
        let weight = values
            .get_mut(&weight_path)
            .ok_or_else(|| missing(weight_path.clone()))?;
        let (d_in, r, d_out) = (down.shape[0], down.shape[1], up.shape[1]);
        if weight.shape != [d_in, d_out] || up.shape[0] != r {
            return Err(Error::ShapeMismatch {
                file: "LoRA parameters".into(),
                key: weight_path,
                expected: vec![d_in, d_out],
                found: weight.shape.clone(),
            });
        }
        for i in 0..d_in {
            for o in 0..d_out {
                let mut acc = 0f32;
                for k in 0..r {
                    acc += down.data[i * r + k] * up.data[k * d_out + o];
                }
                weight.data[i * d_out + o] += acc;
            }
        }
        updates.insert(weight_path, Update { down, up });
    }
    Ok(updates)
}

/// The updates as a PEFT LoRA file's tensors for component `prefix` (`unet`): keys from
/// `map` (the traced checkpoint key of each updated weight), `lora_A = Aᵀ`, `lora_B = Bᵀ`.
pub fn peft_tensors(
    updates: &BTreeMap<String, Update>,
    map: &KeyMap,
    prefix: &str,
) -> Result<BTreeMap<String, HostTensor>> {
    let transpose = |t: &HostTensor| {
        let [a, b] = [t.shape[0], t.shape[1]];
        let mut data = vec![0f32; a * b];
        for i in 0..a {
            for j in 0..b {
                data[j * a + i] = t.data[i * b + j];
            }
        }
        HostTensor {
            shape: vec![b, a],
            data,
        }
    };
    let mut out = BTreeMap::new();
    for (path, u) in updates {
        let target = map.targets.get(path).ok_or_else(|| Error::MissingKey {
            file: "export key map".into(),
            key: path.clone(),
        })?;
        let module = target.key.trim_end_matches(".weight");
        out.insert(
            format!("{prefix}.{module}.lora_A.weight"),
            transpose(&u.down),
        );
        out.insert(format!("{prefix}.{module}.lora_B.weight"), transpose(&u.up));
    }
    Ok(out)
}
