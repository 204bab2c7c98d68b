//! The data ceiling: how a dataset scores on the metrics `synfer eval` applies to a model.
//!
//! A model cannot show an expression more clearly than its training images do, so before
//! training we measure the images themselves the way [`crate::eval`] measures generated ones:
//! per labelled class, the share that mini-Xception (FER B, the independent judge, which never
//! labels or selects data) puts in the same class, and the share in which BlazeFace finds a face
//! ([`crate::label::face_score`] ≥ [`crate::label::FACE_THRESHOLD`]). It also reports the
//! percentiles of every AU label, from which a model's `au_range` (the data intensity that a
//! request of 5 maps to) is taken.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::au::FINEFACE;
use crate::dataset::metadata::Record;
use crate::error::{Error, Result};
use crate::expression::CLASSES;
use crate::face::analyzer::FaceAnalyzer;
use crate::label::{FACE_THRESHOLD, judge};

/// The audit of one class (records whose label is that class).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClassAudit {
    /// Images audited.
    pub images: usize,
    /// Share that mini-Xception puts in this class.
    pub judge_agreement: f64,
    /// Share with a face by BlazeFace.
    pub face_rate: f64,
    /// mini-Xception's labels of these images.
    pub judged: BTreeMap<String, usize>,
}

/// Percentiles of one AU's labels over all audited records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuPercentiles {
    /// Median.
    pub p50: f32,
    /// 90th percentile.
    pub p90: f32,
    /// 95th percentile.
    pub p95: f32,
    /// 99th percentile.
    pub p99: f32,
    /// Largest label.
    pub max: f32,
}

/// One audited image (a line of `audit.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditItem {
    /// Image path relative to the dataset folder.
    pub file_name: String,
    /// The dataset's label.
    pub label: String,
    /// mini-Xception's label.
    pub judge: String,
    /// [`crate::label::face_score`] of the image.
    pub face_score: f32,
}

/// The audit of one set of records (the whole dataset, or one source).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetAudit {
    /// Records audited.
    pub images: usize,
    /// Mean over the classes present of [`ClassAudit::judge_agreement`] (as `synfer eval`'s
    /// mean agreement).
    pub mean_agreement: f64,
    /// Share of the images with a face.
    pub face_rate: f64,
    /// Per class (canonical names).
    pub classes: BTreeMap<String, ClassAudit>,
}

/// Counts per class while auditing: images, judge hits, faces, the judge's labels.
#[derive(Default)]
struct Tally(BTreeMap<String, (usize, usize, usize, BTreeMap<String, usize>)>);

impl Tally {
    fn add(&mut self, label: &str, verdict: &str, face: bool) {
        let entry = self.0.entry(label.to_string()).or_default();
        entry.0 += 1;
        entry.1 += usize::from(verdict == label);
        entry.2 += usize::from(face);
        *entry.3.entry(verdict.to_string()).or_default() += 1;
    }

    fn finish(self) -> SetAudit {
        let images: usize = self.0.values().map(|e| e.0).sum();
        let faces: usize = self.0.values().map(|e| e.2).sum();
        let classes: BTreeMap<String, ClassAudit> = self
            .0
            .into_iter()
            .map(|(name, (n, hits, faces, judged))| {
                let audit = ClassAudit {
                    images: n,
                    judge_agreement: hits as f64 / n as f64,
                    face_rate: faces as f64 / n as f64,
                    judged,
                };
                (name, audit)
            })
            .collect();
        let mean_agreement = if classes.is_empty() {
            0.0
        } else {
            classes.values().map(|c| c.judge_agreement).sum::<f64>() / classes.len() as f64
        };
        SetAudit {
            images,
            mean_agreement,
            face_rate: faces as f64 / images.max(1) as f64,
            classes,
        }
    }
}

/// The whole audit (`audit.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Audit {
    /// Every record.
    #[serde(flatten)]
    pub all: SetAudit,
    /// Per source (the records' `source`: `franck`, `celeba`, `gan-face-generate`, …).
    #[serde(default)]
    pub sources: BTreeMap<String, SetAudit>,
    /// Per FineFace AU.
    pub aus: BTreeMap<String, AuPercentiles>,
    /// Every image (written to `audit.jsonl`, not to `audit.json`).
    #[serde(skip)]
    pub items: Vec<AuditItem>,
}

impl Audit {
    /// Writes the report to `path` (JSON) and the per-image verdicts beside it (`.jsonl`).
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json("audit.json", e))?;
        crate::files::write_atomic(path, &json)?;
        crate::files::write_atomic(
            &path.with_extension("jsonl"),
            crate::files::to_jsonl(&self.items, "audit.jsonl")?.as_bytes(),
        )
    }
}

