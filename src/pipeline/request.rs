//! What a caller asks for: one generation request, shared by the CLI, the library and the web.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::au::conditioning::AuRequest;
use crate::error::{Error, Result};
use crate::expression::Expression;
use crate::guidance::semantic::SemanticGuidance;
use crate::scheduler::SchedulerKind;

/// One text-to-image request (also the flags of `synfer generate`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "native", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    /// The prompt.
    #[cfg_attr(
        feature = "native",
        arg(long, required_unless_present = "from_png", default_value = "")
    )]
    pub prompt: String,
    /// Negative prompt (the unconditional branch of classifier-free guidance); empty = `""`.
    #[cfg_attr(feature = "native", arg(long))]
    pub negative_prompt: Option<String>,
    /// Denoising steps.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 25))]
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 disables guidance (one UNet pass per step). The CLI's
    /// `--guidance` defaults to the model's (`synfer.json`), else [`DEFAULT_GUIDANCE`].
    #[cfg_attr(feature = "native", arg(skip = DEFAULT_GUIDANCE))]
    pub guidance_scale: f64,
    /// Seed of the initial noise; image `i` of a batch uses `seed + i`.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0))]
    pub seed: u64,
    /// Output width in pixels (default: the model's native size).
    #[cfg_attr(feature = "native", arg(long))]
    pub width: Option<usize>,
    /// Output height in pixels (default: the model's native size).
    #[cfg_attr(feature = "native", arg(long))]
    pub height: Option<usize>,
    /// Images to generate in one batch (image `i` of the CLI's output gets a `-i` suffix).
    #[cfg_attr(feature = "native", arg(long, default_value_t = 1))]
    pub num_images: usize,
    /// Replace the model's scheduler (keeping its shared settings, like diffusers' `from_config`):
    /// `ddim`, `dpm++`, `euler`, `euler-a`, `pndm` (`plms`) or `lcm`.
    #[serde(with = "scheduler_name")]
    #[cfg_attr(feature = "native", arg(long, value_parser = parse_scheduler))]
    pub scheduler: Option<SchedulerKind>,
    /// Skip this many final CLIP layers (diffusers' `clip_skip`).
    #[cfg_attr(feature = "native", arg(long))]
    pub clip_skip: Option<usize>,
    /// Target expression (neutral, happy, sad, angry, fearful, disgusted, surprised,
    /// contempt): sets the AU vector to the expression's prototype (see
    /// [`Expression::prototype`](crate::expression::Expression::prototype)) and, unless the
    /// prompt already names it, adds it to the prompt (see
    /// [`GenerateRequest::effective_prompt`]).
    #[cfg_attr(feature = "native", arg(long))]
    pub expression: Option<Expression>,
    /// Action-unit intensities (`{"AU12": 4}`; on the command line `AU12=4,AU6=3`), each
    /// replacing the expression prototype's value. Needs a model with an AU adapter.
    #[cfg_attr(feature = "native", arg(long = "au", value_parser = parse_aus))]
    pub aus: Option<BTreeMap<String, f32>>,
    /// Weight of the AU branch (default: the adapter's `default_au_scale`, usually 1).
    #[cfg_attr(feature = "native", arg(long))]
    pub au_scale: Option<f64>,
    /// Semantic guidance toward the request's expression (needs `expression`).
    #[cfg_attr(feature = "native", arg(skip))]
    pub semantic_guidance: Option<SemanticGuidance>,
    /// Start from an image (layout initialisation or img2img) instead of pure noise; the
    /// images come in [`GenerateOptions::images`](super::GenerateOptions::images).
    #[cfg_attr(feature = "native", arg(skip))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<ImageStart>,
}

/// How a generation starts from an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    /// SynFER's layout initialisation: the image DDIM-inverted `k = round(S · steps)` steps
    /// with the layout prompt (no classifier-free guidance, all-zero AUs), then denoised over
    /// the last `k` DDIM timesteps with the request's prompt, AUs and guidance.
    Layout,
    /// diffusers' img2img: the image noised to the level of step `steps − ⌊S · steps⌋` with
    /// the request's noise and denoised from there, with any scheduler.
    Img2img,
}

/// Start settings of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageStart {
    /// Layout initialisation or img2img.
    pub mode: StartMode,
    /// Strength `S` in `[0, 1]`: the share of the schedule run from the image (0: the VAE's
    /// reconstruction of the image, with no denoising step).
    pub strength: f64,
    /// The prompt the inversion is conditioned on (layout only; default
    /// [`LAYOUT_PROMPT`](super::start::LAYOUT_PROMPT)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Where the image came from (`dcgan` with its seed, a file name…), for the record; the
    /// pipeline reads only the pixels it is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[cfg(feature = "native")]
fn parse_scheduler(s: &str) -> std::result::Result<SchedulerKind, String> {
    s.parse()
        .map_err(|e: crate::scheduler::SchedulerError| e.to_string())
}

#[cfg(feature = "native")]
fn parse_aus(s: &str) -> std::result::Result<BTreeMap<String, f32>, String> {
    crate::au::vector::parse_spec(s).map_err(|e| e.to_string())
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            prompt: String::new(),
            negative_prompt: None,
            steps: 25,
            guidance_scale: DEFAULT_GUIDANCE,
            seed: 0,
            width: None,
            height: None,
            num_images: 1,
            scheduler: None,
            clip_skip: None,
            expression: None,
            aus: None,
            au_scale: None,
            semantic_guidance: None,
            start: None,
        }
    }
}

/// The guidance scale of a request that does not set one (Stable Diffusion's usual 7.5).
pub const DEFAULT_GUIDANCE: f64 = 7.5;

