//! Dataset synthesis at scale: a plan ([`plan::Plan`]) of labelled requests, generated in
//! batches, pseudo-labelled ([`label`]), written atomically with a manifest that makes runs
//! resumable and shardable ([`run`]), and turned into dataset files ([`output`]).

pub mod label;
pub mod output;
pub mod plan;
pub mod run;

pub use plan::Plan;
pub use run::{Record, Shard, merge, run};
