//! `AuVector`: validated action-unit intensities for one AU set.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use super::catalog::{AuSet, find};
use crate::error::{Error, Result};

/// `AU12=4,AU6=3` as code → value, whatever the set (the set's checks come when the values
/// are used); zeros are kept.
pub fn parse_spec(text: &str) -> Result<BTreeMap<String, f32>> {
    let mut out = BTreeMap::new();
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    // "" is the empty vector; separators with nothing between them are a mistake.
    if !text.trim().is_empty() && items.iter().all(|s| s.is_empty()) {
        return Err(Error::request(
            "aus",
            format!("{text:?} names no unit; expected AU12=4,AU6=3"),
        ));
    }
    for item in items.into_iter().filter(|s| !s.is_empty()) {
        let (code, value) = item
            .split_once('=')
            .ok_or_else(|| Error::request("aus", format!("{item:?} is not of the form AU12=4")))?;
        let code = code.trim();
        let value: f32 = value
            .trim()
            .parse()
            .map_err(|_| au_error(code, format!("{:?} is not a number", value.trim())))?;
        let twice = out.keys().any(|k: &String| k.eq_ignore_ascii_case(code));
        if twice {
            return Err(au_error(code, "given twice"));
        }
        out.insert(code.to_string(), value);
    }
    Ok(out)
}

/// Intensities for every unit of an [`AuSet`], in the set's order (absent units are 0).
#[derive(Debug, Clone, PartialEq)]
pub struct AuVector {
    set: AuSet,
    values: Vec<f32>,
}

fn au_error(code: &str, message: impl Into<String>) -> Error {
    Error::request(format!("aus.{code}"), message)
}

impl AuVector {
    /// Every unit at the set's default, 0 (the unconditional AU input of classifier-free
    /// guidance).
    pub fn zeros(set: AuSet) -> Self {
        AuVector {
            set,
            values: vec![set.default; set.codes.len()],
        }
    }

    /// Builds from `(code, value)` pairs, checking every code and value against `set`.
    pub fn from_pairs<'a>(
        set: AuSet,
        pairs: impl IntoIterator<Item = (&'a str, f32)>,
    ) -> Result<Self> {
        let mut v = AuVector::zeros(set);
        for (code, value) in pairs {
            v.set(code, value)?;
        }
        Ok(v)
    }

    /// Sets one unit, validating the code and the value.
    pub fn set(&mut self, code: &str, value: f32) -> Result<()> {
        let index = self.set.index_of(code).ok_or_else(|| {
            let known = if find(code).is_some() {
                format!("{code} is not part of the {} set", self.set.name)
            } else {
                format!("unknown action unit {code:?}")
            };
            au_error(
                code,
                format!("{known}; valid: {}", self.set.codes.join(", ")),
            )
        })?;
        if !value.is_finite() || value < self.set.min || value > self.set.max {
            return Err(au_error(
                code,
                format!("{value} is outside {}..={}", self.set.min, self.set.max),
            ));
        }
        if self.set.binary && value != 0.0 && value != 1.0 {
            return Err(au_error(
                code,
                format!(
                    "{value} must be 0 or 1 (the {} set is binary)",
                    self.set.name
                ),
            ));
        }
        self.values[index] = value;
        Ok(())
    }

    /// Parses `AU12=4,AU6=3` (spaces allowed; empty string = all zeros).
    pub fn parse(set: AuSet, text: &str) -> Result<Self> {
        let mut v = AuVector::zeros(set);
        for (code, value) in parse_spec(text)? {
            v.set(&code, value)?;
        }
        Ok(v)
    }

    /// Parses a JSON object `{"AU12": 4, "AU6": 3}`.
    pub fn from_json(set: AuSet, json: &serde_json::Value) -> Result<Self> {
        let obj = json
            .as_object()
            .ok_or_else(|| Error::request("aus", "expected a JSON object like {\"AU12\": 4}"))?;
        let mut v = AuVector::zeros(set);
        for (code, value) in obj {
            let value = value
                .as_f64()
                .ok_or_else(|| au_error(code, format!("{value} is not a number")))?;
            v.set(code, value as f32)?;
        }
        Ok(v)
    }

    /// The set these values belong to.
    pub fn au_set(&self) -> AuSet {
        self.set
    }

    /// Dense values in set order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Value of one unit (0 for units of the set left unset; `None` outside the set).
    pub fn get(&self, code: &str) -> Option<f32> {
        self.set.index_of(code).map(|i| self.values[i])
    }

    /// Non-zero units as `code → value`.
    pub fn active(&self) -> BTreeMap<&'static str, f32> {
        self.set
            .codes
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| **v != 0.0)
            .map(|(c, v)| (*c, *v))
            .collect()
    }

    /// `AU12=4,AU6=3` form of the non-zero units.
    pub fn to_spec(&self) -> String {
        self.set
            .codes
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| **v != 0.0)
            .map(|(c, v)| format!("{c}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Serialises as `{"AU1": 0.0, ..., "AU26": 2.0}` (every unit of the set, in order).
impl Serialize for AuVector {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.values.len()))?;
        for (code, value) in self.set.codes.iter().zip(&self.values) {
            map.serialize_entry(code, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::au::catalog::{FINEFACE, OPENGRAPHAU};

    #[test]
    fn parses_cli_form() {
        let v = AuVector::parse(FINEFACE, "AU12=4, au6=3").unwrap();
        assert_eq!(v.get("AU12"), Some(4.0));
        assert_eq!(v.get("AU6"), Some(3.0));
        assert_eq!(v.get("AU1"), Some(0.0));
        assert_eq!(v.values().iter().filter(|x| **x != 0.0).count(), 2);
        assert_eq!(v.to_spec(), "AU6=3,AU12=4");
        assert_eq!(
            AuVector::parse(FINEFACE, "").unwrap(),
            AuVector::zeros(FINEFACE)
        );
    }

    #[test]
    fn parses_json_and_serialises_back() {
        let v = AuVector::from_json(FINEFACE, &serde_json::json!({"AU26": 2.5})).unwrap();
        let back = serde_json::to_value(&v).unwrap();
        assert_eq!(back["AU26"], 2.5);
        assert_eq!(back.as_object().unwrap().len(), 12);
        assert_eq!(AuVector::from_json(FINEFACE, &back).unwrap(), v);
    }

    #[test]
    fn refuses_invalid_units_and_values_by_name() {
        let cases = [
            (FINEFACE, "AU3=1", "unknown action unit"),
            (FINEFACE, "AU7=1", "not part of the fineface set"),
            (FINEFACE, "AU12=6", "outside 0..=5"),
            (FINEFACE, "AU12=-1", "outside"),
            (FINEFACE, "AU12=x", "not a number"),
            (FINEFACE, "AU12", "of the form"),
            (OPENGRAPHAU, "AU12=0.5", "must be 0 or 1"),
        ];
        for (set, text, needle) in cases {
            let err = AuVector::parse(set, text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = AuVector::parse(FINEFACE, "AU12=9").unwrap_err().to_string();
        assert!(err.contains("aus.AU12"), "{err}");
    }
}
