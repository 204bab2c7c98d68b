//! CLIP tokenizer from bytes: `tokenizer.json`, or `vocab.json` + `merges.txt` (SD 1.5 ships
//! no tokenizer.json). The pipeline mirrors transformers' `CLIPTokenizer`: NFC, whitespace
//! collapse, lowercase, CLIP's split regex, byte-level BPE with `</w>` word ends; then
//! `[bos] + ids[..max-2] + [eos]`, padded to `max_length` with the pad token.

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A prompt turned into exactly `max_length` ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokenized {
    /// `max_length` token ids.
    pub ids: Vec<u32>,
    /// The text that did not fit, if the prompt was truncated.
    pub truncated: Option<String>,
}

/// CLIP BPE tokenizer with SD's padding and truncation rules.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("max_length", &self.max_length)
            .finish()
    }
}

fn tok_err(source: &str, message: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        source_name: source.to_string(),
        message: message.to_string(),
    }
}

/// Settings read from `tokenizer_config.json` / `special_tokens_map.json`.
#[derive(Debug, Clone)]
pub struct TokenizerSettings {
    /// The padding token's text.
    pub pad_token: String,
    /// Sequence length (77 for SD).
    pub max_length: usize,
}

impl Default for TokenizerSettings {
    fn default() -> Self {
        TokenizerSettings {
            pad_token: EOS.into(),
            max_length: 77,
        }
    }
}

impl TokenizerSettings {
    /// Reads the pad token and `model_max_length` from the optional JSON files.
    pub fn from_json(config: Option<&[u8]>, special_tokens: Option<&[u8]>) -> Result<Self> {
        let mut s = TokenizerSettings::default();
        let token_text = |v: &Value| -> Option<String> {
            match v {
                Value::String(t) => Some(t.clone()),
                Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
                _ => None,
            }
        };
        for (name, bytes) in [
            ("tokenizer/special_tokens_map.json", special_tokens),
            ("tokenizer/tokenizer_config.json", config),
        ] {
            let Some(bytes) = bytes else { continue };
            let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::json(name, e))?;
            if let Some(pad) = v.get("pad_token").and_then(token_text) {
                s.pad_token = pad;
            }
            if let Some(m) = v.get("model_max_length").and_then(Value::as_f64) {
                // Very large values mean "unset" in transformers; keep CLIP's 77 then.
                if (1.0..1e6).contains(&m) {
                    s.max_length = m as usize;
                }
            }
        }
        Ok(s)
    }
}

impl ClipTokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_tokenizer_json(bytes: &[u8], settings: &TokenizerSettings) -> Result<Self> {
        let inner = Tokenizer::from_bytes(bytes).map_err(|e| tok_err("tokenizer.json", e))?;
        Self::finish(inner, settings, "tokenizer.json")
    }

    /// Builds the CLIP pipeline from `vocab.json` and `merges.txt`.
    pub fn from_vocab_merges(
        vocab: &[u8],
        merges: &[u8],
        settings: &TokenizerSettings,
    ) -> Result<Self> {
        let vocab: Value =
            serde_json::from_slice(vocab).map_err(|e| Error::json("tokenizer/vocab.json", e))?;
        let Value::Object(vocab_map) = &vocab else {
            return Err(tok_err(
                "vocab.json",
                "expected a JSON object of token → id",
            ));
        };
        let merges_text = std::str::from_utf8(merges).map_err(|e| tok_err("merges.txt", e))?;
        let mut pairs = Vec::new();
        for (n, line) in merges_text.lines().enumerate() {
            if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => pairs.push(json!([a, b])),
                _ => {
                    return Err(tok_err(
                        "merges.txt",
                        format!("line {}: expected two tokens: {line:?}", n + 1),
                    ));
                }
            }
        }
        let special = |text: &str| -> Result<Value> {
            let id = vocab_map
                .get(text)
                .and_then(Value::as_u64)
                .ok_or_else(|| tok_err("vocab.json", format!("missing special token {text}")))?;
            Ok(
                json!({"id": id, "content": text, "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}),
            )
        };
        // transformers registers bos, eos and pad as special tokens matched in the raw text
        // (so with SD 2.x's pad "!", a literal "!" becomes the pad id).
        let mut added = vec![special(BOS)?, special(EOS)?];
        if settings.pad_token != BOS && settings.pad_token != EOS {
            added.push(special(&settings.pad_token)?);
        }
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Lowercase"}
            ]},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": EOS,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": pairs}
        });
        let bytes = serde_json::to_vec(&spec).expect("serialisable");
        let inner =
            Tokenizer::from_bytes(&bytes).map_err(|e| tok_err("vocab.json + merges.txt", e))?;
        Self::finish(inner, settings, "vocab.json + merges.txt")
    }

    fn finish(mut inner: Tokenizer, settings: &TokenizerSettings, source: &str) -> Result<Self> {
        inner
            .with_truncation(None)
            .map_err(|e| tok_err(source, e))?;
        inner.with_padding(None);
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| tok_err(source, format!("token {t:?} is not in the vocabulary")))
        };
        if settings.max_length < 2 {
            return Err(tok_err(
                source,
                format!("model_max_length {} < 2", settings.max_length),
            ));
        }
        Ok(ClipTokenizer {
            bos: id(BOS)?,
            eos: id(EOS)?,
            pad: id(&settings.pad_token)?,
            max_length: settings.max_length,
            inner,
        })
    }

    /// Sequence length every prompt is padded or truncated to.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Caps the sequence length (to the text encoder's position count).
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length.max(2);
    }

    /// Tokenizes one prompt to exactly `max_length` ids.
    pub fn encode(&self, text: &str) -> Result<Tokenized> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| tok_err("encode", e))?;
        let body = enc.get_ids();
        let room = self.max_length - 2;
        let truncated = (body.len() > room).then(|| {
            self.inner
                .decode(&body[room..], true)
                .unwrap_or_default()
                .replace("</w>", " ")
                .trim()
                .to_string()
        });
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend_from_slice(&body[..body.len().min(room)]);
        ids.push(self.eos);
        ids.resize(self.max_length, self.pad);
        Ok(Tokenized { ids, truncated })
    }
}
