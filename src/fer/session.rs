//! `synfer fer` from dataset paths to results: a training session (listing, pseudo-label
//! filters, decoding, the validation split, resume checks, `train.json`, training), an
//! evaluation (`eval.json`, `confusion.png`) and per-file prediction.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::Serialize;

use super::classifier::FerClassifier;
use super::metrics::{Confusion, Metrics};
use super::train::{FerStage, Trained, evaluate, train_classifier};
use crate::dataset::{LabelledImages, Listing, list};
use crate::error::{Error, Result};
use crate::expression::{NAMES, argmax, canonical_index};
use crate::face::analyzer::{FaceAnalyzer, FaceCrop};
use crate::files::write_atomic;
use crate::image::RgbView;
use crate::train::run::{LoopConfig, LossEntry, RunDir};

/// Labelled images of some datasets: which paths, which split (`all`: every image).
#[derive(Debug, Clone, Serialize)]
pub struct DataSpec {
    /// Dataset paths, any layout [`crate::dataset::list`] reads.
    pub paths: Vec<PathBuf>,
    /// The split to take where a layout has one (`all`: every image).
    pub split: String,
}

impl DataSpec {
    /// The split as [`LabelledImages::decode`] takes it.
    fn choice(&self) -> Option<&str> {
        (self.split != "all").then_some(self.split.as_str())
    }

    /// Lists every path.
    pub fn list(&self) -> Result<Vec<Listing>> {
        self.paths.iter().map(|p| list(p)).collect()
    }
}

/// A training session of `synfer fer train`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSession {
    /// Training sets.
    pub data: DataSpec,
    /// Validation sets (empty: the training sets' items in `val_split`, if any).
    pub val: DataSpec,
    /// Synthetic images below this pseudo-label confidence are left out.
    pub min_confidence: f32,
    /// Synthetic images on which the pseudo-labelling classifiers disagree are left out.
    pub consensus: bool,
    /// The model and its sampling.
    pub stage: FerStage,
    /// The optimisation loop.
    #[serde(rename = "loop")]
    pub cfg: LoopConfig,
}

/// What one set of decoded images is made of, for the command's report.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The images.
    pub images: LabelledImages,
    /// The listings they came from.
    pub listings: Vec<Listing>,
}

impl Decoded {
    /// `N images [class n, …] from PATH (Layout, synthetic); skipped {…}`.
    pub fn summary(&self) -> String {
        let d = &self.images;
        let counts: Vec<String> = d
            .classes
            .iter()
            .zip(d.class_counts())
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let kinds: Vec<String> = self
            .listings
            .iter()
            .map(|l| {
                format!(
                    "{} ({:?}{})",
                    l.root.display(),
                    l.layout,
                    if l.synthetic { ", synthetic" } else { "" }
                )
            })
            .collect();
        format!(
            "{} images [{}] from {}; skipped {:?}",
            d.len(),
            counts.join(", "),
            kinds.join(", "),
            d.skipped
        )
    }
}

/// Decodes `listings` in `split` at `side` px.
fn decode(
    listings: Vec<Listing>,
    split: Option<&str>,
    side: usize,
    contempt: bool,
) -> Result<Decoded> {
    let images = LabelledImages::decode(&listings, split, side, contempt)?;
    Ok(Decoded { images, listings })
}

impl TrainSession {
    /// The training images (pseudo-label filters applied) and the validation images.
    pub fn decode(&self) -> Result<(Decoded, Option<Decoded>)> {
        let side = self.stage.model.input_size;
        let contempt = self.stage.model.classes.len() > 7;
        let mut sets = self.data.list()?;
        for l in &mut sets {
            l.filter_pseudo_labels(self.min_confidence, self.consensus);
        }
        let val = if !self.val.paths.is_empty() {
            Some(decode(self.val.list()?, self.val.choice(), side, contempt)?)
        } else {
            let named = |l: &Listing| {
                let mut l = l.clone();
                l.items
                    .retain(|i| i.split.as_deref() == Some(self.val.split.as_str()));
                l
            };
            // Only items that name the split: split-less items (used for training) must not
            // be validated on.
            let val_sets: Vec<Listing> = sets.iter().map(named).collect();
            let any = val_sets.iter().any(|l| !l.items.is_empty());
            if any && self.data.choice().is_some() {
                Some(decode(val_sets, self.val.choice(), side, contempt)?)
            } else {
                None
            }
        };
        let train = decode(sets, self.data.choice(), side, contempt)?;
        if train.images.is_empty() {
            return Err(Error::request(
                "data",
                format!(
                    "no images in split {:?} of the training sets",
                    self.data.split
                ),
            ));
        }
        Ok((train, val))
    }

