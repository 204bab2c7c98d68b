//! Caption templates with varied wording: expression words, AU descriptions from the AU
//! catalogue, and visible attributes (subject, head pose, lighting).

use rand::Rng;
use rand::seq::IndexedRandom;

use crate::au::AuVector;
use crate::au::catalog::find;
use crate::expression::Expression;

/// Visible attributes measured on the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes {
    /// What the subject is called (`man` for the franck frames, `person` when unknown).
    pub subject: &'static str,
    /// Head yaw from the landmarks: negative = turned to the image's left.
    pub yaw: f32,
    /// Mean luminance of the face, 0–255.
    pub brightness: f32,
    /// A black-and-white photo (every caption says so; no other does).
    pub monochrome: bool,
}

/// Words for each expression (the first is the class name).
pub(crate) fn expression_words(e: Expression) -> &'static [&'static str] {
    match e {
        Expression::Neutral => &["neutral", "calm", "expressionless", "relaxed"],
        Expression::Happy => &["happy", "smiling", "joyful", "cheerful"],
        Expression::Sad => &["sad", "unhappy", "sorrowful", "downcast"],
        Expression::Angry => &["angry", "furious", "annoyed", "stern"],
        Expression::Fearful => &["fearful", "scared", "afraid", "frightened"],
        Expression::Disgusted => &["disgusted", "revolted", "repulsed", "grossed out"],
        Expression::Surprised => &["surprised", "astonished", "amazed", "shocked"],
        Expression::Contempt => &["contemptuous", "scornful", "sneering", "dismissive"],
    }
}

/// `a`/`an` for a word.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// AU phrases for the units at or above intensity 1.5, strongest first (at most 3), from the
/// catalogue's descriptions ("raises the inner ends of the eyebrows").
pub(crate) fn au_phrases(aus: &AuVector) -> Vec<String> {
    let mut active: Vec<(&str, f32)> = aus
        .active()
        .into_iter()
        .filter(|(_, v)| *v >= 1.5)
        .collect();
    active.sort_by(|a, b| b.1.total_cmp(&a.1));
    active
        .into_iter()
        .take(3)
        .filter_map(|(code, v)| {
            let unit = find(code)?;
            let strength = if v >= 3.5 {
                "strongly "
            } else if v < 2.5 {
                "slightly "
            } else {
                ""
            };
            Some(format!("{strength}{}", unit.description))
        })
        .collect()
}

/// One caption for an image, chosen by `rng` among the templates.
pub fn caption(
    expression: Expression,
    aus: &AuVector,
    attributes: &Attributes,
    rng: &mut impl Rng,
) -> String {
    let word = *expression_words(expression)
        .choose(rng)
        .expect("non-empty word list");
    let subject = attributes.subject;
    let phrases = au_phrases(aus);
    let pose = if attributes.yaw < -0.15 {
        Some("head turned to the left")
    } else if attributes.yaw > 0.15 {
        Some("head turned to the right")
    } else if rng.random_bool(0.3) {
        Some("looking at the camera")
    } else {
        None
    };
    let light = if attributes.brightness < 80.0 {
        Some("dim lighting")
    } else if attributes.brightness > 170.0 {
        Some("bright lighting")
    } else {
        None
    };
    let a = article(word);
    let mut text = match rng.random_range(0..6) {
        0 => format!("a photo of {a} {word} {subject}"),
        1 => format!("a close-up portrait of a {subject} with {a} {word} expression"),
        2 => format!("{a} {word} face"),
        3 => format!("a {subject} looking {word}"),
        4 => format!("portrait photo, {word} {subject}, face centred"),
        _ => format!("a face showing a {word} expression"),
    };
    if !phrases.is_empty() && rng.random_bool(0.7) {
        let joined = phrases.join(", ");
        text.push_str(&format!(", {joined}"));
    }
    if let Some(p) = pose {
        text.push_str(&format!(", {p}"));
    }
    if let Some(l) = light
        && rng.random_bool(0.5)
    {
        text.push_str(&format!(", {l}"));
    }
    if attributes.monochrome {
        text.push_str(", black and white photo");
    }
    text
}