/// Upper bounds that keep a typo from exhausting memory.
pub const MAX_STEPS: usize = 1000;
/// Largest side accepted, in pixels.
pub const MAX_SIDE: usize = 4096;
/// Largest batch accepted.
pub const MAX_IMAGES: usize = 64;

impl GenerateRequest {
    /// A request for `prompt` with every other field at its default.
    pub fn new(prompt: impl Into<String>) -> Self {
        GenerateRequest {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    /// Checks ranges; `multiple` is the pixel multiple the model needs (VAE factor × 2^downs).
    pub fn validate(&self, multiple: usize) -> Result<()> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::request(
                "steps",
                format!("{} is outside 1..={MAX_STEPS}", self.steps),
            ));
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return Err(Error::request(
                "guidance_scale",
                format!("{} must be a finite number ≥ 0", self.guidance_scale),
            ));
        }
        if self.num_images == 0 || self.num_images > MAX_IMAGES {
            return Err(Error::request(
                "num_images",
                format!("{} is outside 1..={MAX_IMAGES}", self.num_images),
            ));
        }
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = v
                && (v == 0 || v > MAX_SIDE || v % multiple != 0)
            {
                return Err(Error::request(
                    field,
                    format!("{v} must be a positive multiple of {multiple} up to {MAX_SIDE}"),
                ));
            }
        }
        if let Some(s) = self.au_scale
            && !s.is_finite()
        {
            return Err(Error::request("au_scale", format!("{s} must be finite")));
        }
        self.start_check()?;
        if let Some(sg) = &self.semantic_guidance {
            sg.validate()?;
            if self.expression.is_none() {
                return Err(Error::request(
                    "semantic_guidance",
                    "semantic guidance steers toward the request's expression: set expression",
                ));
            }
        }
        Ok(())
    }

    /// What this request asks of the AU branch, for its `num_images` images.
    pub fn au_request(&self) -> AuRequest<'_> {
        AuRequest {
            expression: self.expression,
            aus: self.aus.as_ref(),
            au_scale: self.au_scale,
            images: self.num_images,
        }
    }

    /// The prompt actually encoded. With an expression: unchanged if it already names the
    /// expression; `a photo of a <adjective> face` if empty; else `<prompt>, <adjective> facial
    /// expression`.
    pub fn effective_prompt(&self) -> String {
        let Some(e) = self.expression else {
            return self.prompt.clone();
        };
        let lower = self.prompt.to_lowercase();
        if self.prompt.trim().is_empty() {
            format!("a photo of a {} face", e.adjective())
        } else if e.keywords().iter().any(|k| lower.contains(k)) {
            self.prompt.clone()
        } else {
            format!("{}, {} facial expression", self.prompt, e.adjective())
        }
    }

    /// Whether classifier-free guidance runs (diffusers: `guidance_scale > 1`).
    pub fn uses_cfg(&self) -> bool {
        self.guidance_scale > 1.0
    }
}

/// The short name of a scheduler kind, as the CLI and JSON requests spell it.
pub fn scheduler_short_name(kind: SchedulerKind) -> &'static str {
    match kind {
        SchedulerKind::Ddim => "ddim",
        SchedulerKind::DpmSolverMultistep => "dpm++",
        SchedulerKind::EulerDiscrete => "euler",
        SchedulerKind::Pndm => "pndm",
        SchedulerKind::EulerAncestral => "euler-a",
        SchedulerKind::Lcm => "lcm",
    }
}

/// Serde for `Option<SchedulerKind>` as `"ddim" | "dpm++" | "euler" | "pndm"` (class names and
/// the other short names of [`SchedulerKind`]'s `FromStr` accepted too).
mod scheduler_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{SchedulerKind, scheduler_short_name};

    pub fn serialize<S: Serializer>(v: &Option<SchedulerKind>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(k) => s.serialize_some(scheduler_short_name(*k)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SchedulerKind>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| name.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_defaults() {
        let req: GenerateRequest =
            serde_json::from_str(r#"{"prompt": "a face", "scheduler": "dpm++", "seed": 3}"#)
                .unwrap();
        assert_eq!(req.scheduler, Some(SchedulerKind::DpmSolverMultistep));
        assert_eq!(req.steps, 25);
        assert_eq!(req.seed, 3);
        let back: GenerateRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        let pndm: GenerateRequest = serde_json::from_str(r#"{"scheduler": "pndm"}"#).unwrap();
        assert_eq!(pndm.scheduler, Some(SchedulerKind::Pndm));
        assert!(serde_json::from_str::<GenerateRequest>(r#"{"scheduler": "lms"}"#).is_err());
        assert!(serde_json::from_str::<GenerateRequest>(r#"{"stepz": 3}"#).is_err());
    }

    #[test]
    fn expression_extends_the_prompt_once() {
        let with = |prompt: &str| GenerateRequest {
            expression: Some(Expression::Surprised),
            ..GenerateRequest::new(prompt)
        };
        assert_eq!(with("").effective_prompt(), "a photo of a surprised face");
        assert_eq!(
            with("a photo of a woman").effective_prompt(),
            "a photo of a woman, surprised facial expression"
        );
        assert_eq!(
            with("a Surprised child").effective_prompt(),
            "a Surprised child"
        );
        assert_eq!(
            with("a look of surprise").effective_prompt(),
            "a look of surprise"
        );
        assert_eq!(GenerateRequest::new("x").effective_prompt(), "x");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = GenerateRequest {
            height: Some(36),
            ..GenerateRequest::new("x")
        };
        let err = bad.validate(8).unwrap_err();
        assert!(err.to_string().contains("`height`"), "{err}");
        assert!(GenerateRequest::new("x").validate(8).is_ok());
    }
}
