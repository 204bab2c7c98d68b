//! The crate's typed errors: every failure names the file, key, shape or value at fault.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading models or serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file is malformed or does not match the expected schema.
    #[error("{file}: invalid JSON: {message}")]
    Json {
        /// The file (or logical source) being parsed.
        file: String,
        /// What serde reported.
        message: String,
    },
    /// A TOML file (e.g. a synthesis plan) does not parse or has a wrong field.
    #[error("{file}: invalid TOML: {message}")]
    Toml {
        /// The file.
        file: String,
        /// The parser's message (names the field and line).
        message: String,
    },
    /// A safetensors file is truncated or malformed.
    #[error("{file}: invalid safetensors file: {message}")]
    SafeTensors {
        /// The weights file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// A PyTorch (`torch.save`) file's zip container is malformed, truncated, or uses a
    /// feature this reader does not support (compression, encryption, multiple disks).
    #[error("{file}: invalid torch archive: {message}")]
    TorchArchive {
        /// The weights file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// A PyTorch file's pickle is malformed, exceeds a safety limit, or uses something outside
    /// the subset `torch.save` writes for state dicts. Nothing in it was executed.
    #[error("{file}: unsupported or malformed pickle: {message}")]
    Pickle {
        /// The weights file.
        file: String,
        /// What is wrong, with the byte offset in the pickle where known.
        message: String,
    },
    /// A pickle references a Python global that is not on the allow-list (for example
    /// `os.system`). It was refused when read, never resolved or called.
    #[error(
        "{file}: pickle references forbidden global `{global}` (refused; nothing was executed)"
    )]
    PickleGlobal {
        /// The weights file.
        file: String,
        /// `module.name` as written in the pickle.
        global: String,
    },
    /// A weight the model needs is absent from the file.
    #[error("{file}: missing weight `{key}`")]
    MissingKey {
        /// The weights file.
        file: String,
        /// The missing key.
        key: String,
    },
    /// The file holds weights the model does not use.
    #[error("{file}: {} unused weight(s): {}", keys.len(), keys.join(", "))]
    UnusedKeys {
        /// The weights file.
        file: String,
        /// The keys nobody consumed (sorted).
        keys: Vec<String>,
    },
    /// A weight has a different shape from what the config implies.
    #[error("{file}: weight `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        file: String,
        /// The key.
        key: String,
        /// Shape implied by config.json.
        expected: Vec<usize>,
        /// Shape stored in the file.
        found: Vec<usize>,
    },
    /// A weight is stored in a dtype we cannot convert to f32.
    #[error("{file}: weight `{key}` has unsupported dtype {dtype} (expected F32, F16 or BF16)")]
    UnsupportedDtype {
        /// The weights file.
        file: String,
        /// The key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A config value is valid for diffusers but not supported here, or invalid outright.
    #[error("{file}: `{key}` = {value}: {message}")]
    Config {
        /// The config file (e.g. `unet/config.json`).
        file: String,
        /// The config key.
        key: String,
        /// The offending value, as JSON.
        value: String,
        /// Why it is rejected.
        message: String,
    },
    /// A tokenizer could not be built or run.
    #[error("tokenizer ({source_name}): {message}")]
    Tokenizer {
        /// Where the tokenizer came from.
        source_name: String,
        /// What failed.
        message: String,
    },
    /// A request field is out of range or inconsistent.
    #[error("invalid request: `{field}`: {message}")]
    InvalidRequest {
        /// The request field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor file given by the user (e.g. `--latents`) is unusable.
    #[error("{file}: {message}")]
    TensorFile {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A scheduler config is invalid or asks for something we do not implement.
    #[error("{file}: {source}")]
    Scheduler {
        /// The config file (or `request` for a scheduler override).
        file: String,
        /// What the scheduler reported.
        source: crate::scheduler::SchedulerError,
    },
    /// No usable compute device, or a device failed at run time.
    #[error("device: {0}")]
    Device(String),
    /// An image could not be encoded or decoded.
    #[error("image {file}: {message}")]
    Image {
        /// The file involved.
        file: String,
        /// What failed.
        message: String,
    },
    /// A computation produced NaN or ±Inf (non-finite weights, latents or settings): the
    /// result is refused instead of being written as a black image.
    #[error("non-finite values (NaN or ±Inf) in {stage}: {detail}")]
    NonFinite {
        /// Where they appeared (`the final latents`, `the VAE decode`, a classifier).
        stage: String,
        /// Which item and value.
        detail: String,
    },
    /// A dataset file (label list, CSV, metadata) is malformed; `at` names the line or entry.
    #[error("{file}: {at}: {message}")]
    Dataset {
        /// The file or folder involved.
        file: String,
        /// Where in it (`line 12`, a column, a sub-folder).
        at: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// `Ok` when `value` is a finite number > 0, else an [`Error::Config`] naming `file` and
    /// `key` (epsilons, scaling factors).
    pub(crate) fn check_positive(file: &str, key: &str, value: f64) -> Result<()> {
        if value.is_finite() && value > 0.0 {
            Ok(())
        } else {
            Err(Error::config(
                file,
                key,
                value,
                "must be a finite number > 0",
            ))
        }
    }

    /// Builds an [`Error::Dataset`].
    pub fn dataset(
        file: impl std::fmt::Display,
        at: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Dataset {
            file: file.to_string(),
            at: at.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Json`] from a serde error.
    pub fn json(file: impl Into<String>, err: serde_json::Error) -> Self {
        Error::Json {
            file: file.into(),
            message: err.to_string(),
        }
    }

    /// Builds an [`Error::Config`].
    pub fn config(
        file: impl Into<String>,
        key: impl Into<String>,
        value: impl std::fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            file: file.into(),
            key: key.into(),
            value: value.to_string(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::InvalidRequest`].
    pub fn request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}
