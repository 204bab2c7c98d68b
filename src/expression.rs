//! The expression classes: one definition of the basic expressions, their canonical label
//! order, the names and aliases datasets use for them, and the numeric label codes of the
//! published FER datasets.
//!
//! The first seven, in [`Expression::SEVEN`] order, are the canonical 7-class label order of
//! every classifier head in synfer (face-api.js' order); contempt (AffectNet-8) comes eighth.
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
//! AffectNet's codes 8–10 (none, uncertain, non-face) are not expressions. The prototypical
//! action units of each expression are AU knowledge: see [`crate::au::prototype`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A basic expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expression {
    /// No expression.
    Neutral,
    /// Happiness.
    Happy,
    /// Sadness.
    Sad,
    /// Anger.
    Angry,
    /// Fear.
    Fearful,
    /// Disgust.
    Disgusted,
    /// Surprise.
    Surprised,
    /// Contempt (the eighth class of AffectNet-8).
    Contempt,
}

/// One classifier's probabilities over the canonical seven classes ([`CLASSES`] order).
pub type Probs = [f32; 7];

impl Expression {
    /// The canonical 7 classes, in label order.
    pub const SEVEN: [Expression; 7] = [
        Expression::Neutral,
        Expression::Happy,
        Expression::Sad,
        Expression::Angry,
        Expression::Fearful,
        Expression::Disgusted,
        Expression::Surprised,
    ];

    /// All eight, contempt last.
    pub const EIGHT: [Expression; 8] = [
        Expression::Neutral,
        Expression::Happy,
        Expression::Sad,
        Expression::Angry,
        Expression::Fearful,
        Expression::Disgusted,
        Expression::Surprised,
        Expression::Contempt,
    ];

    /// Lower-case name (`happy`).
    pub const fn name(self) -> &'static str {
        match self {
            Expression::Neutral => "neutral",
            Expression::Happy => "happy",
            Expression::Sad => "sad",
            Expression::Angry => "angry",
            Expression::Fearful => "fearful",
            Expression::Disgusted => "disgusted",
            Expression::Surprised => "surprised",
            Expression::Contempt => "contempt",
        }
    }

    /// Label index in the canonical order (0–7).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The expression of canonical label index `index` (0–7).
    pub fn from_index(index: usize) -> Option<Self> {
        Self::EIGHT.get(index).copied()
    }

    /// The expression a name or alias (case-insensitive, see the module table) stands for.
    pub fn from_alias(name: &str) -> Option<Self> {
        let e = match name.trim().to_ascii_lowercase().as_str() {
            "neutral" | "calm" => Expression::Neutral,
            "happy" | "happiness" | "joy" | "smile" => Expression::Happy,
            "sad" | "sadness" => Expression::Sad,
            "angry" | "anger" => Expression::Angry,
            "fearful" | "fear" | "afraid" | "scared" => Expression::Fearful,
            "disgusted" | "disgust" => Expression::Disgusted,
            "surprised" | "surprise" => Expression::Surprised,
            "contempt" | "contemptuous" => Expression::Contempt,
            _ => return None,
        };
        Some(e)
    }

    /// Parses a name or alias ([`Expression::from_alias`]); an unknown one is an error listing
    /// the valid names.
    pub fn parse(name: &str) -> Result<Self> {
        Self::from_alias(name).ok_or_else(|| {
            Error::request(
                "expression",
                format!("unknown expression {name:?}; valid: {}", NAMES.join(", ")),
            )
        })
    }

    /// Word stems that show a prompt already names this expression.
    pub fn keywords(self) -> &'static [&'static str] {
        match self {
            Expression::Neutral => &["neutral", "expressionless", "blank expression"],
            Expression::Happy => &["happ", "smil", "joy", "laugh"],
            Expression::Sad => &["sad", "sorrow", "unhapp", "cry"],
            Expression::Angry => &["angry", "anger", "furious", "rage"],
            Expression::Fearful => &["fear", "afraid", "scared", "terrified"],
            Expression::Disgusted => &["disgust", "revolted"],
            Expression::Surprised => &["surpris", "astonish", "amazed", "shocked"],
            Expression::Contempt => &["contempt", "sneer", "scorn"],
        }
    }

    /// A word for prompts (`a happy face`).
    pub fn adjective(self) -> &'static str {
        match self {
            Expression::Contempt => "contemptuous",
            other => other.name(),
        }
    }
}

impl std::fmt::Display for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Expression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Expression::parse(s)
    }
}

const fn names<const N: usize>(list: [Expression; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = list[i].name();
        i += 1;
    }
    out
}

/// The canonical seven class names, in the order of every probability vector in synfer.
pub const CLASSES: [&str; 7] = names(Expression::SEVEN);

/// All eight class names: [`CLASSES`], then contempt.
pub const NAMES: [&str; 8] = names(Expression::EIGHT);

/// FER2013's `emotion` codes 0–6 → canonical index.
pub const FER2013: [usize; 7] = [3, 5, 4, 1, 2, 6, 0];

/// RAF-DB basic's codes 1–7 (index = code − 1) → canonical index.
pub const RAF_DB: [usize; 7] = [6, 4, 5, 1, 2, 3, 0];

/// AffectNet's `expression` codes 0–7 → canonical index (8–10 are not expressions).
pub const AFFECTNET: [usize; 8] = [0, 1, 2, 6, 4, 5, 3, 7];

/// The class names of a 7- or 8-class set.
pub fn class_names(contempt: bool) -> Vec<String> {
    let n = if contempt { 8 } else { 7 };
    NAMES[..n].iter().map(|s| s.to_string()).collect()
}

/// The canonical index (0–7) of a class name or alias, case-insensitive.
pub fn canonical_index(name: &str) -> Option<usize> {
    Expression::from_alias(name).map(Expression::index)
}

/// Index of the largest value, the first on ties (how every classifier here turns
/// probabilities into a label).
pub fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |b, i| if values[i] > values[b] { i } else { b })
}

/// The mean of several classifiers' probabilities, class by class (an ensemble's vote).
pub fn average(probs: &[Probs]) -> Probs {
    let n = probs.len().max(1) as f32;
    let mut out = [0.0; 7];
    for p in probs {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v / n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_canonical() {
        for (i, e) in Expression::EIGHT.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(Expression::from_index(i), Some(*e));
            assert_eq!(Expression::parse(e.name()).unwrap(), *e);
        }
        assert_eq!(CLASSES[..], NAMES[..7]);
        assert_eq!(
            Expression::parse("Surprise").unwrap(),
            Expression::Surprised
        );
        assert!(
            Expression::parse("bored")
                .unwrap_err()
                .to_string()
                .contains("valid: neutral")
        );
    }

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

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[0.1, 0.4, 0.4, 0.1]), 1);
        assert_eq!(argmax(&[]), 0);
    }
}
