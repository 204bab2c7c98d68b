//! Starting a generation from an image instead of pure noise: SynFER's layout initialisation
//! (the image DDIM-inverted part of the way, so the output keeps its layout and identity) and
//! diffusers' img2img (the image noised to a level and denoised from there).
//!
//! Both encode the image as the VAE posterior mean: pixels `x / 127.5 − 1` (resized to the
//! output size when they differ, Lanczos), `x0 = mean · scaling_factor`.

use burn::tensor::{Tensor, TensorData};

use super::Pipeline;
use super::request::{GenerateRequest, ImageStart, StartMode};
use crate::au::conditioning::{self, AuRequest};
use crate::error::{Error, Result};
use crate::scheduler::{SchedulerConfig, SchedulerKind};

/// The prompt the inversion is conditioned on when the request names none.
pub const LAYOUT_PROMPT: &str = "a photo of a face";

/// Layout initialisation's inverted steps: `k = round(S · steps)` (half to even, as Python's
/// `round`).
pub fn layout_steps(strength: f64, steps: usize) -> usize {
    (strength * steps as f64).round_ties_even() as usize
}

/// img2img's first step index: `steps − min(⌊S · steps⌋, steps)` (diffusers' `get_timesteps`,
/// every implemented scheduler having order 1).
pub fn img2img_start(strength: f64, steps: usize) -> usize {
    steps - ((steps as f64 * strength) as usize).min(steps)
}

impl ImageStart {
    /// The scheduler config a start runs with: layout initialisation runs DDIM (a request for
    /// another scheduler is refused) with leading or trailing spacing (any other is taken as
    /// leading); img2img runs the request's.
    pub(crate) fn scheduler_config(
        &self,
        model: &SchedulerConfig,
        requested: Option<SchedulerKind>,
    ) -> Result<SchedulerConfig> {
        match self.mode {
            StartMode::Img2img => Ok(match requested {
                Some(kind) => model.clone().with_kind(kind),
                None => model.clone(),
            }),
            StartMode::Layout => {
                if let Some(kind) = requested.filter(|k| *k != SchedulerKind::Ddim) {
                    return Err(Error::request(
                        "scheduler",
                        format!(
                            "layout initialisation inverts and denoises with DDIM; {} is refused \
                             (leave the scheduler unset or ask for ddim)",
                            super::request::scheduler_short_name(kind)
                        ),
                    ));
                }
                let mut cfg = model.clone().with_kind(SchedulerKind::Ddim);
                if !matches!(
                    cfg.timestep_spacing.as_deref(),
                    Some("leading" | "trailing")
                ) {
                    cfg.timestep_spacing = Some("leading".into());
                }
                Ok(cfg)
            }
        }
    }
}

/// A start image at `width × height`, as the pipeline encodes it: unchanged when it has that
/// size, else resized (Lanczos3).
pub fn fit_start_image(
    img: &::image::RgbImage,
    width: usize,
    height: usize,
) -> std::borrow::Cow<'_, ::image::RgbImage> {
    if (img.width() as usize, img.height() as usize) == (width, height) {
        std::borrow::Cow::Borrowed(img)
    } else {
        std::borrow::Cow::Owned(::image::imageops::resize(
            img,
            width as u32,
            height as u32,
            ::image::imageops::FilterType::Lanczos3,
        ))
    }
}

impl Pipeline {
    /// The start images as latents `[n, c, h/f, w/f]`: the VAE posterior mean of
    /// `x / 127.5 − 1` times the scaling factor, each image resized to `width × height` first
    /// when it has another size.
    pub fn encode_images(
        &self,
        images: &[::image::RgbImage],
        width: usize,
        height: usize,
    ) -> Result<Tensor<4>> {
        let per = width * height * 3;
        let mut data = vec![0f32; images.len() * per];
        for (i, img) in images.iter().enumerate() {
            let img = fit_start_image(img, width, height);
            let out = &mut data[i * per..(i + 1) * per];
            for (k, v) in img.as_raw().iter().enumerate() {
                // NHWC bytes → NCHW floats.
                let (y, rest) = (k / (width * 3), k % (width * 3));
                let (x, c) = (rest / 3, rest % 3);
                out[(c * height + y) * width + x] = f32::from(*v) / 127.5 - 1.0;
            }
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(data, [images.len(), 3, height, width]),
            &self.device,
        );
        Ok(self.vae.encode(x).mean * self.vae.scaling_factor)
    }

    /// The VAE round trip of `images` at `width × height` (each resized first when it has
    /// another size): decode(posterior mean), RGB bytes per image (blocking).
    #[cfg(not(target_family = "wasm"))]
    pub fn reconstruct(
        &self,
        images: &[::image::RgbImage],
        width: usize,
        height: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let latents = self.encode_images(images, width, height)?;
        let values = pollster::block_on(self.decode_f32(latents))?;
        Ok(values
            .chunks_exact(width * height * 3)
            .map(crate::image::to_u8)
            .collect())
    }

    /// DDIM inversion (diffusers' `DDIMInverseScheduler` from `config`, `steps` steps) of
    /// latents `x0` over the first `k` timesteps, the UNet conditioned on `prompt` with no
    /// classifier-free guidance and all-zero AUs (weight `au_scale`); `on_step` after each.
    #[allow(clippy::too_many_arguments)]
    pub fn invert(
        &self,
        x0: Tensor<4>,
        config: &SchedulerConfig,
        steps: usize,
        k: usize,
        prompt: &str,
        clip_skip: usize,
        au_scale: Option<f64>,
        mut on_step: impl FnMut(usize, f64),
    ) -> Result<Tensor<4>> {
        let n = x0.dims()[0];
        let inverse = config
            .build_inverse(steps)
            .map_err(|source| Error::Scheduler {
                file: "scheduler/scheduler_config.json".into(),
                source,
            })?;
        let (context, _) = self.encode_prompt(&vec![prompt; n], clip_skip)?;
        let zeros = AuRequest {
            expression: None,
            aus: None,
            au_scale,
            images: n,
        };
        let (_, au) = conditioning::condition(
            self.au_adapter.as_ref(),
            std::slice::from_ref(&zeros),
            false,
            &self.device,
        )?;
        let mut x = x0;
        for (i, &t) in inverse.timesteps().iter().take(k).enumerate() {
            let out = self
                .unet
                .forward_au(x.clone(), &[t as f32], context.clone(), au.as_ref());
            x = inverse.step(out, i, x);
            on_step(i, t);
        }
        Ok(x)
    }
}

impl GenerateRequest {
    /// The share of the request's start settings a batch must agree on, checked with the rest.
    pub(crate) fn start_check(&self) -> Result<()> {
        let Some(s) = &self.start else {
            return Ok(());
        };
        if !s.strength.is_finite() || !(0.0..=1.0).contains(&s.strength) {
            return Err(Error::request(
                "start.strength",
                format!("{} is outside [0, 1]", s.strength),
            ));
        }
        if s.prompt.is_some() && s.mode != StartMode::Layout {
            return Err(Error::request(
                "start.prompt",
                "a prompt for the inversion belongs to layout initialisation",
            ));
        }
        Ok(())
    }
}
