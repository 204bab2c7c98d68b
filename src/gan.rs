//! The DCGAN face generator of PyPI `gan-face-generate==1.1.1` (PyTorch tutorial architecture,
//! trained on DigiFace-1M), in burn: a source of many synthetic identities for the training
//! data of the default model.
//!
//! `z ∈ R^nz` (a `[n, nz, 1, 1]` tensor) → ConvTranspose 4×4 (stride 1, no padding) to
//! `8·ngf × 4 × 4`, then three ConvTranspose 4×4 stride 2 padding 1 halving the channels, each
//! followed by BatchNorm (inference statistics, ε = 1e-5) and ReLU, and a last ConvTranspose 4×4
//! stride 2 padding 1 to `nc` channels with tanh: `[n, nc, 64, 64]` in `[−1, 1]`. No biases.
//! `nz`, `ngf` and `nc` are read from the weight shapes, so any generator of this shape loads.
//!
//! Weights: the package's `gan_face_generate/weights.tar`, a `torch.save` zip whose
//! `netG_state_dict` holds `main.{0,3,6,9,12}.weight` (ConvTranspose, `[in, out, 4, 4]`) and
//! `main.{1,4,7,10}.{weight,bias,running_mean,running_var,num_batches_tracked}` (BatchNorm),
//! read by the crate's torch zip-pickle reader (no code from the file is executed).

use burn::module::{Module, Param};
use burn::tensor::module::conv_transpose2d;
use burn::tensor::ops::ConvTransposeOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::weights::{TensorStore, Weights};

/// The package's generator as float16 safetensors (`tools/data/convert_dcgan.py`).
const EMBEDDED: &[u8] = include_bytes!("../assets/gan/dcgan_generator.safetensors");

/// BatchNorm's ε (PyTorch's default).
const BN_EPS: f64 = 1e-5;
/// Indices of the ConvTranspose layers in `main`.
const CONVS: [usize; 5] = [0, 3, 6, 9, 12];

/// BatchNorm2d with inference statistics.
#[derive(Module, Debug)]
pub struct BatchNorm {
    /// γ, `[c]`.
    pub weight: Param<Tensor<1>>,
    /// β, `[c]`.
    pub bias: Param<Tensor<1>>,
    /// Running mean, `[c]`.
    pub running_mean: Param<Tensor<1>>,
    /// Running variance, `[c]`.
    pub running_var: Param<Tensor<1>>,
}

