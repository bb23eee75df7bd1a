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
        want: Want,
    },
    Seq {
        node: usize,
        want: Want,
        /// The index the next item will have.
        next: usize,
    },
    /// A collection no requested path goes into: read past, not kept.
    Skip,
}

/// Which requested paths go through an open collection (its entries are
/// matched against segment `depth` of each).
#[derive(Clone)]
enum Want {
    /// Every position is kept ([`Spans::parse`]).
    All,
    /// These of the requested paths ([`Spans::parse_for`]).
    Paths { ids: Vec<usize>, depth: usize },
}

/// A list item that was not kept (its index and name were not asked for).
const SKIPPED: usize = usize::MAX;

impl Spans {
    /// The positions in `text`. A syntax error ends the tree where it is
    /// (the error itself is reported, with its position, by the parser
    /// that deserializes the file).
    pub fn parse(text: &str) -> Spans {
        Spans::build(text, &[], Want::All)
    }

    /// The positions in `text` that [`Spans::locate`] of each of `paths`
    /// reads, and no others: it answers for those paths as the whole tree
    /// would, holding a few entries instead of every account's.
    pub(crate) fn parse_for(text: &str, paths: &[Vec<&str>]) -> Spans {
        let ids = (0..paths.len()).collect();
        Spans::build(text, paths, Want::Paths { ids, depth: 0 })
    }

