//! The front door: where a model comes from ([`ModelSource`]) and what is loaded with it
//! ([`PipelineBuilder`]: device, AU adapter, LoRAs, buffer limit, guidance classifiers).

use std::collections::BTreeMap;

use burn::tensor::Device;

use super::Pipeline;
use super::load::load;
use super::source::{FileSource, MemorySource, Stamping};
use crate::au::AdapterWeights;
use crate::error::Result;
use crate::guidance::semantic::SemanticGuider;
use crate::weights::lora::LoraWeights;

/// Where a model's files come from.
pub enum ModelSource<'a> {
    /// A diffusers-layout folder on disk, or a single-file checkpoint (read with default
    /// [`SingleFileOptions`](super::single_file::SingleFileOptions)).
    #[cfg(not(target_family = "wasm"))]
    Dir(std::path::PathBuf),
    /// A single-file checkpoint in the original Stable Diffusion layout, with its options.
    #[cfg(not(target_family = "wasm"))]
    SingleFile(std::path::PathBuf, super::single_file::SingleFileOptions),
    /// Files held by the caller (bytes in memory, a folder already opened).
    Files(&'a dyn FileSource),
    /// Files handed over (e.g. the page's, read from the user's disk).
    Owned(MemorySource),
    /// synfer-tiny, the model compiled into native builds ([`crate::default_model`]).
    #[cfg(not(target_family = "wasm"))]
    BuiltIn,
}

#[cfg(not(target_family = "wasm"))]
impl From<&std::path::Path> for ModelSource<'_> {
    fn from(dir: &std::path::Path) -> Self {
        ModelSource::Dir(dir.to_path_buf())
    }
}

#[cfg(not(target_family = "wasm"))]
impl From<std::path::PathBuf> for ModelSource<'_> {
    fn from(dir: std::path::PathBuf) -> Self {
        ModelSource::Dir(dir)
    }
}

#[cfg(not(target_family = "wasm"))]
impl From<&std::path::PathBuf> for ModelSource<'_> {
    fn from(dir: &std::path::PathBuf) -> Self {
        ModelSource::Dir(dir.clone())
    }
}

/// A folder, or the built-in model when there is none (the CLI's `--model`).
#[cfg(not(target_family = "wasm"))]
impl From<Option<&std::path::Path>> for ModelSource<'_> {
    fn from(dir: Option<&std::path::Path>) -> Self {
        dir.map_or(ModelSource::BuiltIn, ModelSource::from)
    }
}

#[cfg(not(target_family = "wasm"))]
impl From<&str> for ModelSource<'_> {
    fn from(dir: &str) -> Self {
        ModelSource::Dir(dir.into())
    }
}

impl<'a, S: FileSource> From<&'a S> for ModelSource<'a> {
    fn from(files: &'a S) -> Self {
        ModelSource::Files(files)
    }
}

impl From<MemorySource> for ModelSource<'_> {
    fn from(files: MemorySource) -> Self {
        ModelSource::Owned(files)
    }
}

/// Loads a [`Pipeline`]: `Pipeline::builder(source).device(..).adapter(..).lora(..).build()`.
#[must_use]
pub struct PipelineBuilder<'a> {
    source: ModelSource<'a>,
    device: Device,
    adapter: Option<AdapterWeights>,
    loras: Vec<LoraWeights>,
    buffer_limit: Option<u64>,
    decode_budget: Option<usize>,
    guider: Option<SemanticGuider>,
}

impl<'a> PipelineBuilder<'a> {
    /// The compute device (default: burn's flex CPU backend). See [`crate::device::select`].
    pub fn device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The device [`crate::device::select`] chose, with its buffer limit.
    pub fn selected(self, selected: &crate::device::SelectedDevice) -> Self {
        self.device(&selected.device)
            .buffer_limit(selected.max_buffer)
    }

    /// An AU adapter, replacing the model's own `au_adapter/` (see
    /// [`crate::au::adapter::read_adapter`]).
    pub fn adapter(mut self, adapter: AdapterWeights) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// A LoRA merged into the UNet (and the text encoder, for its keys) at load
    /// ([`crate::weights::lora::read_lora`]); repeatable.
    pub fn lora(mut self, lora: LoraWeights) -> Self {
        self.loras.push(lora);
        self
    }

    /// LoRAs, in order.
    pub fn loras(mut self, loras: impl IntoIterator<Item = LoraWeights>) -> Self {
        self.loras.extend(loras);
        self
    }

