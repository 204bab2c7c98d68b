//! The record inside each PNG: the generation settings as AUTOMATIC1111's `parameters` text
//! (what A1111, ComfyUI, model-sharing sites and metadata readers show) and the whole
//! [`ImageRecord`] as JSON in an `iTXt` chunk named `synfer`, from which `synfer generate
//! --from-png` regenerates the image.

use super::output::ImageRecord;
use super::request::{GenerateRequest, StartMode};
use crate::error::{Error, Result};
use crate::image::png_text::{self, TextKind};

/// The `tEXt`/`iTXt` keyword of the A1111 settings text.
pub const PARAMETERS_KEY: &str = "parameters";
/// The `iTXt` keyword of the JSON record.
pub const RECORD_KEY: &str = "synfer";

/// A1111's `quote`: a value holding `,`, `:` or a newline becomes a JSON string.
fn quote(value: &str) -> String {
    if value.contains([',', ':', '\n']) {
        serde_json::Value::String(value.to_string()).to_string()
    } else {
        value.to_string()
    }
}

/// The A1111 sampler name of a scheduler short name (`ddim` → `DDIM`, …).
fn sampler_name(short: &str) -> &str {
    match short {
        "ddim" => "DDIM",
        "dpm++" => "DPM++ 2M",
        "euler" => "Euler",
        "euler-a" => "Euler a",
        "pndm" => "PLMS",
        "lcm" => "LCM",
        other => other,
    }
}

/// The model's name as A1111 writes it: the file or folder name, not the path.
fn model_name(model: &str) -> &str {
    std::path::Path::new(model)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(model)
}

