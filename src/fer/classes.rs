//! Expression classes: the canonical 7 (face-api's order, [`crate::face::CLASSES`]) or 8 with
//! contempt, the names and aliases datasets use for them, and the numeric label codes of the
//! published FER datasets.
//!
//! | canonical  | aliases accepted (case-insensitive)     | FER2013 | RAF-DB basic | AffectNet |
//! |------------|-----------------------------------------|---------|--------------|-----------|
//! | neutral    | neutral, calm                           | 6       | 7            | 0         |
//! | happy      | happy, happiness, joy, smile            | 3       | 4            | 1         |
//! | sad        | sad, sadness                            | 4       | 5            | 2         |
//! | angry      | angry, anger                            | 0       | 6            | 6         |
//! | fearful    | fearful, fear, afraid, scared           | 2       | 2            | 4         |
//! | disgusted  | disgusted, disgust                      | 1       | 3            | 5         |
//! | surprised  | surprised, surprise                     | 5       | 1            | 3         |
//! | contempt   | contempt, contemptuous                  | –       | –            | 7         |
//!
//! AffectNet's codes 8–10 (none, uncertain, non-face) are not expressions: those rows are
//! skipped. With the 7-class set, contempt images are skipped too (and counted).

use crate::face::CLASSES;

/// Canonical class names: [`CLASSES`], then contempt.
pub const CANONICAL: [&str; 8] = {
    let c = CLASSES;
    [c[0], c[1], c[2], c[3], c[4], c[5], c[6], "contempt"]
};

/// FER2013's `emotion` codes 0–6 → canonical index.
pub const FER2013: [usize; 7] = [3, 5, 4, 1, 2, 6, 0];

/// RAF-DB basic's codes 1–7 (index = code − 1) → canonical index.
pub const RAF_DB: [usize; 7] = [6, 4, 5, 1, 2, 3, 0];

/// AffectNet's `expression` codes 0–7 → canonical index (8–10 are not expressions).
pub const AFFECTNET: [usize; 8] = [0, 1, 2, 6, 4, 5, 3, 7];

/// The class names of a 7- or 8-class set.
pub fn class_names(contempt: bool) -> Vec<String> {
    let n = if contempt { 8 } else { CLASSES.len() };
    CANONICAL[..n].iter().map(|s| s.to_string()).collect()
}

/// The canonical index (0–7) of a class name or alias, case-insensitive.
pub fn canonical_index(name: &str) -> Option<usize> {
    let lower = name.trim().to_ascii_lowercase();
    let index = match lower.as_str() {
        "neutral" | "calm" => 0,
        "happy" | "happiness" | "joy" | "smile" => 1,
        "sad" | "sadness" => 2,
        "angry" | "anger" => 3,
        "fearful" | "fear" | "afraid" | "scared" => 4,
        "disgusted" | "disgust" => 5,
        "surprised" | "surprise" => 6,
        "contempt" | "contemptuous" => 7,
        _ => return None,
    };
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_codes_map_to_the_documented_names() {
        let fer2013 = [
            "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
        ];
        let raf = [
            "surprise",
            "fear",
            "disgust",
            "happiness",
            "sadness",
            "anger",
            "neutral",
        ];
        let affectnet = [
            "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
        ];
        for (table, names) in [
            (&FER2013[..], &fer2013[..]),
            (&RAF_DB[..], &raf[..]),
            (&AFFECTNET[..], &affectnet[..]),
        ] {
            for (code, name) in names.iter().enumerate() {
                assert_eq!(Some(table[code]), canonical_index(name), "{name}");
            }
        }
        assert_eq!(class_names(false), CLASSES.map(String::from).to_vec());
        assert_eq!(canonical_index(" Happiness "), Some(1));
        assert_eq!(canonical_index("unknown"), None);
    }
}
