//! stembatch: a nightly batch runner for the Vidgo add-instrumental API.
pub mod api;
pub mod manifest;
pub mod variant;
