//! Error helpers: every failure is an [`io::Error`] carrying a readable
//! description of what was being done.

use std::fmt::Display;
use std::io;

/// Adds context to a failed operation, keeping the error kind.
pub trait Context<T> {
    /// Prefixes the error message with `what`.
    fn context(self, what: impl Display) -> io::Result<T>;
    /// Like [`Context::context`], with the text built only on failure.
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> io::Result<T>;
}

impl<T, E: Into<io::Error>> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> io::Result<T> {
        self.map_err(|e| {
            let e: io::Error = e.into();
            io::Error::new(e.kind(), format!("{what}: {e}"))
        })
    }

    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> io::Result<T> {
        self.map_err(|e| {
            let e: io::Error = e.into();
            io::Error::new(e.kind(), format!("{}: {e}", what()))
        })
    }
}

/// An [`io::ErrorKind::InvalidData`] error (a payload check failed).
pub fn invalid_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// An [`io::ErrorKind::Other`] error with a message.
pub fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_kind_and_prefixes_message() {
        let r: Result<(), io::Error> = Err(io::Error::new(io::ErrorKind::NotFound, "gone"));
        let e = r.context("opening /x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(e.to_string(), "opening /x: gone");
        let r: Result<(), nix::Error> = Err(nix::Error::EBADF);
        let e = r.with_context(|| format!("fd {}", 7)).unwrap_err();
        assert!(e.to_string().starts_with("fd 7: "), "{e}");
    }
}
