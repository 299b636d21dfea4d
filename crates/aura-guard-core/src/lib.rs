//! aura-guard's policy core: pure decisions over request facts, no proxy-wasm dependency.
//! The cdylib glue (`src/lib.rs` at the workspace root) is the only code touching the host.

pub mod config;
pub mod webhook;
