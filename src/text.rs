//! Text made safe to show: control characters written out so a terminal shows what a string
//! says, and arguments quoted so a printed command line pastes back as the same argv. Plans,
//! errors and the executor's announcements all go through here, so it depends on nothing.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that change what a terminal shows rather than showing themselves: C0 and C1
/// controls (carriage return, ANSI escapes) and the bidirectional overrides.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        c if u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        }
    }
}

fn escape(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let hidden = |c: char| is_hidden(c) && !(keep_lines && (c == '\n' || c == '\t'));
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with every control character written out (`\r`, `\e`, `\x07`), so what a plan or an
/// error shows is what it says: a carriage return or an ANSI sequence can never hide a command.
pub fn visible(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Like `visible`, but line breaks and tabs stay: for multi-line messages such as the tail of
/// docker's stderr in an error.
pub fn visible_lines(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// `arg` quoted for a POSIX shell only when it needs it. Control characters are written in
/// bash's `$'…'` form, which shows them and still pastes back as the same bytes.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
    if plain {
        arg.to_owned()
    } else if arg.chars().any(is_hidden) {
        let mut out = String::from("$'");
        for c in arg.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                c if is_hidden(c) => push_escaped(&mut out, c),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `haystack.contains(needle)` for the short strings of an argv or a template: std's searcher
/// prepares the needle on every call, which showed up in profiles of 10,000-step plans.
pub fn contains(haystack: &str, needle: &str) -> bool {
    let Some(first) = needle.bytes().next() else {
        return true;
    };
    let bytes = haystack.as_bytes();
    let mut from = 0;
    while let Some(offset) = bytes[from..].iter().position(|b| *b == first) {
        let at = from + offset;
        if bytes[at..].starts_with(needle.as_bytes()) {
            return true;
        }
        from = at + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("--tag=a/b:1"), "--tag=a/b:1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(x)"), "'$(x)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(shell_quote("rm -rf ~\rls"), r"$'rm -rf ~\rls'");
        assert_eq!(shell_quote("a\u{1b}[2Kb'\\"), r"$'a\e[2Kb\'\\'");
        assert_eq!(visible("x\r\u{202e}y\u{7}"), r"x\r\u202ey\x07");
        assert_eq!(visible_lines("a\n\tb\r"), "a\n\tb\\r");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
    }
}
