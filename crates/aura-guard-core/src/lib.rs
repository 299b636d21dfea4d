//! aura-guard's policy core: pure decisions over request facts, no proxy-wasm dependency.
//! The cdylib glue (`src/` at the workspace root) is the only code touching the host: it
//! implements [`host::Host`] and forwards each callback to [`filter::HttpFilter`].
//!
//! One folder per capability (`webhook`, `ratelimit`, `audit`, `versions`, `debug`,
//! `headers`, `path`), each holding its decisions (`mod.rs`) and its configuration
//! (`config.rs`); the pipeline runs them as stages, one file each under `filter/`.
//! docs/architecture.md maps the request's path through them.

pub mod audit;
pub mod client_ip;
pub mod config;
pub mod debug;
pub mod events;
pub mod filter;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz_api;
pub mod headers;
pub mod host;
pub mod jwt;
pub mod path;
pub mod ratelimit;
pub mod secret;
#[cfg(test)]
mod testing;
mod utc;
pub mod versions;
pub mod webhook;
