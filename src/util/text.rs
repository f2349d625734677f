//! Text from the outside world (Consul error bodies, server messages) made safe to log: cut on a
//! character boundary, never inside one, and folded onto one line.

/// At most `max` characters of `text`, with `…` appended when cut. Never splits a character.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Collapses all whitespace runs (newlines included) into single spaces.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_char_safe() {
        let text = "é".repeat(300);
        let cut = truncate_chars(&text, 200);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_chars("short", 200), "short");
        assert_eq!(truncate_chars("日本語テキスト", 3), "日本語…");
    }

    #[test]
    fn one_line_folds_whitespace() {
        assert_eq!(one_line(" a\n b\t\tc "), "a b c");
    }
}
