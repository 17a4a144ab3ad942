//! A bound on how long a chain one expression may hold, checked on the source text before
//! minijinja reads it.
//!
//! minijinja bounds nesting (about 75 levels of brackets, 150 of blocks), not chains:
//! `not not not …`, `a|lower|lower…`, `a.b.b…`, `1 + 1 + …`, `x[0][0]…` and `- - 1` each add one
//! level to its syntax tree per element, and its parser (for unary operators), its code generator and the
//! tree's drop recurse once per level, so tens of thousands of them overflow the stack: a signal,
//! not an error. Counting the operators of each expression is one pass over the bytes and bounds
//! that depth whatever the operators are. The count errs high (`==` counts twice, a `(` of
//! grouping counts as a call), never low, so no chain slips past it.

/// Operators, filters, tests, attribute lookups, subscripts, calls and keyword operators one
/// expression (a `when`, a `splat`, one `{{ }}` or `{% %}` tag) may hold. Real mode files use a
/// handful; at 200, with `NESTING`, the deepest tree minijinja can then build renders within
/// 1 MiB of stack in an unoptimized build (a unit test renders each shape at the bounds so).
pub const CHAIN: usize = 200;

/// Brackets (`(`, `[`, `{`) one expression may nest, and blocks (`{% if %}`, `{% for %}`, …) one
/// template may nest. minijinja's own bound (150 levels of its parser: about 75 brackets, 150
/// blocks) lets a level take some 20 KiB of stack in an unoptimized build, 1.5 MiB and more in
/// all; mode files nest a few.
pub const NESTING: usize = 20;

/// Words minijinja reads as operators; each makes a node of the tree.
const KEYWORDS: &[&[u8]] = &[b"not", b"and", b"or", b"is", b"in", b"if", b"else"];

/// Checks every expression of `source`: the whole of it with `is_expression`, otherwise each
/// tag of the template.
pub fn check(source: &str, is_expression: bool) -> Result<(), minijinja::Error> {
    let bytes = source.as_bytes();
    if is_expression {
        let (counted, _) = count_tag(bytes, 0, None);
        return verdict(source, 0, counted);
    }
    let mut index = 0;
    let mut blocks: usize = 0;
    while let Some(open) = next_tag(bytes, index) {
        if bytes[open + 1] == b'%' {
            blocks = nest(blocks, &bytes[open + 2..]);
            if blocks > NESTING {
                let character = source[..open].chars().count() + 1;
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::SyntaxError,
                    format!(
                        "the block at character {character} nests blocks {blocks} deep; at most \
                         {NESTING} levels are allowed"
                    ),
                ));
            }
        }
        index = match bytes[open + 1] {
            b'#' => find(bytes, open + 2, b"#}").map_or(bytes.len(), |at| at + 2),
            b'%' if is_raw(&bytes[open + 2..]) => {
                find(bytes, open + 2, b"endraw").map_or(bytes.len(), |at| at + 6)
            }
            kind => {
                let closer = if kind == b'{' { b'}' } else { b'%' };
                let (counted, end) = count_tag(bytes, open + 2, Some(closer));
                verdict(source, open, counted)?;
                end
            }
        };
    }
    Ok(())
}

/// What one expression holds: chain elements, and the deepest nesting of brackets.
#[derive(Clone, Copy, Default)]
struct Counted {
    chain: usize,
    depth: usize,
}

fn verdict(source: &str, at: usize, counted: Counted) -> Result<(), minijinja::Error> {
    let character = source[..at].chars().count() + 1;
    let what = if counted.chain > CHAIN {
        format!(
            "chains {} operators, filters, lookups or calls; at most {CHAIN} are allowed in one \
             expression (split it with `vars` or `{{% set %}}`)",
            counted.chain
        )
    } else if counted.depth > NESTING {
        format!(
            "nests brackets {} deep; at most {NESTING} levels are allowed in one expression",
            counted.depth
        )
    } else {
        return Ok(());
    };
    Err(minijinja::Error::new(
        minijinja::ErrorKind::SyntaxError,
        format!("the expression at character {character} {what}"),
    ))
}

/// The start of the next `{{`, `{%` or `{#` at or after `from`.
fn next_tag(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let at = rest
        .windows(2)
        .position(|pair| pair[0] == b'{' && matches!(pair[1], b'{' | b'%' | b'#'))?;
    Some(from + at)
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let at = rest.windows(needle.len()).position(|w| w == needle)?;
    Some(from + at)
}

/// Statements that open a block closed by an `end…` tag. `set` opens one only in its block form
/// (`{% set x %}…{% endset %}`, without `=`).
const OPENERS: &[&[u8]] = &[
    b"if",
    b"for",
    b"with",
    b"block",
    b"macro",
    b"call",
    b"filter",
    b"autoescape",
];