impl ImageRecord {
    /// The settings in AUTOMATIC1111's `parameters` form: the prompt used, a `Negative prompt:`
    /// line when there is one, then `Steps`, `Sampler`, `CFG scale`, `Seed`, `Size`, `Model`,
    /// the start (`Denoising strength`, `Start`), the expression, the AU vector (its non-zero
    /// units, `AU12=4 AU6=3`) and scale, and the version: one line of `Key: value` pairs.
    pub fn parameters(&self) -> String {
        let mut text = self.prompt_used.clone();
        if let Some(neg) = self
            .request
            .negative_prompt
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            text.push_str("\nNegative prompt: ");
            text.push_str(neg);
        }
        let mut pairs: Vec<(&str, String)> = vec![
            ("Steps", self.request.steps.to_string()),
            (
                "Sampler",
                sampler_name(self.scheduler.as_deref().unwrap_or("ddim")).to_string(),
            ),
            ("CFG scale", self.request.guidance_scale.to_string()),
        ];
        if let Some(seed) = self.seed {
            pairs.push(("Seed", seed.to_string()));
        }
        pairs.push(("Size", format!("{}x{}", self.width, self.height)));
        pairs.push(("Model", model_name(&self.model).to_string()));
        if let Some(start) = &self.request.start {
            pairs.push(("Denoising strength", start.strength.to_string()));
            let mode = match start.mode {
                StartMode::Layout => "layout",
                StartMode::Img2img => "img2img",
            };
            pairs.push(("Start", mode.to_string()));
            if let Some(source) = self.start_source() {
                pairs.push(("Start image", source.to_string()));
            }
        }
        if let Some(e) = self.expression {
            pairs.push(("Expression", e.to_string()));
        }
        if let Some(aus) = &self.aus {
            let set: Vec<String> = aus
                .iter()
                .filter(|(_, v)| **v != 0.0)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            pairs.push((
                "AUs",
                if set.is_empty() {
                    "none".to_string()
                } else {
                    set.join(" ")
                },
            ));
        }
        if let Some(s) = self.au_scale {
            pairs.push(("AU scale", s.to_string()));
        }
        if let Some(sg) = &self.request.semantic_guidance {
            pairs.push((
                "Semantic guidance",
                format!("{} {}", sg.scale, sg.classifier.name()),
            ));
        }
        if let Some(skip) = self.request.clip_skip {
            pairs.push(("Clip skip", skip.to_string()));
        }
        pairs.push(("Version", format!("synfer {}", self.synfer_version)));
        let line: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote(v)))
            .collect();
        text.push('\n');
        text.push_str(&line.join(", "));
        text
    }

    /// PNG bytes of this record's image (`rgb`, the record's size) with the record inside:
    /// `parameters` ([`Self::parameters`]) and the JSON record (`iTXt` `synfer`). `name` names
    /// the file in errors.
    pub fn png(&self, rgb: &[u8], name: &str) -> Result<Vec<u8>> {
        let png = crate::image::encode_png(rgb, self.width, self.height, name)?;
        let json = serde_json::to_string(self).map_err(|e| Error::json(name, e))?;
        png_text::insert(
            &png,
            &[
                (PARAMETERS_KEY, &self.parameters(), TextKind::Plain),
                (RECORD_KEY, &json, TextKind::International),
            ],
            name,
        )
    }

    /// The record inside PNG bytes written by synfer; `name` names the file in errors.
    pub fn from_png(png: &[u8], name: &str) -> Result<ImageRecord> {
        let texts = png_text::read(png, name)?;
        let Some((_, json)) = texts.iter().find(|(k, _)| k == RECORD_KEY) else {
            let a1111 = texts.iter().any(|(k, _)| k == PARAMETERS_KEY);
            return Err(Error::Image {
                file: name.to_string(),
                message: format!(
                    "no synfer record (iTXt {RECORD_KEY:?}){}",
                    if a1111 {
                        "; its A1111 `parameters` text alone does not say enough to regenerate the image"
                    } else {
                        ""
                    }
                ),
            });
        };
        serde_json::from_str(json)
            .map_err(|e| Error::json(format!("{name} (iTXt {RECORD_KEY:?})"), e))
    }

    /// Where this image's start came from: its entry of the request's start source (which
    /// lists one per image of a batch, `, `-separated, or one for all).
    pub fn start_source(&self) -> Option<&str> {
        let source = self.request.start.as_ref()?.source.as_deref()?;
        let entries: Vec<&str> = source.split(", ").collect();
        let index = self
            .seed
            .map_or(0, |s| s.wrapping_sub(self.request.seed) as usize);
        Some(if entries.len() == self.request.num_images {
            entries.get(index).copied().unwrap_or(source)
        } else {
            source
        })
    }

    /// The request that regenerates this one image: the recorded request with this image's
    /// seed and one image.
    pub fn replay_request(&self) -> GenerateRequest {
        let mut req = self.request.clone();
        if let Some(seed) = self.seed {
            req.seed = seed;
        }
        req.num_images = 1;
        req
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::expression::Expression;
    use crate::pipeline::request::ImageStart;

    fn record() -> ImageRecord {
        ImageRecord {
            synfer_version: "0.1.0".into(),
            request: GenerateRequest {
                negative_prompt: Some("blurry, dark".into()),
                steps: 30,
                guidance_scale: 5.5,
                seed: 40,
                num_images: 4,
                expression: Some(Expression::Happy),
                ..GenerateRequest::new("a photo of a man")
            },
            prompt_used: "a photo of a man, happy facial expression".into(),
            expression: Some(Expression::Happy),
            aus: Some(BTreeMap::from([
                ("AU1".into(), 0.0),
                ("AU12".into(), 4.0),
                ("AU6".into(), 2.5),
            ])),
            au_scale: Some(1.0),
            scheduler: Some("euler".into()),
            seed: Some(42),
            latents_file: None,
            width: 64,
            height: 64,
            model: "/models/my, model".into(),
            device: None,
            timings: None,
            warnings: Vec::new(),
        }
    }

    /// The exact text, written out by hand from A1111's `create_infotext` layout (prompt line,
    /// `Negative prompt:` line, then `Key: value` pairs joined by `, `; a value holding `,`,
    /// `:` or a newline JSON-quoted).
    #[test]
    fn parameters_are_a1111_text() {
        assert_eq!(
            record().parameters(),
            "a photo of a man, happy facial expression\n\
             Negative prompt: blurry, dark\n\
             Steps: 30, Sampler: Euler, CFG scale: 5.5, Seed: 42, Size: 64x64, \
             Model: \"my, model\", Expression: happy, AUs: AU12=4 AU6=2.5, AU scale: 1, \
             Version: synfer 0.1.0"
        );
        let mut r = record();
        r.request.negative_prompt = None;
        r.seed = None;
        r.aus = None;
        r.au_scale = None;
        r.expression = None;
        r.scheduler = Some("pndm".into());
        r.model = "synfer-tiny (built in)".into();
        r.request.start = Some(ImageStart {
            mode: crate::pipeline::StartMode::Layout,
            strength: 0.7,
            prompt: None,
            source: Some("dcgan seed 42".into()),
        });
        assert_eq!(
            r.parameters(),
            "a photo of a man, happy facial expression\n\
             Steps: 30, Sampler: PLMS, CFG scale: 5.5, Size: 64x64, \
             Model: synfer-tiny (built in), Denoising strength: 0.7, Start: layout, \
             Start image: dcgan seed 42, Version: synfer 0.1.0"
        );
    }

    #[test]
    fn the_record_round_trips_through_the_png() {
        let r = record();
        let rgb: Vec<u8> = (0..64 * 64 * 3).map(|i| (i % 251) as u8).collect();
        let png = r.png(&rgb, "x.png").unwrap();
        assert_eq!(ImageRecord::from_png(&png, "x.png").unwrap(), r);
        assert_eq!(crate::image::decode(&png, "x.png").unwrap().as_raw(), &rgb);
        let replay = r.replay_request();
        assert_eq!((replay.seed, replay.num_images), (42, 1));
        assert_eq!(replay.prompt, r.request.prompt);
        // A PNG without the record says so, naming the file.
        let plain = crate::image::encode_png(&rgb, 64, 64, "y.png").unwrap();
        let err = ImageRecord::from_png(&plain, "y.png")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("y.png") && err.contains("no synfer record"),
            "{err}"
        );
    }
}
