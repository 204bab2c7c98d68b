//! The prototypical action units of each basic expression ([`Expression::prototype`]).
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

use super::catalog::AuSet;
use super::vector::AuVector;
use crate::expression::Expression;

impl Expression {
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
}