    fn build(text: &str, paths: &[Vec<&str>], root: Want) -> Spans {
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
                    if spans.wanted(&mut stack, paths, &root).is_some() {
                        let node = spans.push(at, Kind::Scalar(value.into_owned()));
                        spans.attach(&mut stack, node);
                    }
                }
                Event::Alias(_) => {
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some((String::new(), at));
                        continue;
                    }
                    if spans.wanted(&mut stack, paths, &root).is_some() {
                        let node = spans.push(at, Kind::Other);
                        spans.attach(&mut stack, node);
                    }
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
                    let Some(want) = spans.wanted(&mut stack, paths, &root) else {
                        stack.push(Frame::Skip);
                        continue;
                    };
                    let kind = if is_map {
                        Kind::Map(Vec::new())
                    } else {
                        Kind::Seq(Vec::new())
                    };
                    let node = spans.push(at, kind);
                    spans.attach(&mut stack, node);
                    stack.push(if is_map {
                        Frame::Map {
                            node,
                            key: None,
                            want,
                        }
                    } else {
                        Frame::Seq {
                            node,
                            want,
                            next: 0,
                        }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(closed) = stack.pop() {
                        spans.forget_unasked_item(&mut stack, closed, paths);
                    }
                }
                _ => {}
            }
        }
        spans
    }

    /// What the next value under the open collection is wanted for: `None`
    /// when no requested path goes into it (a mapping's key is then used
    /// up, and a list's index counted, as if it were kept).
    fn wanted(&mut self, stack: &mut [Frame], paths: &[Vec<&str>], root: &Want) -> Option<Want> {
        let Some(top) = stack.last_mut() else {
            return Some(root.clone());
        };
        let out = match top {
            Frame::Skip => return None,
            Frame::Map {
                want: Want::All, ..
            }
            | Frame::Seq {
                want: Want::All, ..
            } => Some(Want::All),
            Frame::Map {
                key,
                want: Want::Paths { ids, depth },
                ..
            } => {
                let k = key.as_ref().map_or("", |(k, _)| k.as_str());
                // A list item's `name` is kept: it is what the item is
                // found by.
                let ids = if k == "name" {
                    ids.clone()
                } else {
                    Spans::matching(paths, ids, *depth, |s| s == k)
                };
                (!ids.is_empty()).then(|| Want::Paths {
                    ids,
                    depth: *depth + 1,
                })
            }
            Frame::Seq {
                want: Want::Paths { ids, depth },
                next,
                ..
            } => {
                // An item may be asked for by a name not yet read.
                let index = *next;
                let ids = Spans::matching(paths, ids, *depth, |s| {
                    s.parse::<usize>().map_or(true, |i| i == index)
                });
                (!ids.is_empty()).then(|| Want::Paths {
                    ids,
                    depth: *depth + 1,
                })
            }
        };
        if out.is_none() {
            match top {
                Frame::Map { key, .. } => *key = None,
                Frame::Seq { node, next, .. } => {
                    *next += 1;
                    if let Kind::Seq(items) = &mut self.nodes[*node].kind {
                        items.push(SKIPPED);
                    }
                }
                Frame::Skip => {}
            }
        }
        out
    }

    /// Those of `ids` whose segment `depth` passes `matches`.
    fn matching(
        paths: &[Vec<&str>],
        ids: &[usize],
        depth: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<usize> {
        ids.iter()
            .copied()
            .filter(|&i| paths[i].get(depth).is_some_and(|s| matches(s)))
            .collect()
    }

    /// A list item just closed that no requested path names (by index or
    /// by `name`) is dropped with everything under it: it was kept only
    /// until its name was known.
    fn forget_unasked_item(&mut self, stack: &mut [Frame], closed: Frame, paths: &[Vec<&str>]) {
        let (Frame::Map { node, want, .. } | Frame::Seq { node, want, .. }) = closed else {
            return;
        };
        let Want::Paths { ids, depth } = want else {
            return;
        };
        let Some(Frame::Seq {
            node: list, next, ..
        }) = stack.last()
        else {
            return;
        };
        let index = (next - 1).to_string();
        let name = self.name_of(node);
        let asked = ids.iter().any(|&i| {
            let segment = paths[i][depth - 1];
            segment == index || Some(segment) == name
        });
        if !asked {
            self.nodes.truncate(node);
            if let Kind::Seq(items) = &mut self.nodes[*list].kind {
                *items.last_mut().expect("the item closed") = SKIPPED;
            }
        }
    }

    fn push(&mut self, at: At, kind: Kind) -> usize {
        self.nodes.push(Node { at, kind });
        self.nodes.len() - 1
    }

    /// Hangs `node` under the open collection (the first node is the root).
    fn attach(&mut self, stack: &mut [Frame], node: usize) {
        match stack.last_mut() {
            Some(Frame::Map { node: map, key, .. }) => {
                if let Some((k, at)) = key.take()
                    && let Kind::Map(entries) = &mut self.nodes[*map].kind
                {
                    entries.push((k, at, node));
                }
            }
            Some(Frame::Seq {
                node: seq, next, ..
            }) => {
                *next += 1;
                if let Kind::Seq(items) = &mut self.nodes[*seq].kind {
                    items.push(node);
                }
            }
            Some(Frame::Skip) | None => {}
        }
    }

    /// Where the entry at `path` is: the last key's own position (where
    /// `key:` starts), or a list item's. A list is entered by index
    /// (`"3"`) or by the item whose `name` is the segment (`rules.keep`).
    /// A path that goes further than the file (a missing key) stops at the
    /// deepest entry found; `None` only for an empty file.
    pub(crate) fn locate(&self, path: &[&str]) -> Option<At> {
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
                    Ok(i) => items.get(i).and_then(|&c| Some((self.nodes.get(c)?.at, c))),
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
        let Kind::Map(entries) = &self.nodes.get(node)?.kind else {
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

    /// `parse_for` answers each asked path as the whole tree does.
    #[test]
    fn positions_for_some_paths_are_those_of_the_whole_tree() {
        let text = "\
providers:
  a: { kind: x, secret: s1 }
  b:
    kind: y
    secret: s2
  a: { kind: z, secret: s3 }
accounts:
  - { name: alice, token: t1, tags: [x, y] }
  - name: bob
    token: t2
  - [nested, list]
  - just a scalar
  - { name: carol, token: t3, name: dave }
  - { name: alice, token: t4 }
rules:
  - name: keep
    check: { every: 1m }
";
        let asked: Vec<Vec<&str>> = vec![
            vec!["providers", "a", "secret"],
            vec!["providers", "b", "secret"],
            vec!["providers", "b"],
            vec!["providers", "c", "secret"],
            vec!["accounts", "alice", "token"],
            vec!["accounts", "bob", "token"],
            vec!["accounts", "bob", "missing", "deeper"],
            vec!["accounts", "dave", "token"],
            vec!["accounts", "carol"],
            vec!["accounts", "2", "1"],
            vec!["accounts", "3"],
            vec!["accounts", "0", "tags", "1"],
            vec!["accounts", "9"],
            vec!["rules", "keep", "check", "every"],
            vec!["rules", "0", "name"],
            vec!["nothing", "here"],
            vec![],
        ];
        let whole = Spans::parse(text);
        for (i, path) in asked.iter().enumerate() {
            let some = Spans::parse_for(text, &asked[i..=i]);
            assert_eq!(some.locate(path), whole.locate(path), "{path:?} alone");
        }
        let some = Spans::parse_for(text, &asked);
        for path in &asked {
            assert_eq!(some.locate(path), whole.locate(path), "{path:?}");
        }
        assert!(some.nodes.len() < whole.nodes.len());
    }

    #[test]
    fn a_long_list_keeps_only_the_items_asked_for() {
        let mut text = String::from("accounts:\n");
        for i in 0..5000 {
            text.push_str(&format!("  - {{ name: a{i}, token: t{i}, tags: [x] }}\n"));
        }
        let asked = vec![vec!["accounts", "a4321", "token"]];
        let some = Spans::parse_for(&text, &asked);
        assert_eq!(some.locate(&asked[0]), Some((4323, 20)));
        assert_eq!(
            some.locate(&asked[0]),
            Spans::parse(&text).locate(&asked[0])
        );
        assert!(some.nodes.len() < 10, "{} nodes kept", some.nodes.len());
    }
}
