//! `metadata.jsonl`, synfer's one dataset format (Hugging Face `datasets` loads a folder with
//! it as `imagefolder`): one [`Record`] per image, written by the training-data builder
//! (`synfer data build`) and by `synfer synth`, read by training, `synfer fer` and the audit.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::au::{AuVector, FINEFACE};
use crate::error::{Error, Result};

/// The file name inside a dataset folder.
pub const FILE: &str = "metadata.jsonl";

/// One labelled image of a dataset folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Image path relative to the folder (`images/000123.png`).
    pub file_name: String,
    /// The image's class, a canonical name or an alias (`synfer data build` folders before
    /// this format called it `expression`; both are read).
    #[serde(alias = "expression")]
    pub label: String,
    /// `train`, `val` or `test`, when the folder has splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// The caption (training data) or the prompt the image was generated from (synthesis).
    #[serde(default, skip_serializing_if = "String::is_empty", alias = "prompt")]
    pub caption: String,
    /// FineFace AU intensities (0–5) measured on the image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aus: BTreeMap<String, f32>,
    /// Class probabilities by labeller (`face-api`, `mini-xception`, voters, `ensemble`), class
    /// → p. A flat class → p map (older training data: the mirror vote) reads as labeller
    /// [`MIRROR_VOTE`].
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "probs_by_labeller"
    )]
    pub probs: BTreeMap<String, BTreeMap<String, f32>>,
    /// The labelling vote's probability of `label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// The expression a synthetic image was generated for (`synfer synth` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// Where the pixels came from (`gan-face-generate`, `franck`, `synfer synth`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Details of the origin: package, in-package path, latent seed or frame, warp; for
    /// synthetic images the item id, index, seed and labelling outcome.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provenance: BTreeMap<String, String>,
}

/// The labeller name of the training data's mirror vote ([`crate::label::mirror_vote`]).
pub const MIRROR_VOTE: &str = "face-api-mirror";

fn probs_by_labeller<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, BTreeMap<String, f32>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Probs {
        ByLabeller(BTreeMap<String, BTreeMap<String, f32>>),
        Flat(BTreeMap<String, f32>),
    }
    Ok(match Probs::deserialize(d)? {
        Probs::ByLabeller(m) => m,
        Probs::Flat(m) if m.is_empty() => BTreeMap::new(),
        Probs::Flat(m) => BTreeMap::from([(MIRROR_VOTE.to_string(), m)]),
    })
}

impl Record {
    /// The AU vector in FineFace order.
    pub fn au_vector(&self) -> Result<AuVector> {
        let mut v = AuVector::zeros(FINEFACE);
        for (code, value) in &self.aus {
            v.set(code, *value)?;
        }
        Ok(v)
    }

    /// The probability of the label: `confidence`, else the label's probability under the
    /// only labeller, else 1 (an unlabelled vote).
    pub fn label_probability(&self) -> f32 {
        self.confidence
            .or_else(|| match self.probs.values().collect::<Vec<_>>()[..] {
                [only] => only.get(&self.label).copied(),
                _ => None,
            })
            .unwrap_or(1.0)
    }
}

/// Parses `metadata.jsonl` text (blank lines skipped); errors name `file` and the line.
pub fn parse(text: &str, file: &str) -> Result<Vec<Record>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::dataset(file, format!("line {}", i + 1), e.to_string()))
        })
        .collect()
}

/// Reads the `metadata.jsonl` of dataset folder `dir`.
pub fn read(dir: &Path) -> Result<Vec<Record>> {
    let path = dir.join(FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse(&text, &path.display().to_string())
}

/// `records` as `metadata.jsonl` text, one line each.
pub fn to_text(records: &[Record]) -> Result<String> {
    crate::files::to_jsonl(records, FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_producers_and_the_older_training_data() {
        let text = concat!(
            r#"{"file_name": "a.png", "expression": "happy", "caption": "c", "aus": {"AU12": 2.0}, "probs": {"happy": 0.75, "sad": 0.25}, "source": "franck", "provenance": {"frame": "3"}}"#,
            "\n\n",
            r#"{"file_name": "b.png", "label": "sad", "split": "train", "requested": "happy", "confidence": 0.5, "probs": {"face-api": {"sad": 0.6}, "ensemble": {"sad": 0.5}}}"#,
            "\n"
        );
        let r = parse(text, "m.jsonl").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].label.as_str(), r[0].label_probability()),
            ("happy", 0.75)
        );
        assert_eq!(r[0].probs[MIRROR_VOTE]["sad"], 0.25);
        assert_eq!(r[0].au_vector().unwrap().get("AU12"), Some(2.0));
        assert_eq!(r[1].requested.as_deref(), Some("happy"));
        assert_eq!(r[1].label_probability(), 0.5);
        // Written back, a record reads as itself.
        let again = parse(&to_text(&r).unwrap(), "m.jsonl").unwrap();
        assert_eq!(again, r);
        let err = parse("{}\n{\"file_name\": \"x\"}", "m.jsonl")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.jsonl") && err.contains("line 1"), "{err}");
    }
}
