//! HTML text escaping for the status page. Node names, check output, reasons and error texts come
//! from Consul or the network, so every one of them goes through [`Esc`] before it reaches a page:
//! `<script>` in a check's output must stay text.
//!
//! The five characters HTML gives meaning to are replaced by entities; that is safe both in
//! element content and inside a quoted attribute value (`"` and `'` are escaped for the latter).

use std::fmt;

/// Writes `self.0` HTML-escaped: `format!("<td>{}</td>", Esc(name))`.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Copy runs of harmless text in one write rather than char by char.
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            let entity = match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            };
            f.write_str(entity)?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(text: &str) -> String {
        Esc(text).to_string()
    }

    #[test]
    fn a_script_tag_stays_text() {
        assert_eq!(
            escape("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
    }

    #[test]
    fn quotes_cannot_end_an_attribute() {
        assert_eq!(
            escape(r#"x" onmouseover="alert(1)"#),
            "x&quot; onmouseover=&quot;alert(1)"
        );
        assert_eq!(escape("it's"), "it&#39;s");
    }

    #[test]
    fn ampersands_are_escaped_once_and_other_text_is_kept() {
        assert_eq!(escape("a & b &amp; c"), "a &amp; b &amp;amp; c");
        assert_eq!(escape("db-a/mysql-a → 日本"), "db-a/mysql-a → 日本");
        assert_eq!(escape(""), "");
        assert_eq!(format!("[{}]", Esc("<&>")), "[&lt;&amp;&gt;]");
    }
}
