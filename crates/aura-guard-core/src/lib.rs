//! aura-guard's policy core: pure decisions over request facts, no proxy-wasm dependency.
//! The cdylib glue (`src/lib.rs` at the workspace root) is the only code touching the host:
//! it implements [`host::Host`] and forwards each callback to [`filter::HttpFilter`].

pub mod audit;
pub mod config;
pub mod debug;
pub mod events;
pub mod filter;
pub mod headers;
pub mod host;
pub mod path;
pub mod ratelimit;
pub mod versions;
pub mod webhook;
