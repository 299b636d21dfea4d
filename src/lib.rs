//! proxy-wasm glue for aura-guard (filled in by the foundation work).