    /// An existing run in `run` must have been started with the same stage (steps may grow).
    pub fn check_resume(&self, run: &RunDir) -> Result<()> {
        let path = run.root.join("train.json");
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(());
        };
        if run.saved_step()?.is_none() {
            return Ok(());
        }
        let old: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(path.display().to_string(), e))?;
        let new = serde_json::to_value(&self.stage).map_err(|e| Error::json("stage", e))?;
        if old.get("stage") != Some(&new) {
            return Err(Error::request(
                "out",
                format!(
                    "{} holds a run with other settings (train.json `stage`); use a new --out",
                    run.root.display()
                ),
            ));
        }
        Ok(())
    }

    /// Trains (or resumes) in `out` on `device` (made autodiff here): writes `train.json`
    /// (this session, image counts, device), then the model.
    pub fn train(
        &self,
        out: &Path,
        train: &Decoded,
        val: Option<&Decoded>,
        device: &Device,
        device_name: &str,
        on_step: impl FnMut(&LossEntry),
    ) -> Result<Trained> {
        let run = RunDir::open(out)?;
        self.check_resume(&run)?;
        #[derive(Serialize)]
        struct Record<'a> {
            #[serde(flatten)]
            session: &'a TrainSession,
            train_images: usize,
            train_classes: std::collections::BTreeMap<&'a str, usize>,
            val_images: Option<usize>,
            device: &'a str,
        }
        let t = &train.images;
        let record = Record {
            session: self,
            train_images: t.len(),
            train_classes: t
                .classes
                .iter()
                .map(String::as_str)
                .zip(t.class_counts())
                .collect(),
            val_images: val.map(|v| v.images.len()),
            device: device_name,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::json("train.json", e))?;
        write_atomic(&out.join("train.json"), &json)?;
        train_classifier(
            &run,
            t,
            val.map(|v| &v.images),
            &self.stage,
            &self.cfg,
            &device.clone().autodiff(),
            on_step,
        )
    }
}

/// Which images and classes `synfer fer eval` counts.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "native", derive(clap::Args))]
pub struct EvalOptions {
    /// Evaluate only these classes (comma-separated; images of others are skipped and the
    /// prediction is the most probable of these).
    #[cfg_attr(feature = "native", arg(long, value_delimiter = ','))]
    pub classes: Vec<String>,
    /// Skip images whose labeller was less sure than this (`metadata.jsonl`'s `confidence`,
    /// e.g. face-api.js labels of real faces; human-labelled layouts are always kept).
    #[cfg_attr(feature = "native", arg(long))]
    pub min_label_confidence: Option<f32>,
    /// Also report balanced accuracy (mean recall) over the classes with at least this many
    /// images, against chance for that many classes.
    #[cfg_attr(feature = "native", arg(long))]
    pub min_support: Option<usize>,
}