impl BatchNorm {
    fn load(w: &Weights, c: usize) -> Result<Self> {
        Ok(BatchNorm {
            weight: Param::from_tensor(w.tensor("weight", [c])?),
            bias: Param::from_tensor(w.tensor("bias", [c])?),
            running_mean: Param::from_tensor(w.tensor("running_mean", [c])?),
            running_var: Param::from_tensor(w.tensor("running_var", [c])?),
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [c] = self.weight.dims();
        let shape = [1, c, 1, 1];
        let scale = self.weight.val() / (self.running_var.val() + BN_EPS).sqrt();
        let shift = self.bias.val() - self.running_mean.val() * scale.clone();
        x * scale.reshape(shape) + shift.reshape(shape)
    }
}

/// The DCGAN generator.
#[derive(Module, Debug)]
pub struct Generator {
    /// ConvTranspose weights `[in, out, 4, 4]`, `main.{0,3,6,9,12}`.
    pub convs: Vec<Param<Tensor<4>>>,
    /// BatchNorms after the first four, `main.{1,4,7,10}`.
    pub norms: Vec<BatchNorm>,
}

impl Generator {
    /// Loads from the bytes of a `torch.save` file holding `netG_state_dict` (the package's
    /// `weights.tar`); `name` is used in errors. Strict: every tensor must be used.
    pub fn from_torch_bytes(name: &str, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let store = TensorStore::from_torch_bytes_at(name, bytes, &["netG_state_dict"])?;
        Self::load(&store, device)
    }

    /// Loads from a store keyed `main.N.*` (see the module docs).
    pub fn load(store: &TensorStore, device: &Device) -> Result<Self> {
        let w = store.root(device);
        let mut convs = Vec::with_capacity(CONVS.len());
        let mut norms = Vec::with_capacity(CONVS.len() - 1);
        let mut c_in = None;
        for (k, &i) in CONVS.iter().enumerate() {
            let key = format!("main.{i}.weight");
            let shape = store
                .shape(&key)
                .ok_or_else(|| Error::MissingKey {
                    file: store.name().to_string(),
                    key: key.clone(),
                })?
                .to_vec();
            let [cin, cout, kh, kw] = shape[..] else {
                return Err(Error::ShapeMismatch {
                    file: store.name().to_string(),
                    key,
                    expected: vec![0, 0, 4, 4],
                    found: shape,
                });
            };
            let expected = [c_in.unwrap_or(cin), cout, 4, 4];
            if [cin, cout, kh, kw] != expected {
                return Err(Error::ShapeMismatch {
                    file: store.name().to_string(),
                    key,
                    expected: expected.to_vec(),
                    found: shape,
                });
            }
            convs.push(Param::from_tensor(
                w.pp(format!("main.{i}")).tensor("weight", expected)?,
            ));
            if k + 1 < CONVS.len() {
                norms.push(BatchNorm::load(&w.pp(format!("main.{}", i + 1)), cout)?);
                // Training-time counter, not used at inference.
                store.ignore(&format!("main.{}.num_batches_tracked", i + 1));
            }
            c_in = Some(cout);
        }
        store.finish()?;
        Ok(Generator { convs, norms })
    }

    /// The generator of PyPI `gan-face-generate==1.1.1`, embedded (float16; see
    /// `assets/gan/PROVENANCE.md`).
    pub fn embedded(device: &Device) -> Result<Self> {
        let store = TensorStore::from_bytes("dcgan_generator.safetensors", EMBEDDED.to_vec())?;
        Self::load(&store, device)
    }

    /// One `64 × 64` RGB face per seed (bytes, row-major), `z` standard normal from the seed
    /// ([`crate::rng::seeded_noise`]).
    pub fn sample(&self, seeds: &[u64], device: &Device) -> Result<Vec<Vec<u8>>> {
        let nz = self.latent_dim();
        let mut z = Vec::with_capacity(seeds.len() * nz);
        for &seed in seeds {
            z.extend(crate::rng::seeded_noise(seed, &[nz]).data);
        }
        let x = Tensor::<4>::from_data(TensorData::new(z, [seeds.len(), nz, 1, 1]), device);
        let out = self.forward(x);
        let [n, c, h, w] = out.dims();
        let v = out
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Device(format!("reading GAN output: {e:?}")))?;
        Ok((0..n)
            .map(|b| {
                let mut rgb = Vec::with_capacity(h * w * 3);
                for y in 0..h {
                    for xx in 0..w {
                        for ch in 0..c.min(3) {
                            let t = v[((b * c + ch) * h + y) * w + xx];
                            rgb.push(((t + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8);
                        }
                    }
                }
                rgb
            })
            .collect())
    }

    /// Latent size `nz`.
    pub fn latent_dim(&self) -> usize {
        self.convs[0].dims()[0]
    }

    /// `z` `[n, nz, 1, 1]` → images `[n, nc, 64, 64]` in `[−1, 1]` (NCHW).
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut x = z;
        for (k, weight) in self.convs.iter().enumerate() {
            let (stride, padding) = if k == 0 { (1, 0) } else { (2, 1) };
            let options =
                ConvTransposeOptions::new([stride, stride], [padding, padding], [0, 0], [1, 1], 1);
            x = conv_transpose2d(x, weight.val(), None, options);
            x = match self.norms.get(k) {
                Some(norm) => burn::tensor::activation::relu(norm.forward(x)),
                None => x.tanh(),
            };
        }
        x
    }
}
