//! What can go wrong with one API call, as data: the run state decides on it, so it lives
//! apart from the HTTP client that produces it. Pure.

use std::time::Duration;

/// What went wrong with one API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No connection was made: the request never left.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The call took longer than its timeout; it may have been processed.
    #[error("timed out waiting for the answer")]
    Timeout,
    /// The connection broke (reset, closed) after it was made; it may have been processed.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The provider answered with an error, by HTTP status or by the body's `code`.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status, or the body's `code` when the HTTP status was 200.
        status: u16,
        /// The provider's message.
        message: String,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// A success status whose body could not be read.
    #[error("unreadable answer: {0}")]
    Decode(String),
    /// A local file to send could not be read; nothing was sent.
    #[error("cannot read {0}")]
    Local(String),
    /// What answered is not the API: its body is not the API's JSON (a web page, a
    /// server's own 404). Rate limits and outages (429, 502, 503, 504) stay [`ApiError::Status`]
    /// whatever their body: a gateway in front of the API answers them too.
    #[error("HTTP {status} from something that is not the API: {excerpt}")]
    NotApi {
        /// The HTTP status.
        status: u16,
        /// The start of the body, on one line ([`one_line`]).
        excerpt: String,
    },
}

/// How many characters of an answer that is not the API's are quoted.
pub const EXCERPT_CHARS: usize = 120;

/// `text` on one line, for quoting an answer in a log line, a CSV cell or the page: every
/// run of whitespace (newlines too) made one space, control characters dropped, cut to
/// `max` characters with an ellipsis.
pub fn one_line(text: &str, max: usize) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined: String = words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    match joined.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

impl ApiError {
    /// Whether the answer came from the API itself: its JSON, or its rate limit or outage
    /// status. A connection that failed after it was made says nothing either way.
    pub fn reached_api(&self) -> bool {
        matches!(self, ApiError::Status { .. } | ApiError::Decode(_))
    }

    /// Whether the error says the base URL cannot be used at all: nothing answers there
    /// (refused, no such host, TLS), or what answers is not the API.
    pub fn base_url_unusable(&self) -> bool {
        matches!(self, ApiError::Connect(_) | ApiError::NotApi { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_answers_are_cut_to_one_line() {
        let page = "<!DOCTYPE html>\n<html>\n  <head><title>404 Not Found</title></head>\r\n\t<body>\u{7}</body>";
        assert_eq!(
            one_line(page, 200),
            "<!DOCTYPE html> <html> <head><title>404 Not Found</title></head> <body></body>"
        );
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("  ", 3), "");
    }
}
