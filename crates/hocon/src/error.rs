//! Errors, always located: a file (or `<string>`), a line and a column, and a sentence a person
//! can act on.

use crate::value::Origin;

/// A parse or resolution error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct Error {
    /// Where the problem is.
    pub origin: Origin,
    /// What is wrong, in words.
    pub message: String,
}

impl Error {
    pub(crate) fn at(origin: Origin, message: impl Into<String>) -> Self {
        Error {
            origin,
            message: message.into(),
        }
    }
}
