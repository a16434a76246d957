//! boneage: estimate skeletal (bone) age from a left-hand radiograph and the child's sex.
//!
//! # Layout
//! Data flows one way, in this order:
//!
//! - [`config`]: settings from `firmware-config/*.toml`, validated at start-up.
//! - [`source`]: where radiographs come from (image files, DICOM) and what they carry
//!   (pixels plus patient sex/age when the file has them).
//! - [`preprocess`]: turns a radiograph into the model's input tensor, with parameters read
//!   from the model's own metadata ([`model::Contract`]).
//! - [`model`]: the trained network behind one [`model::Backend`] trait (tract; ONNX Runtime
//!   with the `ort` cargo feature).
//! - [`quality`]: refuses blank, saturated, inverted or foreign images before inference.
//! - [`report`]: from a number of months to a reading: ages, differences, formatting.
//! - [`store`]: every analysis stored durably (SQLite, WAL, synchronous=FULL) before it is shown.
//! - [`service`]: the running appliance: one model + one store shared by every input.
//! - [`protocol`]: the line protocol (TCP and serial): parse, execute, framing.
//! - [`serve`]: the appliance loop: hot folder, TCP listener, serial line.
//! - [`clinical`]: SDS against the Greulich-Pyle reference, Bayley-Pinneau adult height.
//! - [`document`]: the one-page PDF/PNG report.
//! - [`evaluate`]: accuracy on a labelled folder (MAE, RMSE, bias, per sex and age band).
//! - [`display`]: the kiosk screens (ready, capturing, analysing, result, error) drawn with
//!   `embedded-graphics` to a PNG file or a Linux framebuffer.
//!
//! [`atomic_file`] serves `document` and `display`: files replaced whole, never half-written.
//!
//! The `boneage` binary (`src/main.rs`, `src/cli/`) is a thin layer over these modules.

pub mod atomic_file;
pub mod clinical;
pub mod config;
pub mod display;
pub mod document;
pub mod evaluate;
pub mod model;
pub mod preprocess;
pub mod protocol;
pub mod quality;
pub mod report;
pub mod serve;
pub mod service;
pub mod source;
pub mod store;

pub use config::Config;
pub use model::{Contract, Model};
pub use report::{Age, Sex};
pub use source::Radiograph;
