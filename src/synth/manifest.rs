//! `manifest.jsonl`: the journal of a synthesis folder, one [`Record`] per finished item. A
//! record is appended only after its image was renamed into place, so the manifest is the
//! truth about what a folder holds; a torn last line (a kill mid-append) is cut off on read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plan::Item;
use crate::dataset::metadata;
use crate::error::{Error, Result};
use crate::expression::CLASSES;
use crate::label::{Analysis, Decision, Outcome};

/// One image's record (`manifest.jsonl`, and `metadata.jsonl` for kept images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Path relative to the output folder (`images/<split>/<label>/<id>.png`); `None` when
    /// dropped.
    pub file_name: Option<String>,
    /// Item id.
    pub id: String,
    /// Item index.
    pub index: usize,
    /// Split.
    pub split: String,
    /// Requested expression.
    pub requested: String,
    /// Final label (`None`: dropped).
    pub label: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Ensemble prediction and its probability.
    pub predicted: String,
    /// Ensemble probability of the final label (or of the prediction when dropped).
    pub confidence: f32,
    /// Per classifier and ensemble: prediction equals the request.
    pub agrees: BTreeMap<String, bool>,
    /// Probabilities by classifier (and `ensemble`), class → p.
    pub probs: BTreeMap<String, BTreeMap<String, f32>>,
    /// BlazeFace score.
    pub face_score: f32,
    /// Requested AUs.
    pub requested_aus: BTreeMap<String, f32>,
    /// Measured AUs.
    pub measured_aus: BTreeMap<String, f32>,
    /// The prompt the model encoded.
    pub prompt: String,
    /// Noise seed.
    pub seed: u64,
    /// The face the item started from (layout initialisation), when the plan has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
}

impl Record {
    /// The dataset line of a kept image (`None` when it was dropped): its label, split, the
    /// prompt as caption, measured AUs, every classifier's probabilities and the ensemble's
    /// confidence; item id, index, seed and outcome as provenance.
    pub fn metadata(&self) -> Option<metadata::Record> {
        let outcome = serde_json::to_value(self.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Some(metadata::Record {
            file_name: self.file_name.clone()?,
            label: self.label.clone()?,
            split: Some(self.split.clone()),
            caption: self.prompt.clone(),
            aus: self.measured_aus.clone(),
            probs: self.probs.clone(),
            confidence: Some(self.confidence),
            requested: Some(self.requested.clone()),
            source: "synfer synth".into(),
            provenance: BTreeMap::from([
                ("id".to_string(), self.id.clone()),
                ("index".to_string(), self.index.to_string()),
                ("seed".to_string(), self.seed.to_string()),
                ("outcome".to_string(), outcome),
            ])
            .into_iter()
            .chain(self.layout.clone().map(|l| ("layout".to_string(), l)))
            .collect(),
        })
    }
}

/// The record of `item` from its analysis and labelling decision.
pub fn record(item: &Item, prompt: String, analysis: &Analysis, d: &Decision) -> Record {
    let named = |p: &[f32; 7]| -> BTreeMap<String, f32> {
        CLASSES
            .iter()
            .map(|c| c.to_string())
            .zip(p.iter().copied())
            .collect()
    };
    let mut probs: BTreeMap<String, BTreeMap<String, f32>> = analysis
        .probs
        .iter()
        .map(|(k, p)| (k.clone(), named(p)))
        .collect();
    probs.insert("ensemble".into(), named(&d.ensemble));
    Record {
        file_name: d
            .label
            .as_ref()
            .map(|l| format!("images/{}/{l}/{}.png", item.split, item.id)),
        id: item.id.clone(),
        index: item.index,
        split: item.split.clone(),
        requested: item.expression.name().to_string(),
        label: d.label.clone(),
        outcome: d.outcome,
        predicted: d.predicted.clone(),
        confidence: d.confidence,
        agrees: d.agrees.clone(),
        probs,
        face_score: analysis.face_score,
        requested_aus: item.aus.clone(),
        measured_aus: analysis.aus.clone(),
        prompt,
        seed: item.seed,
        layout: None,
    }
}

/// Reads `manifest.jsonl`, dropping a torn last line (a kill mid-append) from the file.
pub fn read_manifest(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join("manifest.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut out = Vec::new();
    let mut good = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            break; // torn append
        }
        // serde's own position counts within the line; the file's line number is ours.
        let rec: Record = serde_json::from_str(line.trim_end()).map_err(|e| Error::Json {
            file: format!("{}:{}", path.display(), i + 1),
            message: e.to_string(),
        })?;
        good += line.len();
        out.push(rec);
    }
    if good < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        f.set_len(good as u64).map_err(|e| Error::io(&path, e))?;
    }
    Ok(out)
}

/// Appends `rec` as one line.
pub fn append_manifest(dir: &Path, rec: &Record) -> Result<()> {
    let path = dir.join("manifest.jsonl");
    let mut line = serde_json::to_string(rec).map_err(|e| Error::json("manifest.jsonl", e))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    f.write_all(line.as_bytes())
        .map_err(|e| Error::io(&path, e))
}
