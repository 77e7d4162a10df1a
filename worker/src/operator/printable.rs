//! Text from the database shown on a terminal: `err`, reasons, actors and
//! the like were written by plugins, producers and HTTP clients, so their
//! control characters are escaped (a `\n` would forge a line, an escape
//! sequence would drive the operator's terminal).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character escaped as Rust writes it
/// (`\n`, `\t`, `\u{1b}`), and a backslash doubled only where it could be
/// read as such an escape.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_untouched() {
        assert_eq!(printable("插件 failed: ValueError('x')"), "插件 failed: ValueError('x')");
        assert_eq!(printable("a\nFAKE line\r\tb"), "a\\nFAKE line\\r\\tb");
        assert_eq!(printable("\u{1b}[31mred\u{7}\u{9b}"), "\\u{1b}[31mred\\u{7}\\u{9b}");
        assert!(!printable("\u{0}\u{7f}\u{85}").chars().any(char::is_control));
    }
}
