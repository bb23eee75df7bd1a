//! A linear pre-scan that refuses deeply nested flow collections before
//! the YAML parser sees them.
//!
//! The parser (`yaml_serde`, a port of libyaml) keeps a possible simple key
//! per flow level and re-checks them all at every token, so `[[[[…` takes
//! time quadratic in its depth: 100,000 brackets took 126 s (debug build)
//! before the deserializer's recursion limit (128) refused them. This scan
//! follows just enough of YAML to find flow collections, in one pass, and
//! stops at the bracket nested deeper than [`MAX_FLOW_DEPTH`].
//!
//! What it follows: comments; quoted scalars; block scalars (`|`, `>`: the
//! more-indented lines after them); and, outside brackets, where a value
//! starts (a line's start, after `- `, `? ` or `: `): a `[` or `{` there
//! opens a collection, anywhere else it is part of a plain scalar
//! (`note: see [1]`). Inside brackets every bracket is structure. Where it
//! misreads YAML it skips text, so it can only count fewer brackets than
//! the parser, never refuse what the parser accepts.

/// The deepest flow nesting accepted: the deserializer's own recursion
/// limit, so nothing it would accept is refused here.
pub(crate) const MAX_FLOW_DEPTH: usize = 128;

/// The byte offset of the first bracket nested deeper than
/// [`MAX_FLOW_DEPTH`], if any.
pub(crate) fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let blank = |b: Option<&u8>| matches!(b, None | Some(b' ' | b'\t' | b'\r' | b'\n'));
    let mut depth = 0usize;
    // Outside brackets: whether a value may start at the next non-blank.
    let mut value_start = true;
    // Inside brackets: whether the previous byte ends a token.
    let mut token_start = true;
    // The indentation of the current line, and of a block scalar's parent
    // while its content is being skipped.
    let mut indent = 0usize;
    let mut line_start = true;
    let mut block_scalar: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if line_start {
            let spaces = bytes[i..].iter().take_while(|&&c| c == b' ').count();
            let rest = bytes.get(i + spaces);
            if let Some(parent) = block_scalar {
                // Block scalar content: more indented, or an empty line.
                if spaces > parent || matches!(rest, None | Some(b'\n' | b'\r')) {
                    i += bytes[i..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(bytes.len() - i, |p| p + 1);
                    continue;
                }
                block_scalar = None;
            }
            indent = spaces;
            line_start = false;
            i += spaces;
            continue;
        }
        let starts = if depth == 0 { value_start } else { token_start };
        match b {
            b'\n' => {
                line_start = true;
                value_start = true;
                token_start = true;
                i += 1;
                continue;
            }
            b'#' if i == 0 || blank(bytes.get(i - 1)) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'\'' if starts => {
                // '' inside is an escaped quote: read as a close and a
                // reopen, which lands in the same place.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
                value_start = false;
                token_start = false;
            }
            b'"' if starts => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                value_start = false;
                token_start = false;
            }
            b'[' | b'{' if starts => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(i);
                }
                token_start = true;
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                token_start = false;
                value_start = false;
            }
            b'|' | b'>' if depth == 0 && value_start => {
                block_scalar = Some(indent);
                value_start = false;
            }
            b'-' | b'?' if depth == 0 && value_start && blank(bytes.get(i + 1)) => {}
            b':' if blank(bytes.get(i + 1)) || depth > 0 => {
                value_start = true;
                token_start = true;
            }
            b' ' | b'\t' | b'\r' => token_start = true,
            b',' if depth > 0 => token_start = true,
            _ => {
                value_start = false;
                token_start = false;
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flow_collections_only() {
        let deep = |d: usize| format!("x: {}{}", "[".repeat(d), "]".repeat(d));
        assert_eq!(too_deep(&deep(MAX_FLOW_DEPTH)), None);
        assert_eq!(
            too_deep(&deep(MAX_FLOW_DEPTH + 1)),
            Some(3 + MAX_FLOW_DEPTH)
        );
        assert!(too_deep(&format!("- {}", "{a: ".repeat(200))).is_some());
        assert!(too_deep(&format!("a:\n  - - {}", "[ ".repeat(200))).is_some());
        assert!(too_deep(&format!("{{\"a\":{}", "[".repeat(200))).is_some());
        let many = "[".repeat(200);
        // Brackets in quotes, comments, plain scalars and block scalars
        // are text.
        for text in [
            format!("x: '{many}'"),
            format!("x: \"a\\\"{many}\""),
            format!("x: 1 # {many}"),
            format!("# {many}"),
            format!("x: it's {many} done'"),
            format!("x: see {many}"),
            format!("x: |\n  {many}\n\n  {many}\ny: 1"),
            format!("- >-\n   {many}"),
        ] {
            assert_eq!(too_deep(&text), None, "{text}");
        }
        // After a block scalar ends, brackets count again.
        assert!(too_deep(&format!("x: |\n  a\ny: {many}")).is_some());
        // Siblings do not add up.
        assert_eq!(
            too_deep(&format!("x: {}", "[1, [2], {a: 3}], ".repeat(1000))),
            None
        );
    }
}