/// Audits `records` of the dataset folder `dir` (images read from `dir/file_name`);
/// `progress(done, total)` after each image.
pub fn audit(
    analyzer: &FaceAnalyzer,
    dir: &Path,
    records: &[Record],
    mut progress: impl FnMut(usize, usize),
) -> Result<Audit> {
    let mut all = Tally::default();
    let mut sources: BTreeMap<String, Tally> = BTreeMap::new();
    let mut items = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let path = dir.join(&r.file_name);
        let img = image::open(&path)
            .map_err(|e| Error::request("data", format!("{}: {e}", path.display())))?
            .to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w != h {
            return Err(Error::request(
                "data",
                format!("{}: {w}×{h} is not a square face crop", path.display()),
            ));
        }
        let rgb = img.into_raw();
        let (score, report) = judge(analyzer, w, &rgb)?;
        let face = score >= FACE_THRESHOLD;
        let verdict = report.expression.mini_xception.label;
        all.add(&r.label, verdict, face);
        sources
            .entry(r.source.clone())
            .or_default()
            .add(&r.label, verdict, face);
        items.push(AuditItem {
            file_name: r.file_name.clone(),
            label: r.label.clone(),
            judge: verdict.to_string(),
            face_score: score,
        });
        progress(i + 1, records.len());
    }
    Ok(Audit {
        all: all.finish(),
        sources: sources
            .into_iter()
            .map(|(name, t)| (name, t.finish()))
            .collect(),
        aus: au_percentiles(records),
        items,
    })
}

/// Percentiles of each FineFace AU over `records` (nearest rank; zeros for no records).
pub fn au_percentiles(records: &[Record]) -> BTreeMap<String, AuPercentiles> {
    FINEFACE
        .codes
        .iter()
        .map(|code| {
            let mut v: Vec<f32> = records
                .iter()
                .map(|r| r.aus.get(*code).copied().unwrap_or(0.0))
                .collect();
            v.sort_by(f32::total_cmp);
            let at = |q: f64| -> f32 {
                if v.is_empty() {
                    return 0.0;
                }
                let rank = (q * v.len() as f64).ceil() as usize;
                v[rank.clamp(1, v.len()) - 1]
            };
            let p = AuPercentiles {
                p50: at(0.50),
                p90: at(0.90),
                p95: at(0.95),
                p99: at(0.99),
                max: v.last().copied().unwrap_or(0.0),
            };
            (code.to_string(), p)
        })
        .collect()
}

/// A one-line-per-class table for the terminal, then one line per source.
pub fn table(a: &Audit) -> String {
    let mut out = set_table(&a.all);
    if a.sources.len() > 1 {
        for (name, s) in &a.sources {
            out.push_str(&format!("\nsource {name}:\n"));
            out.push_str(&set_table(s));
        }
    }
    out
}

fn set_table(a: &SetAudit) -> String {
    let mut out = format!(
        "{:<10} {:>7} {:>9} {:>7}  mini-Xception labels\n",
        "class", "images", "agreement", "faces"
    );
    for c in CLASSES {
        let Some(x) = a.classes.get(c) else { continue };
        let judged = x
            .judged
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "{c:<10} {:>7} {:>8.1}% {:>6.1}%  {judged}\n",
            x.images,
            100.0 * x.judge_agreement,
            100.0 * x.face_rate
        ));
    }
    out.push_str(&format!(
        "{:<10} {:>7} {:>8.1}% {:>6.1}%\n",
        "mean",
        a.images,
        100.0 * a.mean_agreement,
        100.0 * a.face_rate
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(aus: &[(&str, f32)]) -> Record {
        Record {
            aus: aus.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            label: "neutral".into(),
            ..Record::default()
        }
    }

    #[test]
    fn tallies_give_per_class_agreement_and_the_mean_over_classes() {
        let mut t = Tally::default();
        // happy: 3 images, the judge agrees on 2, faces in 3; sad: 1 image, judged happy, no face.
        t.add("happy", "happy", true);
        t.add("happy", "happy", true);
        t.add("happy", "neutral", true);
        t.add("sad", "happy", false);
        let a = t.finish();
        assert_eq!(a.images, 4);
        assert!((a.classes["happy"].judge_agreement - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.classes["sad"].judge_agreement, 0.0);
        assert_eq!(a.classes["sad"].judged["happy"], 1);
        assert!((a.mean_agreement - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.face_rate, 0.75);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // AU12 = 1, 2, …, 100: nearest-rank p50 = 50, p90 = 90, p99 = 99, max = 100.
        let records: Vec<Record> = (1..=100).map(|k| record(&[("AU12", k as f32)])).collect();
        let p = &au_percentiles(&records)["AU12"];
        assert_eq!(
            (p.p50, p.p90, p.p95, p.p99, p.max),
            (50.0, 90.0, 95.0, 99.0, 100.0)
        );
        // Missing units count as 0.
        assert_eq!(au_percentiles(&records)["AU1"].max, 0.0);
    }
}
