//! The ensemble of FER classifiers that reads each synthetic image: the two built-in
//! classifiers (face-api.js and mini-Xception) plus any voters trained by `synfer fer train`;
//! the ensemble's probabilities are the mean of its members'.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::judge::face_score;
use crate::au::FINEFACE;
use crate::error::Result;
use crate::expression::{Probs, average};
use crate::face::analyzer::FaceAnalyzer;
use crate::fer::FerClassifier;
use crate::image::RgbView;

/// The analysis of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// BlazeFace score of the crop ([`super::judge::face_score`]).
    pub face_score: f32,
    /// Probabilities by classifier name (`face-api`, `mini-xception`).
    pub probs: BTreeMap<String, Probs>,
    /// Measured FineFace AUs.
    pub aus: BTreeMap<String, f32>,
}

/// The built-in classifiers' names in [`Analysis::probs`], plans and reports.
pub const BUILT_IN: [&str; 2] = ["face-api", "mini-xception"];

/// A classifier trained by `synfer fer train`, voting in the ensemble.
#[derive(Debug)]
pub struct Voter {
    /// Its name in reports (the model folder's last component).
    pub name: String,
    /// The classifier.
    pub model: FerClassifier,
    /// Its files' length and CRC-32 (`fer.json` and `model.safetensors` together).
    pub stamp: crate::pipeline::FileStamp,
}

impl Voter {
    /// Loads the model folders `dirs` on `device`; names must differ from each other and from
    /// the built-in classifiers.
    #[cfg(not(target_family = "wasm"))]
    pub fn load_all(dirs: &[String], device: &burn::tensor::Device) -> Result<Vec<Voter>> {
        use crate::error::Error;
        use std::collections::BTreeSet;
        use std::path::Path;
        let mut names: BTreeSet<String> = BUILT_IN
            .iter()
            .chain(&["ensemble"])
            .map(|n| n.to_string())
            .collect();
        dirs.iter()
            .map(|d| {
                let path = Path::new(d);
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(d)
                    .to_string();
                if !names.insert(name.clone()) {
                    return Err(Error::request(
                        "label.voters",
                        format!("{d}: a second voter named {name:?}"),
                    ));
                }
                let (config, weights) = FerClassifier::read_dir(path)?;
                Ok(Voter {
                    name,
                    model: FerClassifier::from_bytes(d, &config, &weights, device)?,
                    stamp: crate::pipeline::FileStamp::content(&[&config, &weights]),
                })
            })
            .collect()
    }
}

impl Analysis {
    /// Analyses an aligned `side`² RGB crop with the built-in classifiers and `voters`.
    pub fn of(analyzer: &FaceAnalyzer, voters: &[Voter], side: usize, rgb: &[u8]) -> Result<Self> {
        let face_score = face_score(analyzer, side, rgb)?;
        let view = RgbView::new(side, side, rgb)?;
        let report = analyzer.analyze_cropped(view)?;
        let mut probs = BTreeMap::from([
            (BUILT_IN[0].to_string(), report.expression.face_api.probs),
            (
                BUILT_IN[1].to_string(),
                report.expression.mini_xception.probs,
            ),
        ]);
        for v in voters {
            let p = v.model.classify(&[view], analyzer.device())?;
            probs.insert(v.name.clone(), v.model.to_canonical7(&p[0]));
        }
        let aus = FINEFACE
            .codes
            .iter()
            .map(|c| (c.to_string(), report.aus.get(c).unwrap_or(0.0)))
            .collect();
        Ok(Analysis {
            face_score,
            probs,
            aus,
        })
    }

    /// The mean of the classifiers' probabilities.
    pub fn ensemble(&self) -> Probs {
        self.ensemble_of(&[])
    }

    /// The mean of the named classifiers' probabilities (every classifier when `judges` is
    /// empty). Names are checked by [`check_judges`] before any image is analysed.
    pub fn ensemble_of(&self, judges: &[String]) -> Probs {
        let members: Vec<Probs> = self
            .probs
            .iter()
            .filter(|(name, _)| judges.is_empty() || judges.contains(name))
            .map(|(_, p)| *p)
            .collect();
        average(&members)
    }
}

/// Checks that every name in `judges` is a built-in classifier (`face-api`, `mini-xception`)
/// or one of `voters`.
pub fn check_judges(judges: &[String], voters: &[Voter]) -> Result<()> {
    for j in judges {
        let known = BUILT_IN.contains(&j.as_str()) || voters.iter().any(|v| &v.name == j);
        if !known {
            let mut names = BUILT_IN.to_vec();
            names.extend(voters.iter().map(|v| v.name.as_str()));
            return Err(crate::error::Error::request(
                "label.judges",
                format!(
                    "{j:?} is not a classifier of this plan (known: {})",
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(())
}
