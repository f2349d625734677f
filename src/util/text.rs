//! Text from the outside world (Consul error bodies, server messages) made safe to log: cut on a
//! character boundary, never inside one, folded onto one line, or stripped of control
//! characters before it reaches a terminal.

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

/// `text` safe to print on a terminal: control characters (escape sequences that could move the
/// cursor or retitle the window, carriage returns, newlines) become `�`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
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
    fn printable_defuses_terminal_escapes() {
        assert_eq!(
            printable("db\u{1b}]0;owned\u{7}-a\r\n"),
            "db\u{fffd}]0;owned\u{fffd}-a\u{fffd}\u{fffd}"
        );
        assert_eq!(printable("db-a/mysql → ok"), "db-a/mysql → ok");
    }

    #[test]
    fn one_line_folds_whitespace() {
        assert_eq!(one_line(" a\n b\t\tc "), "a b c");
    }
}
