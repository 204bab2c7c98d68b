//! SynFER's pseudo-label generator: every synthetic image is judged (does it show a face?),
//! read by an ensemble of expression classifiers, and its label rectified where the ensemble
//! disagrees with the requested expression.
//!
//! - [`judge`](mod@judge): the face score and the analysis every measurement in synfer starts from;
//! - [`vote`]: the mirror vote that labels the training data (face-api over an image and its
//!   mirror image);
//! - [`ensemble`]: the classifiers that read a synthetic image, and their mean;
//! - [`rectify`]: the rule that turns their verdict and the request into a label.

pub mod ensemble;
pub mod judge;
pub mod rectify;
pub mod vote;

pub use ensemble::{Analysis, Voter, check_judges};
pub use judge::{FACE_THRESHOLD, face_score, judge};
pub use rectify::{Decision, LabelPlan, Outcome, Policy, decide};
pub use vote::{Label, mirror_vote};
