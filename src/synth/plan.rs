//! The synthesis plan (`plan.toml`): what to generate, how, and how to label it.
//!
//! ```toml
//! seed = 7
//! steps = 25
//! guidance = 7.5
//! batch = 8                     # images per UNet batch (also the unit of sharding)
//!
//! [counts]                      # or: total = 700 and [shares] neutral = 1.0, happy = 2.0, …
//! neutral = 100
//! happy = 100
//!
//! [expressions.happy]           # optional, per expression
//! aus = { AU12 = 3.5 }          # over the expression's prototype
//! jitter = { AU12 = [-1.0, 1.0], AU6 = [-0.5, 0.5] }   # uniform offsets, clamped to 0–5
//! dropout = 0.1                 # chance of zeroing each active unit
//!
//! [prompt]
//! templates = ["a photo of {age} {person}, {lighting}"]
//! negative = "blurry"
//! [prompt.vocab]
//! age = ["a young", "an elderly"]
//! person = ["woman", "man"]
//! lighting = ["soft light", "studio light"]
//!
//! [split]
//! train = 0.8
//! test = 0.2
//!
//! [label]
//! policy = "rectify"            # rectify | keep | drop
//! confidence = 0.0
//! ```
//!
//! Item `k` (0-based) is fully determined by the plan and `k`: its expression (the plan's
//! classes, interleaved by a seeded shuffle so that any prefix is balanced), its seed, prompt,
//! AU vector and split. Any item can therefore be regenerated alone.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::au::{AuVector, FINEFACE};
use crate::error::{Error, Result};
use crate::expression::CLASSES;
use crate::expression::Expression;
use crate::guidance::semantic::SemanticGuidance;
use crate::label::LabelPlan;
use crate::pipeline::{GenerateRequest, ImageStart, StartMode};
use crate::rng::mix;
use crate::scheduler::SchedulerKind;

/// Per-expression AU settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionPlan {
    /// Units set over the prototype.
    #[serde(default)]
    pub aus: BTreeMap<String, f32>,
    /// Uniform offset range `[lo, hi]` per unit (result clamped to the set's range).
    #[serde(default)]
    pub jitter: BTreeMap<String, [f32; 2]>,
    /// Probability of zeroing each active unit.
    #[serde(default)]
    pub dropout: f64,
}

/// Prompt templates and the vocabularies their `{slots}` draw from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptPlan {
    /// Templates; `{name}` is replaced by a word of `vocab[name]`.
    pub templates: Vec<String>,
    /// Word lists by slot name.
    #[serde(default)]
    pub vocab: BTreeMap<String, Vec<String>>,
    /// Negative prompt of every item.
    #[serde(default)]
    pub negative: Option<String>,
}

impl Default for PromptPlan {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PromptPlan {
            templates: vec![
                "a photo of {age} {person}, {lighting}".into(),
                "a close-up portrait of {age} {person}, {background}".into(),
            ],
            vocab: BTreeMap::from([
                (
                    "age".into(),
                    words(&["a young", "a middle-aged", "an elderly", "a"]),
                ),
                ("person".into(), words(&["woman", "man", "person", "child"])),
                (
                    "lighting".into(),
                    words(&["soft light", "bright lighting", "dim lighting"]),
                ),
                (
                    "background".into(),
                    words(&["plain background", "outdoors", "indoors"]),
                ),
            ]),
            negative: None,
        }
    }
}

