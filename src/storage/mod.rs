//! The user's own S3-compatible bucket (`upload.mode = "s3"`): where local stems go when
//! the provider's upload endpoint is not wanted, handed to the provider as presigned GET
//! URLs.
//!
//! Keys are content-addressed ([`keys`]), so a file is stored once whatever its name and
//! found again by any later run on any host. The wire work is `object_store`'s (SigV4,
//! multipart, presigning): nothing here signs by hand. Its own retries are off: every
//! call goes through the run's one retry path, so that uploads are paced, retried and
//! stopped like every other call. Credentials are read once from the standard AWS
//! variables and never printed: [`Credentials`] has no `Display` and a redacting `Debug`,
//! and every message from the storage is scrubbed of them before it is shown.

mod bucket;
pub mod error;
pub mod keys;

pub use bucket::{
    Bucket, Credentials, ACCESS_KEY_ENV, EXPIRATION_ENV, PART_SIZE, SECRET_KEY_ENV,
    SESSION_TOKEN_ENV,
};
pub use error::StorageError;
