//! Pure: the provider's own words made safe to record. A provider that quotes the
//! `upload_url` it was given (in a task's `error_message`, or an error answer to a
//! submit) would otherwise copy a presigned URL's `X-Amz-Credential` and
//! `X-Amz-Security-Token` into results.csv, the report, the journal and the logs. Every
//! text from the provider passes through [`provider_text`] in the client, before anything
//! records it. Nothing else is changed: a result URL the provider *gives* (its data, not
//! its words) is never touched.

/// What replaces a presigned URL's query string, or a stray `X-Amz-*` parameter.
pub const REDACTED: &str = "[redacted]";

/// `text` with the query string of every URL that carries an `X-Amz-*` parameter, and
/// every other word holding one from that parameter on, replaced by [`REDACTED`].
pub fn provider_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if is_boundary(c) {
            out.push_str(&redact_word(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&redact_word(&word));
    out
}

/// Where a URL or a parameter ends in prose, JSON or markup.
fn is_boundary(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '`' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}'
        )
}

/// One word: cut from its query string (or its first `X-Amz-`) on, when it carries one;
/// the punctuation that ends it in prose stays.
fn redact_word(word: &str) -> String {
    let Some(at) = word.to_ascii_lowercase().find("x-amz-") else {
        return word.to_owned();
    };
    let cut = match word[..at].find('?') {
        Some(query) => query + 1,
        None => at,
    };
    let body = word.trim_end_matches(['.', ',', ';', ':', '!']);
    format!("{}{REDACTED}{}", &word[..cut], &word[body.len().max(cut)..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_query_strings_are_cut_from_provider_words() {
        let url = "https://stems.s3.eu-west-1.amazonaws.com/p/abc.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261125%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20261125T160000Z&X-Amz-Expires=86400&X-Amz-Security-Token=SESSIONTOKEN&X-Amz-SignedHeaders=host&X-Amz-Signature=abcdef";
        let said = format!("cannot fetch upload_url {url}: HTTP 403");
        assert_eq!(
            provider_text(&said),
            "cannot fetch upload_url https://stems.s3.eu-west-1.amazonaws.com/p/abc.wav?[redacted]: HTTP 403"
        );
        // Quoted, in JSON, lowercased, or a parameter on its own.
        let quoted = format!(r#"{{"upload_url":"{url}"}}"#);
        let scrubbed = provider_text(&quoted);
        assert!(
            !scrubbed.contains("AKIAEXAMPLE") && !scrubbed.contains("SESSIONTOKEN"),
            "{scrubbed}"
        );
        assert!(scrubbed.ends_with(r#"abc.wav?[redacted]"}"#), "{scrubbed}");
        assert_eq!(
            provider_text("bad x-amz-security-token=SESSIONTOKEN&x=1 (expired)"),
            "bad [redacted] (expired)"
        );
        assert_eq!(
            provider_text("u?a=1&X-Amz-Credential=AKIAEXAMPLE"),
            "u?[redacted]"
        );
        // Anything else stays as the provider wrote it.
        let plain = "The prompt violates our content policy: https://example.com/a.wav?v=2";
        assert_eq!(provider_text(plain), plain);
        assert_eq!(provider_text(""), "");
    }
}