/// The depth of blocks after the `{%` tag starting at `rest`, from `depth` before it.
fn nest(depth: usize, rest: &[u8]) -> usize {
    let rest = rest.strip_prefix(b"-").unwrap_or(rest);
    let start = rest.iter().position(|b| !b.is_ascii_whitespace());
    let Some(word) = start.map(|start| {
        let tail = &rest[start..];
        let end = (tail.iter())
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .unwrap_or(tail.len());
        (&tail[..end], &tail[end..])
    }) else {
        return depth;
    };
    let tag_end = find(word.1, 0, b"%}").unwrap_or(word.1.len());
    match word.0 {
        w if w.starts_with(b"end") => depth.saturating_sub(1),
        b"set" if !word.1[..tag_end].contains(&b'=') => depth + 1,
        w if OPENERS.contains(&w) => depth + 1,
        _ => depth,
    }
}

/// Whether a `{%` tag starting at `rest` is `{% raw %}`, whose body is text, not expressions.
fn is_raw(rest: &[u8]) -> bool {
    let rest = rest.strip_prefix(b"-").unwrap_or(rest);
    let start = rest.iter().position(|b| !b.is_ascii_whitespace());
    start.is_some_and(|start| {
        rest[start..].starts_with(b"raw")
            && !rest
                .get(start + 3)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    })
}

/// Counts the chain elements from `start` up to the tag's end (`}}` or `%}` outside brackets,
/// as minijinja's lexer ends a tag) or the end of the text; also gives where counting stopped.
fn count_tag(bytes: &[u8], start: usize, closer: Option<u8>) -> (Counted, usize) {
    let mut counted = Counted::default();
    let mut count = 0;
    let mut depth: isize = 0;
    let mut index = start;
    while index < bytes.len() {
        let byte = bytes[index];
        if depth <= 0 && Some(byte) == closer && bytes.get(index + 1) == Some(&b'}') {
            counted.chain = count;
            return (counted, index + 2);
        }
        match byte {
            quote @ (b'\'' | b'"') => index = skip_string(bytes, index, quote),
            b'0'..=b'9' => {
                // Digits only: the `.` of `1.5` counts (too high by one), so that `a.0.0.0…`,
                // a chain of lookups, can never be read as one number.
                while index + 1 < bytes.len() && matches!(bytes[index + 1], b'0'..=b'9' | b'_') {
                    index += 1;
                }
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let end = (index..bytes.len())
                    .find(|&i| !(bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_'))
                    .unwrap_or(bytes.len());
                count += usize::from(KEYWORDS.contains(&&bytes[index..end]));
                index = end - 1;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                counted.depth = counted.depth.max(depth.unsigned_abs());
                // `{` opens a map, not a chain.
                count += usize::from(byte != b'{');
            }
            b')' | b']' | b'}' => depth -= 1,
            b'.' | b'|' | b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' | b'!' => {
                count += 1;
            }
            _ => {}
        }
        index += 1;
    }
    counted.chain = count;
    (counted, bytes.len())
}

/// The index of the closing quote of the string opening at `open` (or the text's last byte).
fn skip_string(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut index = open + 1;
    while index < bytes.len() && bytes[index] != quote {
        index += if bytes[index] == b'\\' { 2 } else { 1 };
    }
    index.min(bytes.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(piece: &str, count: usize) -> String {
        piece.repeat(count)
    }

    #[test]
    fn short_chains_pass_and_long_ones_are_refused() {
        let ok = [
            "a.b.c|lower|upper ~ 'x' ~ (1 + 2) * -3",
            "not env_flag('UPGRADE') and x in [1, 2, 3]",
            "publish | split(',') | map('trim') | select | prefix('--publish=')",
        ];
        for expression in ok {
            assert!(check(expression, true).is_ok(), "{expression}");
        }
        let over = CHAIN + 1;
        let refused = [
            format!("{}true", long("not ", over)),
            format!("'a'{}", long("|lower", over)),
            format!("a{}", long(".b", over)),
            format!("a{}", long(".0", over)),
            format!("1{}", long(" + 1", over)),
            format!("'a'{}", long(" ~ 'a'", over)),
            format!("x{}", long("[0]", over)),
            format!("{}1", long("-", over)),
            format!("1{}", long(" if x else 1", over)),
        ];
        for expression in &refused {
            let error = check(expression, true).unwrap_err();
            assert_eq!(error.kind(), minijinja::ErrorKind::SyntaxError);
            assert!(check(&format!("t {{{{ {expression} }}}} t"), false).is_err());
        }
    }

    #[test]
    fn each_tag_is_counted_on_its_own() {
        let tag = format!("{{{{ a{} }}}}", long(".b", CHAIN / 2));
        assert!(check(&tag.repeat(50), false).is_ok());
        // Strings, comments and raw blocks hold text, not operators.
        let text = long("|lower", CHAIN * 2);
        for template in [
            format!("{{{{ '{text}' }}}}"),
            format!("{{# {text} #}}"),
            format!("{{% raw %}}{{{{ {text} }}}}{{% endraw %}}"),
            format!("plain {text}"),
        ] {
            assert!(check(&template, false).is_ok(), "{template}");
        }
        // A `}}` inside brackets does not end the tag.
        let hidden = format!("{{{{ {{'a': 1}}['a'] {} }}}}", long(" + 1", CHAIN));
        assert!(check(&hidden, false).is_err());
        let statement = format!("{{% if {}x %}}y{{% endif %}}", long("not ", CHAIN + 1));
        assert!(check(&statement, false).is_err());
    }
}
