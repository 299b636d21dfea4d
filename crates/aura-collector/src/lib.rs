//! The collector's parts other programs call: the NDJSON record parser, for the fuzz targets
//! (fuzz/, docs/robustness.md#fuzzing). The binary (`main.rs`) uses it from here.

pub mod record;
