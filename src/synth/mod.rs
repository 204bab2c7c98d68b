//! Dataset synthesis at scale: a plan ([`plan::Plan`]) of labelled requests, generated in
//! batches, pseudo-labelled ([`crate::label`]), written atomically with a manifest that makes runs
//! resumable and shardable ([`run`](mod@run), [`manifest`]), and turned into dataset files ([`output`]:
//! an ImageFolder, or WebDataset tar shards, [`webdataset`]).

pub mod fingerprint;
pub mod lock;
pub mod manifest;
pub mod output;
pub mod plan;
pub mod run;
pub mod webdataset;

pub use manifest::Record;
pub use plan::Plan;
pub use run::{Shard, merge, run};