/// A synthesis plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Model folder (absent: the built-in default model).
    #[serde(default)]
    pub model: Option<String>,
    /// Seed all item seeds derive from.
    #[serde(default)]
    pub seed: u64,
    /// Image side in pixels (absent: the model's native size).
    #[serde(default)]
    pub size: Option<usize>,
    /// Denoising steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[serde(default = "default_guidance")]
    pub guidance: f64,
    /// Scheduler (`ddim`, `dpm++`, `euler`, `pndm`; absent: the model's).
    #[serde(default)]
    pub scheduler: Option<String>,
    /// AU branch weight (absent: the adapter's default).
    #[serde(default)]
    pub au_scale: Option<f64>,
    /// Items per UNet batch; also the unit of sharding and resume.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Items per expression.
    #[serde(default)]
    pub counts: BTreeMap<String, usize>,
    /// Total items, split by `shares` (instead of `counts`).
    #[serde(default)]
    pub total: Option<usize>,
    /// Relative class shares for `total`.
    #[serde(default)]
    pub shares: BTreeMap<String, f64>,
    /// Per-expression AU settings.
    #[serde(default)]
    pub expressions: BTreeMap<String, ExpressionPlan>,
    /// Prompts.
    #[serde(default)]
    pub prompt: PromptPlan,
    /// Split shares (`train`, `val`, `test`, …).
    #[serde(default = "default_split")]
    pub split: BTreeMap<String, f64>,
    /// Labelling.
    #[serde(default)]
    pub label: LabelPlan,
    /// Semantic guidance of every item toward its expression (`scale`, `window`,
    /// `classifier`, `per_token`).
    #[serde(default)]
    pub semantic_guidance: Option<SemanticGuidance>,
    /// Layout initialisation of every item from a face (absent: from noise).
    #[serde(default)]
    pub layout: Option<LayoutPlan>,
    /// How the images are stored: `folder` (ImageFolder + `metadata.jsonl`) or `webdataset`
    /// (tar shards; see [`super::webdataset`]).
    #[serde(default)]
    pub format: OutputFormat,
    /// Items per WebDataset tar.
    #[serde(default = "default_shard_size")]
    pub shard_size: usize,
}

/// How a synthesis folder stores its images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `images/<split>/<label>/<id>.png` with `metadata.jsonl` (ImageFolder, HF imagefolder).
    #[default]
    Folder,
    /// `<split>-NNNNNN.tar` shards of `KEY.png`, `KEY.json`, `KEY.cls`.
    #[serde(rename = "webdataset")]
    WebDataset,
}

impl std::str::FromStr for OutputFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "folder" => Ok(OutputFormat::Folder),
            "webdataset" | "wds" => Ok(OutputFormat::WebDataset),
            _ => Err(Error::request(
                "format",
                format!("{s:?}: expected folder or webdataset"),
            )),
        }
    }
}

fn default_shard_size() -> usize {
    super::webdataset::DEFAULT_SHARD_SIZE
}

/// `[layout]`: where each item's face comes from and how far it is inverted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutPlan {
    /// `dcgan` (the built-in face generator: item `k` gets the face of its seed) or
    /// `folder:PATH` (item `k` gets image `k mod n` of the folder's `n` images, in name order;
    /// a relative path is taken from the plan's folder by the CLI).
    pub source: String,
    /// Layout strength S in `[0, 1]`.
    #[serde(default = "default_layout_strength")]
    pub strength: f64,
    /// The prompt the inversion is conditioned on (default "a photo of a face").
    #[serde(default)]
    pub prompt: Option<String>,
}

fn default_layout_strength() -> f64 {
    0.7
}

/// The most items one plan may hold (the plan's items are listed in memory).
pub const MAX_ITEMS: usize = 10_000_000;

fn default_steps() -> usize {
    25
}
fn default_guidance() -> f64 {
    7.5
}
fn default_batch() -> usize {
    8
}
fn default_split() -> BTreeMap<String, f64> {
    BTreeMap::from([("train".into(), 1.0)])
}

/// One planned image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Index in the plan.
    pub index: usize,
    /// File stem (`000042`).
    pub id: String,
    /// Requested expression.
    pub expression: Expression,
    /// Prompt (before the pipeline adds the expression).
    pub prompt: String,
    /// Requested AU values (the full vector sent to the model).
    pub aus: BTreeMap<String, f32>,
    /// Noise seed.
    pub seed: u64,
    /// Split name.
    pub split: String,
}

