//! What decides a synthesis folder's images besides its plan: synfer's version, every file the
//! pipeline was built from (model files, AU adapter, LoRAs) and the plan's voters, each with a
//! [`FileStamp`]. Stored in `shard.json`; a resume or merge with a different fingerprint is
//! refused with what changed, so one folder never mixes two models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::label::Voter;
use crate::pipeline::{FileStamp, Pipeline};

/// The fingerprint of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// synfer's version.
    pub synfer: String,
    /// Where the model came from (informative: a moved folder with the same files is the same
    /// model).
    pub model: String,
    /// The pipeline's files ([`crate::pipeline::ModelInfo::files`]).
    pub files: BTreeMap<String, FileStamp>,
    /// The plan's voters by name.
    pub voters: BTreeMap<String, FileStamp>,
}

impl Fingerprint {
    /// The fingerprint of `pipe` with `voters`.
    pub fn of(pipe: &Pipeline, voters: &[Voter]) -> Self {
        Fingerprint {
            synfer: env!("CARGO_PKG_VERSION").to_string(),
            model: pipe.info().source.clone(),
            files: pipe.info().files.clone(),
            voters: voters.iter().map(|v| (v.name.clone(), v.stamp)).collect(),
        }
    }

    /// What differs from `earlier`, one phrase each (empty: the same run).
    pub fn changes(&self, earlier: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.synfer != earlier.synfer {
            out.push(format!("synfer {} → {}", earlier.synfer, self.synfer));
        }
        diff("model file", &earlier.files, &self.files, &mut out);
        diff("voter", &earlier.voters, &self.voters, &mut out);
        out
    }
}

fn diff(
    what: &str,
    before: &BTreeMap<String, FileStamp>,
    now: &BTreeMap<String, FileStamp>,
    out: &mut Vec<String>,
) {
    for (name, stamp) in before {
        match now.get(name) {
            None => out.push(format!("{what} {name} is gone")),
            Some(s) if s != stamp => out.push(format!(
                "{what} {name} changed ({} → {} bytes{})",
                stamp.bytes,
                s.bytes,
                if s.bytes == stamp.bytes {
                    ", new content"
                } else {
                    ""
                }
            )),
            Some(_) => {}
        }
    }
    for name in now.keys().filter(|n| !before.contains_key(*n)) {
        out.push(format!("{what} {name} is new"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(bytes: u64, crc: u32) -> FileStamp {
        FileStamp {
            bytes,
            crc32: Some(crc),
            modified_ns: None,
        }
    }

    #[test]
    fn changes_name_each_difference() {
        let a = Fingerprint {
            synfer: "0.1.0".into(),
            model: "/a".into(),
            files: BTreeMap::from([
                ("unet/w".into(), stamp(10, 1)),
                ("vae/w".into(), stamp(5, 2)),
            ]),
            voters: BTreeMap::new(),
        };
        // A moved folder with the same files is the same run.
        let moved = Fingerprint {
            model: "/b".into(),
            ..a.clone()
        };
        assert!(moved.changes(&a).is_empty());
        let mut b = a.clone();
        b.synfer = "0.2.0".into();
        b.files.insert("unet/w".into(), stamp(10, 7));
        b.files.remove("vae/w");
        b.files.insert("adapter".into(), stamp(3, 3));
        b.voters.insert("fer-x".into(), stamp(1, 1));
        assert_eq!(
            b.changes(&a),
            [
                "synfer 0.1.0 → 0.2.0",
                "model file unet/w changed (10 → 10 bytes, new content)",
                "model file vae/w is gone",
                "model file adapter is new",
                "voter fer-x is new",
            ]
        );
    }
}
