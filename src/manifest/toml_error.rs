//! A TOML syntax or shape error (bad syntax, an unknown key, a value of the wrong type) as
//! a located [`Problem`], in the words of the manifest rather than of serde.
//!
//! serde stops at the first such error and says only `invalid type: string "0.5",
//! expected f64`, with the byte span of the value. The key is found again by walking the
//! spanned TOML document to the value at that span; what was found is read from that value,
//! what was expected from the message. Pure: it reads the text it is given.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::validate::LineIndex;
use super::Problem;

/// `err`, raised while reading `text`, as a problem with its line, its key and plain words.
pub(super) fn problem(text: &str, lines: &LineIndex, err: &toml::de::Error) -> Problem {
    let message = err.message().trim().to_owned();
    let line = err.span().map_or(1, |span| lines.line(span.start));
    let wrong_type = err.span().and_then(|span| wrong_type(text, &message, span));
    if let Some((field, message)) = wrong_type {
        return Problem {
            line,
            field,
            message,
        };
    }
    let unknown = err
        .span()
        .and_then(|span| unknown_key(text, &message, span));
    if let Some((field, message)) = unknown {
        return Problem {
            line,
            field,
            message,
        };
    }
    // The toml crate names an unknown key in its message; the field we can name
    // ourselves is the one the error's span points at.
    let field = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .unwrap_or("toml")
        .to_owned();
    Problem {
        line,
        field,
        message,
    }
}

/// For an `unknown field `x`, expected one of `a`, `b`` error at `span`: the key's full
/// path and `unknown key (hint: did you mean `a`?)`, or the keys allowed there.
fn unknown_key(text: &str, message: &str, span: Range<usize>) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, after) = rest.split_once('`')?;
    let allowed: Vec<&str> = after.split('`').skip(1).step_by(2).collect();
    let document = DeTable::parse(text).ok()?;
    let mut path = None;
    for (key, value) in document.get_ref() {
        find_key(key, value, key.get_ref().to_string(), &span, &mut path);
    }
    let closest = allowed
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min();
    let message = match closest {
        Some((_, candidate)) => format!("unknown key (hint: did you mean `{candidate}`?)"),
        None if allowed.is_empty() => "unknown key".to_owned(),
        None => format!("unknown key (the keys here are: {})", allowed.join(", ")),
    };
    Some((path.unwrap_or_else(|| name.to_owned()), message))
}

/// The path of the key whose name is at `span`.
fn find_key(
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
    path: String,
    span: &Range<usize>,
    found: &mut Option<String>,
) {
    if key.span().contains(&span.start) {
        *found = Some(path.clone());
    }
    match value.get_ref() {
        DeValue::Table(table) => {
            for (child_key, child) in table {
                let child_path = format!("{path}.{}", child_key.get_ref());
                find_key(child_key, child, child_path, span, found);
            }
        }
        DeValue::Array(array) => {
            for (i, child) in array.iter().enumerate() {
                if let DeValue::Table(table) = child.get_ref() {
                    for (child_key, grandchild) in table {
                        let child_path = format!("{path}[{}].{}", i + 1, child_key.get_ref());
                        find_key(child_key, grandchild, child_path, span, found);
                    }
                }
            }
        }
        _ => {}
    }
}

/// Levenshtein distance: how many single-character edits turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// For an `invalid type: …, expected …` error at `span`: the key path of the value there
/// and `expected a number, found a string ("0.5")`.
fn wrong_type(text: &str, message: &str, span: Range<usize>) -> Option<(String, String)> {
    let (_, expected) = message
        .strip_prefix("invalid type: ")?
        .rsplit_once(", expected ")?;
    let document = DeTable::parse(text).ok()?;
    let mut found = None;
    for (key, value) in document.get_ref() {
        find(value, key.get_ref().to_string(), &span, &mut found);
    }
    let (field, value) = found?;
    let expected = expected_words(expected);
    let (kind, shown) = found_words(value.get_ref());
    let message = match shown {
        // Same kind, still refused: an integer past what the key can hold.
        Some(shown) if kind == expected => format!("{shown} is out of range"),
        Some(shown) => format!("expected {expected}, found {kind} ({shown})"),
        None => format!("expected {expected}, found {kind}"),
    };
    Some((field, message))
}

/// The value whose span is the smallest holding `span`, with its key path: tables by
/// `.key`, arrays (of tables or of values) by 1-based `[n]`, as the other problems say it.
fn find<'a>(
    value: &'a Spanned<DeValue<'a>>,
    path: String,
    span: &Range<usize>,
    found: &mut Option<(String, &'a Spanned<DeValue<'a>>)>,
) {
    // Every child is visited: a table's span need not cover the keys set under it.
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, child) in table {
                find(child, format!("{path}.{}", key.get_ref()), span, found);
            }
        }
        DeValue::Array(array) => {
            for (i, child) in array.iter().enumerate() {
                find(child, format!("{path}[{}]", i + 1), span, found);
            }
        }
        _ => {}
    }
    let holds = value.span().start <= span.start && span.end <= value.span().end;
    let smaller = found
        .as_ref()
        .is_none_or(|(_, best)| value.span().len() < best.span().len());
    if holds && smaller {
        *found = Some((path, value));
    }
}

/// serde's name of what a key takes, in the manifest's words.
fn expected_words(expected: &str) -> &str {
    match expected {
        "f64" | "f32" => "a number",
        "i64" | "i32" | "i16" | "i8" | "u64" | "u32" | "u16" | "u8" | "usize" => "an integer",
        "a sequence" => "an array",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => other,
    }
}

/// What a value is, and the value itself when it is short enough to show.
fn found_words(value: &DeValue) -> (&'static str, Option<String>) {
    match value {
        DeValue::String(text) => ("a string", Some(format!("{:?}", text.as_ref()))),
        DeValue::Integer(integer) => ("an integer", Some(integer.to_string())),
        DeValue::Float(float) => ("a number", Some(float.to_string())),
        DeValue::Boolean(boolean) => ("a boolean", Some(boolean.to_string())),
        DeValue::Datetime(datetime) => ("a date or time", Some(datetime.to_string())),
        DeValue::Array(_) => ("an array", None),
        DeValue::Table(_) => ("a table", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("stlye_weight", "style_weight"), 2);
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn an_unknown_key_is_named_by_its_path_with_the_closest_key() {
        let text = "[run]\nconcurency = 3\n";
        let message = "unknown field `concurency`, expected one of `output_dir`, `concurrency`";
        assert_eq!(
            unknown_key(text, message, 6..16),
            Some((
                "run.concurency".to_owned(),
                "unknown key (hint: did you mean `concurrency`?)".to_owned()
            ))
        );
        let far = "unknown field `concurency`, expected one of `output_dir`, `deadline`";
        assert_eq!(
            unknown_key(text, far, 6..16).unwrap().1,
            "unknown key (the keys here are: output_dir, deadline)"
        );
    }
}
