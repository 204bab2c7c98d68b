//! The FACS action-unit catalogue (Ekman, Friesen & Hager, *Facial Action Coding System*, 2002):
//! code, name, muscular basis and what the unit does to the face, plus the two AU sets synfer
//! conditions on.

use serde::Serialize;

/// Which side of the face a unit acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Both sides (the usual FACS code).
    Both,
    /// The subject's left side (OpenGraphAU `AUL*`).
    Left,
    /// The subject's right side (OpenGraphAU `AUR*`).
    Right,
}

/// One action unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ActionUnit {
    /// Code as used in requests: `AU12`, `AUL12`, `AUR12`.
    pub code: &'static str,
    /// FACS number.
    pub number: u16,
    /// Side.
    pub side: Side,
    /// FACS name.
    pub name: &'static str,
    /// Muscular basis.
    pub muscle: &'static str,
    /// What a viewer sees.
    pub description: &'static str,
}

const fn au(
    code: &'static str,
    number: u16,
    name: &'static str,
    muscle: &'static str,
    description: &'static str,
) -> ActionUnit {
    one_side(code, number, Side::Both, name, muscle, description)
}

const fn one_side(
    code: &'static str,
    number: u16,
    side: Side,
    name: &'static str,
    muscle: &'static str,
    description: &'static str,
) -> ActionUnit {
    ActionUnit {
        code,
        number,
        side,
        name,
        muscle,
        description,
    }
}

/// Every unit synfer knows: the 27 OpenGraphAU main units, then its 14 left/right units.
pub static ACTION_UNITS: [ActionUnit; 41] = [
    au(
        "AU1",
        1,
        "inner brow raiser",
        "frontalis, pars medialis",
        "raises the inner ends of the eyebrows",
    ),
    au(
        "AU2",
        2,
        "outer brow raiser",
        "frontalis, pars lateralis",
        "raises the outer ends of the eyebrows",
    ),
    au(
        "AU4",
        4,
        "brow lowerer",
        "depressor glabellae, depressor supercilii, corrugator supercilii",
        "lowers the brows and draws them together",
    ),
    au(
        "AU5",
        5,
        "upper lid raiser",
        "levator palpebrae superioris",
        "widens the eyes, showing more of the upper eyeball",
    ),
    au(
        "AU6",
        6,
        "cheek raiser",
        "orbicularis oculi, pars orbitalis",
        "lifts the cheeks, narrows the eyes, makes crow's feet",
    ),
    au(
        "AU7",
        7,
        "lid tightener",
        "orbicularis oculi, pars palpebralis",
        "tightens and raises the lower eyelids",
    ),
    au(
        "AU9",
        9,
        "nose wrinkler",
        "levator labii superioris alaeque nasi",
        "wrinkles the nose and lifts the upper lip",
    ),
    au(
        "AU10",
        10,
        "upper lip raiser",
        "levator labii superioris",
        "raises the upper lip, deepening the nasolabial fold",
    ),
    au(
        "AU11",
        11,
        "nasolabial deepener",
        "zygomaticus minor",
        "deepens the middle of the nasolabial fold",
    ),
    au(
        "AU12",
        12,
        "lip corner puller",
        "zygomaticus major",
        "pulls the lip corners up and back (smile)",
    ),
    au(
        "AU13",
        13,
        "sharp lip puller",
        "levator anguli oris",
        "puffs the cheeks and pulls the lip corners up sharply",
    ),
    au(
        "AU14",
        14,
        "dimpler",
        "buccinator",
        "tightens the lip corners into dimples",
    ),
    au(
        "AU15",
        15,
        "lip corner depressor",
        "depressor anguli oris",
        "pulls the lip corners down",
    ),
    au(
        "AU16",
        16,
        "lower lip depressor",
        "depressor labii inferioris",
        "pulls the lower lip down",
    ),
    au(
        "AU17",
        17,
        "chin raiser",
        "mentalis",
        "pushes the chin boss and lower lip up",
    ),
    au(
        "AU18",
        18,
        "lip pucker",
        "incisivii labii superioris and inferioris",
        "pushes the lips forward into a pucker",
    ),
    au(
        "AU19",
        19,
        "tongue show",
        "genioglossus",
        "shows the tongue",
    ),
    au(
        "AU20",
        20,
        "lip stretcher",
        "risorius with platysma",
        "stretches the lips sideways",
    ),
    au(
        "AU22",
        22,
        "lip funneler",
        "orbicularis oris",
        "funnels the lips outward",
    ),
    au(
        "AU23",
        23,
        "lip tightener",
        "orbicularis oris",
        "tightens and narrows the lips",
    ),
    au(
        "AU24",
        24,
        "lip pressor",
        "orbicularis oris",
        "presses the lips together",
    ),
    au(
        "AU25",
        25,
        "lips part",
        "depressor labii inferioris; relaxed mentalis or orbicularis oris",
        "parts the lips",
    ),
    au(
        "AU26",
        26,
        "jaw drop",
        "relaxed masseter, temporalis and internal pterygoid",
        "drops the jaw, opening the mouth",
    ),
    au(
        "AU27",
        27,
        "mouth stretch",
        "pterygoids, digastric",
        "stretches the mouth wide open",
    ),
    au(
        "AU32",
        32,
        "lip bite",
        "(action descriptor)",
        "bites the lip",
    ),
    au(
        "AU38",
        38,
        "nostril dilator",
        "nasalis, pars alaris",
        "flares the nostrils",
    ),
    au(
        "AU39",
        39,
        "nostril compressor",
        "nasalis, pars transversa; depressor septi nasi",
        "narrows the nostrils",
    ),
    one_side(
        "AUL1",
        1,
        Side::Left,
        "inner brow raiser",
        "frontalis, pars medialis",
        "raises the inner end of the left eyebrow",
    ),
    one_side(
        "AUR1",
        1,
        Side::Right,
        "inner brow raiser",
        "frontalis, pars medialis",
        "raises the inner end of the right eyebrow",
    ),
    one_side(
        "AUL2",
        2,
        Side::Left,
        "outer brow raiser",
        "frontalis, pars lateralis",
        "raises the outer end of the left eyebrow",
    ),
    one_side(
        "AUR2",
        2,
        Side::Right,
        "outer brow raiser",
        "frontalis, pars lateralis",
        "raises the outer end of the right eyebrow",
    ),
    one_side(
        "AUL4",
        4,
        Side::Left,
        "brow lowerer",
        "corrugator supercilii, depressor supercilii",
        "lowers the left brow",
    ),
    one_side(
        "AUR4",
        4,
        Side::Right,
        "brow lowerer",
        "corrugator supercilii, depressor supercilii",
        "lowers the right brow",
    ),
    one_side(
        "AUL6",
        6,
        Side::Left,
        "cheek raiser",
        "orbicularis oculi, pars orbitalis",
        "lifts the left cheek, narrowing the left eye",
    ),
    one_side(
        "AUR6",
        6,
        Side::Right,
        "cheek raiser",
        "orbicularis oculi, pars orbitalis",
        "lifts the right cheek, narrowing the right eye",
    ),
    one_side(
        "AUL10",
        10,
        Side::Left,
        "upper lip raiser",
        "levator labii superioris",
        "raises the left side of the upper lip",
    ),
    one_side(
        "AUR10",
        10,
        Side::Right,
        "upper lip raiser",
        "levator labii superioris",
        "raises the right side of the upper lip",
    ),
    one_side(
        "AUL12",
        12,
        Side::Left,
        "lip corner puller",
        "zygomaticus major",
        "pulls the left lip corner up and back",
    ),
    one_side(
        "AUR12",
        12,
        Side::Right,
        "lip corner puller",
        "zygomaticus major",
        "pulls the right lip corner up and back",
    ),
    one_side(
        "AUL14",
        14,
        Side::Left,
        "dimpler",
        "buccinator",
        "tightens the left lip corner into a dimple",
    ),
    one_side(
        "AUR14",
        14,
        Side::Right,
        "dimpler",
        "buccinator",
        "tightens the right lip corner into a dimple",
    ),
];

