//! Where each entry of a configuration file is: a tree of positions built
//! from a YAML parser's own spans (`saphyr-parser`), so that every error
//! and warning names the offending key's line and column. (It was a text
//! search, which pointed a bad value at the start of its rule.)
//!
//! The tree is built from the parser's events with an explicit stack, so
//! deep nesting cannot overflow ours; `depth.rs` refuses deep flow nesting
//! before any parser sees it.

use saphyr_parser::{Event, Parser};

/// 1-based line and column.
pub type At = (usize, usize);

/// The positions of one file's entries.
#[derive(Debug, Default)]
pub struct Spans {
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    at: At,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Scalar(String),
    /// (key, where the key is, the value's node)
    Map(Vec<(String, At, usize)>),
    Seq(Vec<usize>),
    Other,
}

/// An open collection while the events are read.
enum Frame {
    Map {
        node: usize,
        key: Option<(String, At)>,
    },
    Seq {
        node: usize,
    },
}

impl Spans {
    /// The positions in `text`. A syntax error ends the tree where it is
    /// (the error itself is reported, with its position, by the parser
    /// that deserializes the file).
    pub fn parse(text: &str) -> Spans {
        let mut spans = Spans::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let at = (span.start.line(), span.start.col() + 1);
            match event {
                Event::Scalar(value, ..) => {
                    // A key of an open mapping, or a value.
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some((value.into_owned(), at));
                        continue;
                    }
                    let node = spans.push(at, Kind::Scalar(value.into_owned()));
                    spans.attach(&mut stack, node);
                }
                Event::Alias(_) => {
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some((String::new(), at));
                        continue;
                    }
                    let node = spans.push(at, Kind::Other);
                    spans.attach(&mut stack, node);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    // A collection used as a key: positions inside it are
                    // not looked up; it stands for an empty key.
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some((String::new(), at));
                    }
                    let kind = if is_map {
                        Kind::Map(Vec::new())
                    } else {
                        Kind::Seq(Vec::new())
                    };
                    let node = spans.push(at, kind);
                    spans.attach(&mut stack, node);
                    stack.push(if is_map {
                        Frame::Map { node, key: None }
                    } else {
                        Frame::Seq { node }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        spans
    }

    fn push(&mut self, at: At, kind: Kind) -> usize {
        self.nodes.push(Node { at, kind });
        self.nodes.len() - 1
    }

    /// Hangs `node` under the open collection (the first node is the root).
    fn attach(&mut self, stack: &mut [Frame], node: usize) {
        match stack.last_mut() {
            Some(Frame::Map { node: map, key }) => {
                if let Some((k, at)) = key.take()
                    && let Kind::Map(entries) = &mut self.nodes[*map].kind
                {
                    entries.push((k, at, node));
                }
            }
            Some(Frame::Seq { node: seq }) => {
                if let Kind::Seq(items) = &mut self.nodes[*seq].kind {
                    items.push(node);
                }
            }
            None => {}
        }
    }

    /// Where the entry at `path` is: the last key's own position (where
    /// `key:` starts), or a list item's. A list is entered by index
    /// (`"3"`) or by the item whose `name` is the segment (`rules.keep`).
    /// A path that goes further than the file (a missing key) stops at the
    /// deepest entry found; `None` only for an empty file.
    pub fn locate(&self, path: &[&str]) -> Option<At> {
        let mut node = 0;
        let mut at = self.nodes.first()?.at;
        for segment in path {
            let next = match &self.nodes[node].kind {
                Kind::Map(entries) => entries
                    .iter()
                    .rev()
                    .find(|(k, ..)| k == segment)
                    .map(|(_, key_at, child)| (*key_at, *child)),
                Kind::Seq(items) => match segment.parse::<usize>() {
                    Ok(i) => items.get(i).map(|&c| (self.nodes[c].at, c)),
                    Err(_) => items
                        .iter()
                        .find(|&&c| self.name_of(c) == Some(segment))
                        .map(|&c| (self.nodes[c].at, c)),
                },
                _ => None,
            };
            match next {
                Some((a, child)) => {
                    at = a;
                    node = child;
                }
                None => break,
            }
        }
        Some(at)
    }

    /// The `name:` of a mapping node.
    fn name_of(&self, node: usize) -> Option<&str> {
        let Kind::Map(entries) = &self.nodes[node].kind else {
            return None;
        };
        let (_, _, value) = entries.iter().find(|(k, ..)| k == "name")?;
        match &self.nodes[*value].kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
daemon:
  timezone: Asia/Shanghai
accounts:
  - { name: alice, qq_number: \"1\" }
  - name: bob
    qq_number: 2
rules:
  - name: keep
    accounts: all
    check: { every: 1m }
    renew_before: \"3x\"
";

    #[test]
    fn keys_are_found_at_their_own_line_and_column() {
        let s = Spans::parse(TEXT);
        assert_eq!(s.locate(&["daemon", "timezone"]), Some((2, 3)));
        assert_eq!(s.locate(&["accounts", "alice"]), Some((4, 5)));
        assert_eq!(s.locate(&["accounts", "alice", "qq_number"]), Some((4, 20)));
        assert_eq!(s.locate(&["accounts", "1", "qq_number"]), Some((6, 5)));
        assert_eq!(s.locate(&["accounts", "bob"]), Some((5, 5)));
        // The bad value's own line, not the rule's (it was 8:5).
        assert_eq!(s.locate(&["rules", "keep", "renew_before"]), Some((11, 5)));
        assert_eq!(
            s.locate(&["rules", "keep", "check", "every"]),
            Some((10, 14))
        );
        // A missing key: the deepest entry there is.
        assert_eq!(s.locate(&["rules", "keep", "product"]), Some((8, 5)));
        assert_eq!(s.locate(&["nothing"]), Some((1, 1)));
        assert_eq!(Spans::parse("").locate(&["x"]), None);
    }

    #[test]
    fn broken_files_and_odd_keys_do_not_panic() {
        for text in [
            "a: [1, 2\nb: 3",
            "? [a, b]\n: 1\nc: 2",
            "&x a: *x\n",
            "- - - 1\n",
            "\"\": 1\n",
        ] {
            let s = Spans::parse(text);
            let _ = s.locate(&["a", "0", "b"]);
            let _ = s.locate(&["c"]);
        }
    }
}
