//! stembatch: a nightly batch runner for the Vidgo add-instrumental API.
pub mod manifest;
pub mod variant;