/// Looks a unit up by code (`AU12`, `au12`, `AUL12`).
pub fn find(code: &str) -> Option<&'static ActionUnit> {
    ACTION_UNITS
        .iter()
        .find(|a| a.code.eq_ignore_ascii_case(code))
}

/// A set of units a model is conditioned on, with their value range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AuSet {
    /// Name used in configs: `fineface` or `opengraphau`.
    pub name: &'static str,
    /// Codes in the order of the model's input vector.
    pub codes: &'static [&'static str],
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Value of a unit the request leaves unset (and of the unconditional branch).
    pub default: f32,
    /// Values must be 0 or 1.
    pub binary: bool,
}

/// FineFace (arXiv 2407.20175): 12 units, intensity 0–5.
pub const FINEFACE: AuSet = AuSet {
    name: "fineface",
    codes: &[
        "AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU17", "AU20", "AU25", "AU26",
    ],
    min: 0.0,
    max: 5.0,
    default: 0.0,
    binary: false,
};

/// OpenGraphAU as used by SynFER: 27 main + 14 left/right units, binary.
pub const OPENGRAPHAU: AuSet = AuSet {
    name: "opengraphau",
    codes: &[
        "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU11", "AU12", "AU13", "AU14",
        "AU15", "AU16", "AU17", "AU18", "AU19", "AU20", "AU22", "AU23", "AU24", "AU25", "AU26",
        "AU27", "AU32", "AU38", "AU39", "AUL1", "AUR1", "AUL2", "AUR2", "AUL4", "AUR4", "AUL6",
        "AUR6", "AUL10", "AUR10", "AUL12", "AUR12", "AUL14", "AUR14",
    ],
    min: 0.0,
    max: 1.0,
    default: 0.0,
    binary: true,
};

impl AuSet {
    /// The set called `name`.
    pub fn by_name(name: &str) -> Option<AuSet> {
        [FINEFACE, OPENGRAPHAU]
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Catalogue entries of this set, in order.
    pub fn units(&self) -> impl Iterator<Item = &'static ActionUnit> + '_ {
        self.codes
            .iter()
            .map(|c| find(c).expect("set codes are in the catalogue"))
    }

    /// Position of `code` in the model's input vector.
    pub fn index_of(&self, code: &str) -> Option<usize> {
        self.codes.iter().position(|c| c.eq_ignore_ascii_case(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        assert_eq!(OPENGRAPHAU.codes.len(), 41);
        assert_eq!(FINEFACE.codes.len(), 12);
        let mut codes: Vec<_> = ACTION_UNITS.iter().map(|a| a.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 41, "codes are unique");
        for set in [FINEFACE, OPENGRAPHAU] {
            for unit in set.units() {
                assert!(
                    !unit.name.is_empty()
                        && !unit.muscle.is_empty()
                        && !unit.description.is_empty(),
                    "{}",
                    unit.code
                );
            }
        }
        let l12 = find("aul12").unwrap();
        assert_eq!(
            (l12.number, l12.side, l12.name),
            (12, Side::Left, "lip corner puller")
        );
        assert_eq!(find("AU12").unwrap().muscle, "zygomaticus major");
        assert!(find("AU3").is_none());
    }
}
