//! The basic expressions and their prototypical action units.
//!
//! Prototypes follow EMFACS (Friesen & Ekman, *EMFACS-7*, 1983), as tabulated in Matsumoto &
//! Ekman, "Facial expression analysis", Scholarpedia 3(5):4237 (2008), table 1. FACS intensity
//! letters map to numbers A = 1 (trace) … E = 5 (maximum); the intensities chosen are those of a
//! clear, prototypical display:
//!
//! | expression | EMFACS prototype | FineFace (0–5) | OpenGraphAU (binary) |
//! |---|---|---|---|
//! | neutral | – | all 0 | all 0 |
//! | happy | 6 + 12 | AU6=3, AU12=4 | AU6, AU12 |
//! | sad | 1 + 4 + 15 | AU1=3, AU4=2, AU15=3, AU17=1 | AU1, AU4, AU15, AU17 |
//! | angry | 4 + 5 + 7 + 23 | AU4=4, AU5=2, AU17=2 | AU4, AU5, AU7, AU23 |
//! | fearful | 1 + 2 + 4 + 5 + 7 + 20 + 26 | AU1=3, AU2=2, AU4=2, AU5=3, AU20=3, AU25=2, AU26=2 | AU1, AU2, AU4, AU5, AU7, AU20, AU25, AU26 |
//! | disgusted | 9 + 15 + 16 | AU9=4, AU15=2, AU17=2 | AU9, AU10, AU15, AU16 |
//! | surprised | 1 + 2 + 5B + 26 | AU1=4, AU2=4, AU5=2, AU25=3, AU26=4 | AU1, AU2, AU5, AU25, AU26 |
//! | contempt | R12A + R14A | AU12=1 | AUR12, AUR14 |
//!
//! The FineFace set lacks AU7, AU10, AU14, AU16 and AU23, so those prototypes keep their other
//! units (AU17 stands in for the lip press of anger/sadness/disgust); contempt, being one-sided,
//! is only approximated there. AU25 (lips part) accompanies AU26 wherever the jaw drops.

use serde::{Deserialize, Serialize};

use super::catalog::AuSet;
use super::vector::AuVector;
use crate::error::{Error, Result};

/// A basic expression. The first seven, in this order, are the canonical 7-class label order
/// used by every classifier head in synfer (face-api's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    pub fn name(self) -> &'static str {
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

    /// Label index in the canonical order.
    pub fn index(self) -> usize {
        Self::EIGHT.iter().position(|e| *e == self).expect("listed")
    }

    /// Parses a name; common synonyms (`happiness`, `anger`, `fear`, `disgust`, `surprise`,
    /// `sadness`) are accepted.
    pub fn parse(name: &str) -> Result<Self> {
        let n = name.trim().to_ascii_lowercase();
        let e = match n.as_str() {
            "neutral" => Expression::Neutral,
            "happy" | "happiness" | "joy" => Expression::Happy,
            "sad" | "sadness" => Expression::Sad,
            "angry" | "anger" => Expression::Angry,
            "fearful" | "fear" | "afraid" => Expression::Fearful,
            "disgusted" | "disgust" => Expression::Disgusted,
            "surprised" | "surprise" => Expression::Surprised,
            "contempt" | "contemptuous" => Expression::Contempt,
            _ => {
                return Err(Error::request(
                    "expression",
                    format!(
                        "unknown expression {name:?}; valid: {}",
                        Self::EIGHT.map(Expression::name).join(", ")
                    ),
                ));
            }
        };
        Ok(e)
    }

    /// The prototype as `(code, value)` pairs for `set` (see the module table).
    fn prototype_pairs(self, set: &AuSet) -> &'static [(&'static str, f32)] {
        let fineface = !set.binary;
        match (self, fineface) {
            (Expression::Neutral, _) => &[],
            (Expression::Happy, true) => &[("AU6", 3.0), ("AU12", 4.0)],
            (Expression::Happy, false) => &[("AU6", 1.0), ("AU12", 1.0)],
            (Expression::Sad, true) => &[("AU1", 3.0), ("AU4", 2.0), ("AU15", 3.0), ("AU17", 1.0)],
            (Expression::Sad, false) => &[("AU1", 1.0), ("AU4", 1.0), ("AU15", 1.0), ("AU17", 1.0)],
            (Expression::Angry, true) => &[("AU4", 4.0), ("AU5", 2.0), ("AU17", 2.0)],
            (Expression::Angry, false) => {
                &[("AU4", 1.0), ("AU5", 1.0), ("AU7", 1.0), ("AU23", 1.0)]
            }
            (Expression::Fearful, true) => &[
                ("AU1", 3.0),
                ("AU2", 2.0),
                ("AU4", 2.0),
                ("AU5", 3.0),
                ("AU20", 3.0),
                ("AU25", 2.0),
                ("AU26", 2.0),
            ],
            (Expression::Fearful, false) => &[
                ("AU1", 1.0),
                ("AU2", 1.0),
                ("AU4", 1.0),
                ("AU5", 1.0),
                ("AU7", 1.0),
                ("AU20", 1.0),
                ("AU25", 1.0),
                ("AU26", 1.0),
            ],
            (Expression::Disgusted, true) => &[("AU9", 4.0), ("AU15", 2.0), ("AU17", 2.0)],
            (Expression::Disgusted, false) => {
                &[("AU9", 1.0), ("AU10", 1.0), ("AU15", 1.0), ("AU16", 1.0)]
            }
            (Expression::Surprised, true) => &[
                ("AU1", 4.0),
                ("AU2", 4.0),
                ("AU5", 2.0),
                ("AU25", 3.0),
                ("AU26", 4.0),
            ],
            (Expression::Surprised, false) => &[
                ("AU1", 1.0),
                ("AU2", 1.0),
                ("AU5", 1.0),
                ("AU25", 1.0),
                ("AU26", 1.0),
            ],
            (Expression::Contempt, true) => &[("AU12", 1.0)],
            (Expression::Contempt, false) => &[("AUR12", 1.0), ("AUR14", 1.0)],
        }
    }

    /// The prototypical AU vector of this expression in `set`.
    pub fn prototype(self, set: AuSet) -> AuVector {
        AuVector::from_pairs(set, self.prototype_pairs(&set).iter().copied())
            .expect("prototype tables only use units of their set, in range")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::au::catalog::{FINEFACE, OPENGRAPHAU};

    #[test]
    fn prototypes_are_valid_in_both_sets() {
        for e in Expression::EIGHT {
            for set in [FINEFACE, OPENGRAPHAU] {
                let v = e.prototype(set);
                assert_eq!(
                    v.active().is_empty(),
                    e == Expression::Neutral,
                    "{e} in {}",
                    set.name
                );
            }
        }
        let happy = Expression::Happy.prototype(FINEFACE);
        assert_eq!(
            (happy.get("AU6"), happy.get("AU12")),
            (Some(3.0), Some(4.0))
        );
        assert_eq!(
            Expression::Surprised.prototype(FINEFACE).get("AU26"),
            Some(4.0)
        );
    }

    #[test]
    fn names_round_trip_and_order_is_canonical() {
        for (i, e) in Expression::EIGHT.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(Expression::parse(e.name()).unwrap(), *e);
        }
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
}