/// Evaluates the model of folder `model` on `data` as `options` say (classes by name or alias;
/// none: all of the model's): the metrics, with `eval.json` and `confusion.png` written to
/// `out`.
pub fn evaluate_dir(
    model: &Path,
    data: &DataSpec,
    options: &EvalOptions,
    out: &Path,
    device: &Device,
) -> Result<(Decoded, Metrics)> {
    let classifier = FerClassifier::load_dir(model, device)?;
    let contempt = classifier.canonical.contains(&7);
    let mut listings = data.list()?;
    if let Some(min) = options.min_label_confidence {
        for l in &mut listings {
            let before = l.items.len();
            l.items
                .retain(|item| item.label_confidence.is_none_or(|c| c >= min));
            let dropped = before - l.items.len();
            if dropped > 0 {
                *l.skipped.entry("label confidence".into()).or_default() += dropped;
            }
        }
    }
    let decoded = decode(listings, data.choice(), classifier.input_size, contempt)?;
    let n = decoded.images.classes.len();
    let classes = &options.classes;
    let classes: Vec<usize> = if classes.is_empty() {
        (0..n).collect()
    } else {
        classes
            .iter()
            .map(|c| {
                canonical_index(c)
                    .filter(|&i| i < n)
                    .ok_or_else(|| Error::request("classes", format!("unknown class {c:?}")))
            })
            .collect::<Result<_>>()?
    };
    let confusion: Confusion = evaluate(&classifier, &decoded.images, &classes, device)?;
    if confusion.total() == 0 {
        return Err(Error::request(
            "data",
            format!(
                "no images of the evaluated classes in split {:?}",
                data.split
            ),
        ));
    }
    let mut metrics = confusion.metrics();
    if let Some(min) = options.min_support {
        metrics = metrics.with_balanced(min);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let record = serde_json::json!({
        "model": model, "data": data.paths, "split": data.split, "options": options,
        "metrics": metrics,
    });
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::json("eval.json", e))?;
    write_atomic(&out.join("eval.json"), &json)?;
    confusion
        .plot(&format!(
            "ACCURACY {:.1}%  MACRO-F1 {:.3}  N={}",
            100.0 * metrics.accuracy,
            metrics.macro_f1,
            metrics.images
        ))
        .save(&out.join("confusion.png"))?;
    Ok((decoded, metrics))
}

/// One `synfer fer predict` verdict: the face and the class probabilities, in the model's
/// class order (serialised as `{"file", "label", "probs", "bbox"}`).
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The file.
    pub file: String,
    /// The face that was classified.
    pub face: FaceCrop,
    /// Class names, model order.
    pub classes: Vec<&'static str>,
    /// Probabilities, model order.
    pub probs: Vec<f32>,
}

impl Prediction {
    /// The most probable class and its probability.
    pub fn best(&self) -> (&'static str, f32) {
        let i = argmax(&self.probs);
        (self.classes[i], self.probs[i])
    }

    /// A tab-separated line: file, label, confidence, box.
    pub fn table_row(&self) -> String {
        let (label, p) = self.best();
        let [x, y, w, h] = self.face.bbox;
        format!(
            "{}\t{label}\t{p:.3}\t{x:.0},{y:.0},{w:.0},{h:.0}",
            self.file
        )
    }
}

impl Serialize for Prediction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Ordered<'a>(&'a [&'a str], &'a [f32]);
        impl Serialize for Ordered<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (name, p) in self.0.iter().zip(self.1) {
                    map.serialize_entry(name, p)?;
                }
                map.end()
            }
        }
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("file", &self.file)?;
        map.serialize_entry("label", self.best().0)?;
        map.serialize_entry("probs", &Ordered(&self.classes, &self.probs))?;
        map.serialize_entry("bbox", &self.face.bbox)?;
        map.end()
    }
}

impl FerClassifier {
    /// Classifies the first face of image file `path` (found by `analyzer`; without one the
    /// whole image is the face): `None` when no face is found.
    pub fn predict_file(
        &self,
        analyzer: Option<&FaceAnalyzer>,
        path: &Path,
        device: &Device,
    ) -> Result<Option<Prediction>> {
        let img = crate::image::read(path)?;
        let view = RgbView::new(img.width() as usize, img.height() as usize, img.as_raw())?;
        let face = match analyzer {
            Some(a) => match a.detect(view)?.into_iter().next() {
                Some(f) => f,
                None => return Ok(None),
            },
            None => FaceCrop::whole(view),
        };
        let probs = self.classify_crops(&[(view, face.crop)], device)?;
        Ok(probs.into_iter().next().map(|probs| Prediction {
            file: path.display().to_string(),
            face,
            classes: self.canonical.iter().map(|&c| NAMES[c]).collect(),
            probs,
        }))
    }
}