    /// The device's largest buffer in bytes (wgpu adapters: [`crate::device::SelectedDevice`]
    /// knows it): generations that need a larger one are refused before they start.
    pub fn buffer_limit(mut self, bytes: Option<u64>) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// The largest VAE activation one decode slice may need, in bytes (default
    /// [`memory::DECODE_BUDGET`](super::memory::DECODE_BUDGET)): batches decode in slices
    /// under it.
    pub fn decode_budget(mut self, bytes: usize) -> Self {
        self.decode_budget = Some(bytes);
        self
    }

    /// The semantic-guidance classifiers requests use by default.
    pub fn semantic_guidance(mut self, guider: SemanticGuider) -> Self {
        self.guider = Some(guider);
        self
    }

    /// Loads the model.
    pub fn build(self) -> Result<Pipeline> {
        let PipelineBuilder {
            source,
            device,
            mut adapter,
            loras,
            buffer_limit,
            decode_budget,
            guider,
        } = self;
        // Every file is stamped as it is read, and so are the adapter and the LoRAs: together
        // they identify what the pipeline computes with.
        let mut stamps = BTreeMap::new();
        if let Some(a) = &adapter {
            stamps.insert("adapter".to_string(), a.store.stamp());
        }
        for (i, l) in loras.iter().enumerate() {
            stamps.insert(format!("lora.{i} (scale {})", l.scale), l.store.stamp());
        }
        let mut load_stamped = |src: &dyn FileSource| {
            let stamping = Stamping::new(src);
            let pipeline = load(&stamping, &device, adapter.take(), &loras)?;
            stamps.extend(stamping.into_stamps());
            Ok::<_, crate::Error>(pipeline)
        };
        let mut pipeline = match source {
            #[cfg(not(target_family = "wasm"))]
            ModelSource::Dir(path) if super::single_file::is_single_file(&path) => {
                load_stamped(&super::single_file::open(&path, &Default::default())?)?
            }
            #[cfg(not(target_family = "wasm"))]
            ModelSource::Dir(dir) => load_stamped(&super::source::DirSource::new(&dir)?)?,
            #[cfg(not(target_family = "wasm"))]
            ModelSource::SingleFile(path, options) => {
                load_stamped(&super::single_file::open(&path, &options)?)?
            }
            ModelSource::Files(files) => load_stamped(files)?,
            ModelSource::Owned(files) => load_stamped(&files)?,
            #[cfg(not(target_family = "wasm"))]
            ModelSource::BuiltIn => load_stamped(&MemorySource::built_in())?,
        };
        pipeline.info.files = stamps;
        pipeline.buffer_limit = buffer_limit;
        // The VAE decodes in slices that fit the device's buffers (attention chunks already do).
        if let Some(limit) = buffer_limit {
            let budget = &mut pipeline.info.buffers.decode_budget;
            *budget = (*budget).min(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        if let Some(bytes) = decode_budget {
            pipeline.info.buffers.decode_budget = bytes;
        }
        pipeline.guider = guider;
        Ok(pipeline)
    }
}

impl Pipeline {
    /// Starts loading a model from `source`: a folder path, a [`FileSource`], or
    /// [`ModelSource::BuiltIn`].
    pub fn builder<'a>(source: impl Into<ModelSource<'a>>) -> PipelineBuilder<'a> {
        PipelineBuilder {
            source: source.into(),
            device: Device::flex(),
            adapter: None,
            loras: Vec::new(),
            buffer_limit: None,
            decode_budget: None,
            guider: None,
        }
    }

    /// The built-in model (synfer-tiny) on `device`.
    #[cfg(not(target_family = "wasm"))]
    pub fn default_model(device: &Device) -> Result<Self> {
        Self::builder(ModelSource::BuiltIn).device(device).build()
    }

    /// Loads a diffusers-layout folder from disk onto `device`.
    #[cfg(not(target_family = "wasm"))]
    pub fn load(dir: impl AsRef<std::path::Path>, device: &Device) -> Result<Self> {
        Self::builder(dir.as_ref()).device(device).build()
    }

    /// Loads every component from `src` onto `device`.
    pub fn from_source(src: &dyn FileSource, device: &Device) -> Result<Self> {
        Self::builder(ModelSource::Files(src))
            .device(device)
            .build()
    }
}
