//! SynFER's rectification rule: when the ensemble disagrees with the requested expression, the
//! label becomes the ensemble's prediction (or, by policy, the image keeps its request or is
//! dropped); images without a face, or whose final label is too uncertain, are dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ensemble::Analysis;
use super::judge::FACE_THRESHOLD;
use crate::expression::{CLASSES, Expression, Probs, argmax};

/// What happens to an image whose pseudo-label disagrees with its request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// SynFER's rule: the label becomes the ensemble's prediction.
    #[default]
    Rectify,
    /// Keep the requested label.
    Keep,
    /// Drop the image.
    Drop,
}

/// Labelling settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelPlan {
    /// Disagreement policy.
    #[serde(default)]
    pub policy: Policy,
    /// Images whose final label has ensemble probability below this are dropped (not with
    /// `keep`).
    #[serde(default)]
    pub confidence: f32,
    /// Extra voters: folders of classifiers trained by `synfer fer train`, each a member of
    /// the ensemble next to face-api and mini-Xception (named by the folder's last component).
    #[serde(default)]
    pub voters: Vec<String>,
    /// The classifiers whose mean decides the label (`face-api`, `mini-xception`, voter
    /// names); empty: every member. A classifier that cannot see a class on real faces (the
    /// built-in mini-Xception recognises almost no sad, fearful, disgusted or surprised face)
    /// pulls such images towards the classes it can see, so a plan may leave it out; every
    /// classifier's probabilities are still recorded.
    #[serde(default)]
    pub judges: Vec<String>,
}

/// What happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The ensemble agrees with the request.
    Kept,
    /// The ensemble disagrees; the label became its prediction.
    Relabelled,
    /// The ensemble disagrees and the policy keeps the requested label.
    KeptDisagreeing,
    /// No face found.
    DroppedNoFace,
    /// The ensemble disagrees and the policy drops such images.
    DroppedDisagreeing,
    /// The final label's ensemble probability is below the confidence threshold.
    DroppedLowConfidence,
}

impl Outcome {
    /// Whether the image stays in the dataset.
    pub fn kept(self) -> bool {
        matches!(
            self,
            Outcome::Kept | Outcome::Relabelled | Outcome::KeptDisagreeing
        )
    }
}

/// The labelling decision for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The dataset label (`None` when dropped).
    pub label: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// The ensemble's prediction.
    pub predicted: String,
    /// Its ensemble probability.
    pub confidence: f32,
    /// The deciding ensemble's probabilities (the mean over the plan's judges).
    pub ensemble: Probs,
    /// Per classifier (and `ensemble`): does its prediction equal the request?
    pub agrees: BTreeMap<String, bool>,
}

