//! Configuration types, one submodule per capability.

pub mod ratelimit;