impl Plan {
    /// Parses and validates a TOML plan; `file` names it in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self> {
        let plan: Plan = toml::from_str(text).map_err(|e| Error::Toml {
            file: file.into(),
            message: e.to_string(),
        })?;
        plan.validate(file)?;
        Ok(plan)
    }

    /// Reads and validates the plan file `path`; a relative `[layout]` folder is taken from
    /// the plan's folder.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut plan = Self::from_toml(&text, &path.display().to_string())?;
        if let Some(layout) = &mut plan.layout
            && let Some(dir) = layout.source.strip_prefix("folder:")
            && std::path::Path::new(dir).is_relative()
        {
            let base = path.parent().unwrap_or(std::path::Path::new("."));
            layout.source = format!("folder:{}", base.join(dir).display());
        }
        Ok(plan)
    }

    /// The model folder, a relative `model` taken from the folder of the plan file `path`;
    /// `None`: the built-in model.
    pub fn model_dir(&self, path: &std::path::Path) -> Option<std::path::PathBuf> {
        self.model.as_ref().map(|m| {
            let p = std::path::PathBuf::from(m);
            if p.is_absolute() {
                p
            } else {
                path.parent().unwrap_or(std::path::Path::new(".")).join(p)
            }
        })
    }

    /// Checks every field; errors name the field and the value.
    pub fn validate(&self, file: &str) -> Result<()> {
        let bad = |key: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(Error::config(file, key, value, why))
        };
        if self.steps == 0 || self.steps > crate::pipeline::request::MAX_STEPS {
            return bad("steps", &self.steps, "must be 1..=1000");
        }
        if !self.guidance.is_finite() || self.guidance < 0.0 {
            return bad("guidance", &self.guidance, "must be a finite number ≥ 0");
        }
        if self.batch == 0 || self.batch > crate::pipeline::request::MAX_IMAGES {
            return bad("batch", &self.batch, "must be 1..=64");
        }
        if self.shard_size == 0 || self.shard_size > MAX_ITEMS {
            return bad("shard_size", &self.shard_size, "must be 1..=10000000");
        }
        if let Some(layout) = &self.layout {
            if layout.source != "dcgan" && !layout.source.starts_with("folder:") {
                return bad(
                    "layout.source",
                    &format!("{:?}", layout.source),
                    "must be \"dcgan\" or \"folder:PATH\"",
                );
            }
            if !(0.0..=1.0).contains(&layout.strength) {
                return bad("layout.strength", &layout.strength, "must be in [0, 1]");
            }
        }
        if let Some(s) = &self.scheduler {
            s.parse::<SchedulerKind>()
                .map_err(|e| Error::config(file, "scheduler", s, e.to_string()))?;
        }
        if let Some(s) = self.au_scale
            && !s.is_finite()
        {
            return bad("au_scale", &s, "must be finite");
        }
        match (self.counts.is_empty(), self.total) {
            (false, Some(_)) => {
                return bad("total", &"set", "give either counts or total + shares");
            }
            (true, None) => return bad("counts", &"missing", "give counts or total + shares"),
            (true, Some(t)) => {
                if t == 0 || t > MAX_ITEMS {
                    return bad("total", &t, &format!("must be 1..={MAX_ITEMS}"));
                }
                if self.shares.is_empty() {
                    return bad("shares", &"missing", "total needs class shares");
                }
                for (name, share) in &self.shares {
                    class(name, file, &format!("shares.{name}"))?;
                    if !share.is_finite() || *share < 0.0 {
                        return bad(&format!("shares.{name}"), share, "must be ≥ 0");
                    }
                }
                if self.shares.values().sum::<f64>() <= 0.0 {
                    return bad("shares", &"0", "shares must not all be 0");
                }
            }
            (false, None) => {
                for name in self.counts.keys() {
                    class(name, file, &format!("counts.{name}"))?;
                }
                // Checked sums: counts near usize::MAX must not overflow.
                let sum = self
                    .counts
                    .values()
                    .try_fold(0usize, |acc, c| acc.checked_add(*c));
                match sum {
                    Some(0) => return bad("counts", &0, "nothing to generate"),
                    Some(n) if n <= MAX_ITEMS => {}
                    _ => {
                        let shown = self.counts.values().map(|c| *c as f64).sum::<f64>();
                        return bad(
                            "counts",
                            &shown,
                            &format!("at most {MAX_ITEMS} items in all"),
                        );
                    }
                }
            }
        }
        for (name, e) in &self.expressions {
            let key = format!("expressions.{name}");
            class(name, file, &key)?;
            for (code, v) in &e.aus {
                let mut probe = AuVector::zeros(FINEFACE);
                probe.set(code, *v).map_err(|err| {
                    Error::config(file, format!("{key}.aus.{code}"), v, err.to_string())
                })?;
            }
            for (code, [lo, hi]) in &e.jitter {
                if !FINEFACE.codes.contains(&code.as_str()) {
                    return bad(&format!("{key}.jitter.{code}"), code, "not a FineFace AU");
                }
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return bad(
                        &format!("{key}.jitter.{code}"),
                        &format!("[{lo}, {hi}]"),
                        "expected [lo, hi] with lo ≤ hi",
                    );
                }
            }
            if !(0.0..=1.0).contains(&e.dropout) {
                return bad(
                    &format!("{key}.dropout"),
                    &e.dropout,
                    "must be a probability",
                );
            }
        }
        if self.prompt.templates.is_empty() {
            return bad("prompt.templates", &"[]", "at least one template");
        }
        for t in &self.prompt.templates {
            for slot in slots(t) {
                match self.prompt.vocab.get(slot) {
                    Some(words) if !words.is_empty() => {}
                    _ => {
                        return bad(
                            "prompt.vocab",
                            &slot,
                            "a template uses this slot but it has no words",
                        );
                    }
                }
            }
        }
        if self.split.is_empty()
            || self.split.values().any(|v| !v.is_finite() || *v < 0.0)
            || self.split.values().sum::<f64>() <= 0.0
        {
            return bad("split", &"shares", "non-negative shares, not all 0");
        }
        if let Some(bad_name) = self
            .split
            .keys()
            .find(|k| k.is_empty() || k.contains(['/', '\\', '.']))
        {
            return bad("split", bad_name, "split names become folder names");
        }
        if let Some(sg) = &self.semantic_guidance {
            sg.validate()
                .map_err(|e| Error::config(file, "semantic_guidance", "…", e.to_string()))?;
        }
        if !(0.0..=1.0).contains(&self.label.confidence) {
            return bad(
                "label.confidence",
                &self.label.confidence,
                "must be in 0..=1",
            );
        }
        Ok(())
    }

    /// Items per expression, in [`crate::eval::EXPRESSIONS`] order of appearance in the plan.
    pub fn class_counts(&self) -> Vec<(Expression, usize)> {
        let parse = |n: &str| Expression::parse(n).expect("validated");
        if let Some(total) = self.total {
            // Largest-remainder apportionment of `total` by shares.
            let sum: f64 = self.shares.values().sum();
            let exact: Vec<(Expression, f64)> = self
                .shares
                .iter()
                .map(|(n, s)| (parse(n), total as f64 * s / sum))
                .collect();
            let mut counts: Vec<(Expression, usize)> = exact
                .iter()
                .map(|(e, x)| (*e, x.floor() as usize))
                .collect();
            let mut rest = total - counts.iter().map(|c| c.1).sum::<usize>();
            let mut order: Vec<usize> = (0..exact.len()).collect();
            order.sort_by(|&a, &b| {
                let fa = exact[a].1 - exact[a].1.floor();
                let fb = exact[b].1 - exact[b].1.floor();
                fb.total_cmp(&fa).then(a.cmp(&b))
            });
            for i in order {
                if rest == 0 {
                    break;
                }
                counts[i].1 += 1;
                rest -= 1;
            }
            counts
        } else {
            self.counts.iter().map(|(n, c)| (parse(n), *c)).collect()
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.class_counts().iter().map(|c| c.1).sum()
    }

    /// Whether the plan has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every item, in index order.
    pub fn items(&self) -> Vec<Item> {
        let mut classes: Vec<Expression> = self
            .class_counts()
            .into_iter()
            .flat_map(|(e, n)| std::iter::repeat_n(e, n))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix(self.seed ^ 0x5eed_c1a5));
        classes.shuffle(&mut rng);
        classes
            .into_iter()
            .enumerate()
            .map(|(k, e)| self.item(k, e))
            .collect()
    }

    fn item(&self, index: usize, expression: Expression) -> Item {
        let seed = mix(mix(self.seed) ^ index as u64);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let template = &self.prompt.templates[rng.random_range(0..self.prompt.templates.len())];
        let prompt = fill(template, &self.prompt.vocab, &mut rng);
        let settings = self
            .expressions
            .get(expression.name())
            .cloned()
            .unwrap_or_default();
        let mut aus = expression.prototype(FINEFACE);
        for (code, v) in &settings.aus {
            aus.set(code, *v).expect("validated");
        }
        let mut values: BTreeMap<String, f32> = FINEFACE
            .codes
            .iter()
            .map(|c| (c.to_string(), aus.get(c).unwrap_or(0.0)))
            .collect();
        for (code, v) in values.iter_mut() {
            if let Some([lo, hi]) = settings.jitter.get(code) {
                *v += lo + (hi - lo) * rng.random::<f32>();
            }
            if *v > 0.0 && settings.dropout > 0.0 && rng.random_bool(settings.dropout) {
                *v = 0.0;
            }
            *v = v.clamp(0.0, FINEFACE.max);
        }
        let total: f64 = self.split.values().sum();
        let mut u = rng.random::<f64>() * total;
        let mut split = self.split.keys().next_back().cloned().unwrap_or_default();
        for (name, share) in &self.split {
            if u < *share {
                split = name.clone();
                break;
            }
            u -= share;
        }
        Item {
            index,
            id: format!("{index:06}"),
            expression,
            prompt,
            aus: values,
            seed,
            split,
        }
    }

    /// The generation request of `item`.
    pub fn request(&self, item: &Item) -> GenerateRequest {
        GenerateRequest {
            prompt: item.prompt.clone(),
            negative_prompt: self.prompt.negative.clone(),
            steps: self.steps,
            guidance_scale: self.guidance,
            seed: item.seed,
            width: self.size,
            height: self.size,
            num_images: 1,
            scheduler: self
                .scheduler
                .as_deref()
                .map(|s| s.parse().expect("validated")),
            clip_skip: None,
            expression: Some(item.expression),
            aus: Some(item.aus.clone()),
            au_scale: self.au_scale,
            semantic_guidance: self.semantic_guidance.clone(),
            start: self.layout.as_ref().map(|l| ImageStart {
                mode: StartMode::Layout,
                strength: l.strength,
                prompt: l.prompt.clone(),
                source: None,
            }),
        }
    }
}

/// An expression both FER classifiers know (the 7 of [`CLASSES`]), or an error naming `key`.
fn class(name: &str, file: &str, key: &str) -> Result<Expression> {
    match Expression::parse(name) {
        Ok(e) if Expression::SEVEN.contains(&e) => Ok(e),
        _ => Err(Error::config(
            file,
            key,
            name,
            format!("expected one of {}", CLASSES.join(", ")),
        )),
    }
}

/// The `{slot}` names of a template.
fn slots(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

/// Fills `{slot}`s with words drawn from `vocab`.
fn fill(template: &str, vocab: &BTreeMap<String, Vec<String>>, rng: &mut impl Rng) -> String {
    let mut out = template.to_string();
    for slot in slots(template) {
        let words = &vocab[slot];
        let word = &words[rng.random_range(0..words.len())];
        out = out.replacen(&format!("{{{slot}}}"), word, 1);
    }
    out
}