/// Applies the rule to `analysis` of an image requested as `requested`.
pub fn decide(requested: Expression, analysis: &Analysis, plan: &LabelPlan) -> Decision {
    let ensemble = analysis.ensemble_of(&plan.judges);
    let best = argmax(&ensemble);
    let predicted = CLASSES[best].to_string();
    let mut agrees: BTreeMap<String, bool> = analysis
        .probs
        .iter()
        .map(|(k, p)| (k.clone(), CLASSES[argmax(p)] == requested.name()))
        .collect();
    let agree = predicted == requested.name();
    agrees.insert("ensemble".into(), agree);
    let requested_index = CLASSES.iter().position(|c| *c == requested.name());
    let decision = |label: Option<String>, outcome, confidence| Decision {
        label,
        outcome,
        predicted: predicted.clone(),
        confidence,
        ensemble,
        agrees: agrees.clone(),
    };
    if analysis.face_score < FACE_THRESHOLD {
        return decision(None, Outcome::DroppedNoFace, ensemble[best]);
    }
    let (label, outcome, p) = match (agree, plan.policy) {
        (true, _) => (predicted.clone(), Outcome::Kept, ensemble[best]),
        (false, Policy::Rectify) => (predicted.clone(), Outcome::Relabelled, ensemble[best]),
        (false, Policy::Keep) => {
            let p = requested_index.map_or(0.0, |i| ensemble[i]);
            (requested.name().to_string(), Outcome::KeptDisagreeing, p)
        }
        (false, Policy::Drop) => {
            return decision(None, Outcome::DroppedDisagreeing, ensemble[best]);
        }
    };
    if plan.policy != Policy::Keep && p < plan.confidence {
        return decision(None, Outcome::DroppedLowConfidence, p);
    }
    decision(Some(label), outcome, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expression::Probs;

    /// Classes: neutral, happy, sad, angry, fearful, disgusted, surprised.
    fn analysis(face: f32, a: Probs, b: Probs) -> Analysis {
        Analysis {
            face_score: face,
            probs: BTreeMap::from([("face-api".into(), a), ("mini-xception".into(), b)]),
            aus: BTreeMap::new(),
        }
    }

    const HAPPY: Probs = [0.1, 0.8, 0.02, 0.02, 0.02, 0.02, 0.02];
    const SAD: Probs = [0.1, 0.1, 0.7, 0.025, 0.025, 0.025, 0.025];
    const MIXED: Probs = [0.3, 0.35, 0.3, 0.0125, 0.0125, 0.0125, 0.0125];

    fn plan(policy: Policy, confidence: f32) -> LabelPlan {
        LabelPlan {
            policy,
            confidence,
            voters: Vec::new(),
            judges: Vec::new(),
        }
    }

    #[test]
    fn agreement_keeps_the_requested_label() {
        let d = decide(
            Expression::Happy,
            &analysis(0.9, HAPPY, HAPPY),
            &plan(Policy::Rectify, 0.5),
        );
        assert_eq!(
            (d.label.as_deref(), d.outcome),
            (Some("happy"), Outcome::Kept)
        );
        assert!((d.confidence - 0.8).abs() < 1e-6);
        assert!(d.agrees.values().all(|a| *a));
    }

    #[test]
    fn disagreement_is_rectified_to_the_ensemble_mean() {
        // Requested happy; FER A says sad (0.7), FER B says happy (0.35 vs sad 0.3).
        // Ensemble: happy (0.1 + 0.35) / 2 = 0.225, sad (0.7 + 0.3) / 2 = 0.5 → sad.
        let a = analysis(0.9, SAD, MIXED);
        let d = decide(Expression::Happy, &a, &plan(Policy::Rectify, 0.0));
        assert_eq!(
            (d.label.as_deref(), d.outcome),
            (Some("sad"), Outcome::Relabelled)
        );
        assert!((d.confidence - 0.5).abs() < 1e-6);
        assert!(!d.agrees["face-api"] && d.agrees["mini-xception"] && !d.agrees["ensemble"]);
        // keep: the requested label with its ensemble probability; drop: gone.
        let k = decide(Expression::Happy, &a, &plan(Policy::Keep, 0.9));
        assert_eq!(
            (k.label.as_deref(), k.outcome),
            (Some("happy"), Outcome::KeptDisagreeing)
        );
        assert!((k.confidence - 0.225).abs() < 1e-6);
        let x = decide(Expression::Happy, &a, &plan(Policy::Drop, 0.0));
        assert_eq!((x.label, x.outcome), (None, Outcome::DroppedDisagreeing));
        // A threshold above the ensemble's 0.5 drops the rectified image.
        let low = decide(Expression::Happy, &a, &plan(Policy::Rectify, 0.6));
        assert_eq!(
            (low.label, low.outcome),
            (None, Outcome::DroppedLowConfidence)
        );
    }

    #[test]
    fn judges_choose_which_classifiers_decide() {
        // Same disagreement as above, judged by face-api alone: sad with its own 0.7; by
        // mini-Xception alone: happy (0.35) agrees with the request.
        let a = analysis(0.9, SAD, MIXED);
        let mut only = plan(Policy::Rectify, 0.0);
        only.judges = vec!["face-api".into()];
        let d = decide(Expression::Happy, &a, &only);
        assert_eq!(
            (d.label.as_deref(), d.outcome),
            (Some("sad"), Outcome::Relabelled)
        );
        assert!((d.confidence - 0.7).abs() < 1e-6);
        // The recorded ensemble is the deciding one: face-api's own probabilities.
        assert_eq!(d.ensemble, SAD);
        only.judges = vec!["mini-xception".into()];
        let d = decide(Expression::Happy, &a, &only);
        assert_eq!(
            (d.label.as_deref(), d.outcome),
            (Some("happy"), Outcome::Kept)
        );
        assert!((d.confidence - 0.35).abs() < 1e-6);
        // Unknown names are refused before anything is analysed, naming the key and the name.
        let err = crate::label::check_judges(&["fer-c".into()], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("label.judges") && msg.contains("fer-c"),
            "{msg}"
        );
    }

    #[test]
    fn no_face_is_dropped_whatever_the_classifiers_say() {
        let d = decide(
            Expression::Happy,
            &analysis(0.3, HAPPY, HAPPY),
            &plan(Policy::Keep, 0.0),
        );
        assert_eq!((d.label, d.outcome), (None, Outcome::DroppedNoFace));
    }
}
