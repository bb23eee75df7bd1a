//! Lua pattern matching with a bound on its work.
//!
//! `string.find`, `match`, `gmatch` and `gsub` run Lua's backtracking
//! matcher in C, where the instruction hook never fires: one call such as
//! `("a"):rep(60000):find(".-.-.-b")` runs for hours, past every plugin
//! limit. Before each call the sandbox's wrappers estimate the matcher's
//! worst-case work on this subject and pattern, and refuse (a catchable
//! Lua error naming the pattern) when it is above [`MAX_WORK`].
//!
//! The estimate follows the matcher's algorithm (`lstrlib.c`): per start
//! position, a single item costs 1; a greedy `*`/`+` expands over up to `n`
//! bytes and then retries the rest of the pattern at each length; a lazy
//! `-` retries the rest before each step; `?` tries the rest twice; `%b`
//! and back-references scan up to `n`. A quantifier whose rest cannot fail
//! (nothing after it, or only `*`, `-` and `?` items) never backtracks:
//! its expansion ends in a match, and matches do not overlap, so its cost
//! is counted once for the whole call, not per start. Unanchored patterns
//! are tried at up to `n + 1` starts. The figure is an upper bound, within
//! a small factor of the true worst case for the patterns plugins write;
//! common idioms on callback-sized strings (`%s+`, `^%d+$`, `([^&]+)=`,
//! `^%s*(.-)%s*$` on a few hundred bytes) stay far below the limit.

use mlua::{Function, Lua, Table, Value};

/// The most matcher steps one pattern call may need in the worst case.
/// At 1.3-2.9 ns a step here (BENCHMARKS.md), a call at the limit ends
/// within 0.3 s, well inside the default 5 s handler timeout.
pub(crate) const MAX_WORK: u64 = 100_000_000;

/// Which string function is about to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `string.find`: the fourth argument may ask for a plain search.
    Find,
    /// `string.match`.
    Match,
    /// `string.gmatch`: the whole iteration is counted at creation.
    Gmatch,
    /// `string.gsub`.
    Gsub,
}

impl Op {
    /// The Lua name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Find => "string.find",
            Op::Match => "string.match",
            Op::Gmatch => "string.gmatch",
            Op::Gsub => "string.gsub",
        }
    }
}

/// One pattern item, as the matcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// A single-character class (`a`, `.`, `%d`, `[...]`): where it is
    /// in the pattern, and its quantifier byte if any.
    Single {
        class: (usize, usize),
        quantifier: Option<u8>,
    },
    /// `%bxy` or a back-reference `%1`: scans up to `n` bytes.
    Scan,
    /// `%f[set]`: one test.
    Frontier,
    /// `$` at the end: one test, true at the subject's end.
    End,
}

/// A set of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Set([u64; 4]);

impl Set {
    const ALL: Set = Set([u64::MAX; 4]);

    fn of(f: impl Fn(u8) -> bool) -> Set {
        let mut s = Set([0; 4]);
        for b in 0..=255u8 {
            if f(b) {
                s.0[usize::from(b >> 6)] |= 1 << (b & 63);
            }
        }
        s
    }

    fn union(self, other: Set) -> Set {
        Set(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    fn complement(self) -> Set {
        Set(self.0.map(|w| !w))
    }

    fn disjoint(self, other: Set) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| a & b == 0)
    }
}

/// The bytes `%c` matches (C locale, as `lstrlib.c`'s `match_class`).
fn class_set(c: u8) -> Set {
    let f: fn(u8) -> bool = match c.to_ascii_lowercase() {
        b'a' => |b| b.is_ascii_alphabetic(),
        b'c' => |b| b.is_ascii_control(),
        b'd' => |b| b.is_ascii_digit(),
        b'g' => |b| b.is_ascii_graphic(),
        b'l' => |b| b.is_ascii_lowercase(),
        b'p' => |b| b.is_ascii_punctuation(),
        // C's isspace has \v, which Rust's is_ascii_whitespace has not.
        b's' => |b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => |b| b.is_ascii_uppercase(),
        b'w' => |b| b.is_ascii_alphanumeric(),
        b'x' => |b| b.is_ascii_hexdigit(),
        _ => return Set::of(|b| b == c),
    };
    let set = Set::of(f);
    if c.is_ascii_uppercase() {
        set.complement()
    } else {
        set
    }
}

/// The bytes the class `p[i..end]` matches.
fn set_of(p: &[u8], (i, end): (usize, usize)) -> Set {
    match p[i] {
        b'.' => Set::ALL,
        b'%' => p.get(i + 1).map_or(Set::ALL, |&c| class_set(c)),
        b'[' => {
            let body = &p[i + 1..end.saturating_sub(1).max(i + 1)];
            let (negate, body) = match body.split_first() {
                Some((b'^', rest)) => (true, rest),
                _ => (false, body),
            };
            let mut set = Set([0; 4]);
            let mut j = 0;
            while j < body.len() {
                let c = body[j];
                if c == b'%' && j + 1 < body.len() {
                    set = set.union(class_set(body[j + 1]));
                    j += 2;
                } else if body.get(j + 1) == Some(&b'-') && j + 2 < body.len() {
                    let hi = body[j + 2];
                    set = set.union(Set::of(|b| (c..=hi).contains(&b)));
                    j += 3;
                } else {
                    set = set.union(Set::of(|b| b == c));
                    j += 1;
                }
            }
            if negate { set.complement() } else { set }
        }
        c => Set::of(|b| b == c),
    }
}

/// The worst-case matcher steps of `op` with `pattern` on a subject of
/// `n` bytes. `plain` is `find`'s fourth argument.
pub fn work(op: Op, n: usize, pattern: &[u8], plain: bool) -> u64 {
    let n = n as u64;
    let m = pattern.len() as u64;
    if op == Op::Find && (plain || !pattern.iter().any(|b| SPECIALS.contains(b))) {
        // A plain search: a naive substring scan.
        return n.saturating_add(1).saturating_mul(m.max(1));
    }
    let (anchored, items) = items(pattern);
    let starts = if anchored { 1 } else { n.saturating_add(1) };
    let mut once = 0u64; // expansions counted once per call
    let mut per_start = 1u64; // the empty rest: a match
    let mut rest_can_fail = false;
    // Whether the rest matches at the subject's end (only optional items).
    let mut rest_ends_ok = true;
    // The bytes the rest's first item accepts, when it is a single
    // unquantified class.
    let mut rest_first: Option<(usize, usize)> = None;
    for item in items.iter().rev() {
        let ends_ok = rest_ends_ok
            && match *item {
                Item::Single { quantifier, .. } => matches!(quantifier, Some(b'*' | b'-' | b'?')),
                Item::End => true,
                Item::Scan | Item::Frontier => false,
            };
        let first = match *item {
            Item::Single {
                class,
                quantifier: None,
            } => Some(class),
            _ => None,
        };
        (per_start, rest_can_fail) = match *item {
            // `.*` or `.-` before a rest that matches at the end cannot
            // fail: it reaches the end if it must. Its match ends where
            // its scan stops, so scans do not overlap: counted once.
            Item::Single {
                class: (i, _),
                quantifier: Some(q @ (b'*' | b'-')),
            } if rest_can_fail && rest_ends_ok && pattern[i] == b'.' => {
                let scan = if q == b'*' {
                    n.saturating_add(per_start)
                } else {
                    n.saturating_add(1)
                        .saturating_mul(per_start.saturating_add(1))
                };
                once = once.saturating_add(scan);
                (1, false)
            }
            Item::Single { quantifier, .. } => match quantifier {
                None => (per_start.saturating_add(1), true),
                Some(b'?') if rest_can_fail => {
                    (per_start.saturating_mul(2).saturating_add(1), true)
                }
                Some(b'?') => (per_start.saturating_add(1), false),
                // Matches the rest at once: no backtracking.
                Some(b'-') if !rest_can_fail => (per_start.saturating_add(1), false),
                Some(q) if !rest_can_fail => {
                    // Expands, then matches at once: no backtracking.
                    once = once.saturating_add(n);
                    (per_start.saturating_add(1), q == b'+')
                }
                // The rest starts with a byte this class never matches: the
                // rest can only match where the expansion stops, and every
                // other try fails on its first byte.
                Some(q)
                    if rest_first.is_some_and(|next| {
                        matches!(*item, Item::Single { class, .. }
                            if set_of(pattern, class).disjoint(set_of(pattern, next)))
                    }) =>
                {
                    let cost = n.saturating_mul(2).saturating_add(per_start);
                    (cost, q == b'+' || rest_can_fail)
                }
                Some(b'-') => {
                    // Tries the rest before each step of its own.
                    let tries = n.saturating_add(1);
                    (tries.saturating_mul(per_start.saturating_add(1)), true)
                }
                Some(q) => {
                    // `*` or `+`: count, then retry the rest at each length.
                    let tries = n.saturating_add(1);
                    let cost = n.saturating_add(tries.saturating_mul(per_start));
                    (cost, q == b'+' || rest_can_fail)
                }
            },
            Item::Scan => (per_start.saturating_add(n), true),
            Item::Frontier | Item::End => (per_start.saturating_add(1), true),
        };
        rest_ends_ok = ends_ok;
        rest_first = first;
    }
    starts.saturating_mul(per_start).saturating_add(once)
}

/// Bytes that make a pattern more than a plain string (`lstrlib.c`).
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Whether the pattern starts with `^`, and its items in order. Never
/// fails: a malformed pattern yields what was read so far (the matcher
/// then reports it itself).
fn items(p: &[u8]) -> (bool, Vec<Item>) {
    let anchored = p.first() == Some(&b'^');
    let mut i = usize::from(anchored);
    let mut out = Vec::new();
    while i < p.len() {
        match p[i] {
            b'(' | b')' => i += 1,
            b'$' if i + 1 == p.len() => {
                out.push(Item::End);
                i += 1;
            }
            b'%' if matches!(p.get(i + 1), Some(b'b')) => {
                out.push(Item::Scan);
                i += 4;
            }
            b'%' if matches!(p.get(i + 1), Some(b'f')) => {
                out.push(Item::Frontier);
                i = class_end(p, i + 2);
            }
            b'%' if p.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push(Item::Scan);
                i += 2;
            }
            _ => {
                let end = class_end(p, i);
                let quantifier = p
                    .get(end)
                    .copied()
                    .filter(|q| matches!(q, b'?' | b'*' | b'+' | b'-'));
                out.push(Item::Single {
                    class: (i, end),
                    quantifier,
                });
                i = end + usize::from(quantifier.is_some());
            }
        }
    }
    (anchored, out)
}

/// Where the single-character class starting at `i` ends.
fn class_end(p: &[u8], i: usize) -> usize {
    match p.get(i) {
        Some(b'%') => i + 2,
        Some(b'[') => {
            let mut j = i + 1;
            if p.get(j) == Some(&b'^') {
                j += 1;
            }
            // The first byte of a set is literal, even `]`.
            loop {
                match p.get(j) {
                    None => return p.len(),
                    Some(b'%') => j += 2,
                    Some(b']') if j > i + 1 && !(j == i + 2 && p[i + 1] == b'^') => {
                        return j + 1;
                    }
                    Some(_) => j += 1,
                }
            }
        }
        _ => i + 1,
    }
    .min(p.len().max(i + 1))
}

/// The refusal message for `op` with `pattern` on `n` bytes, or `None`
/// when the call may run.
pub fn refusal(op: Op, n: usize, pattern: &[u8], plain: bool) -> Option<String> {
    let w = work(op, n, pattern, plain);
    (w > MAX_WORK).then(|| {
        let shown: String = String::from_utf8_lossy(pattern).chars().take(60).collect();
        format!(
            "{}: pattern {shown:?} on a {n}-byte string could take {w:.2e} matcher steps \
             (the limit is {MAX_WORK:.0e}); anchor it with ^, bound the input, or search \
             for plain text",
            op.name(),
            w = w as f64,
            MAX_WORK = MAX_WORK as f64,
        )
    })
}

/// Replaces `find`, `match`, `gmatch` and `gsub` in the state's `string`
/// table (which is also what `("x"):find()` reaches) with wrappers that
/// refuse a call whose worst-case matcher work is past the limit
/// (see the module's comment): the C matcher runs where no hook can stop it. The
/// refusal is a plain string error at the caller's line, as the library's
/// own errors are.
pub fn install(lua: &Lua, string: &Table) -> mlua::Result<()> {
    const OPS: [Op; 4] = [Op::Find, Op::Match, Op::Gmatch, Op::Gsub];
    let check = lua.create_function(
        |_, (op, subject, pattern, plain): (usize, Value, Value, Value)| {
            let (Some(&op), Value::String(pattern)) = (OPS.get(op), &pattern) else {
                // Not a string pattern: the library's own error follows.
                return Ok(None);
            };
            let n = match &subject {
                Value::String(s) => s.as_bytes().len(),
                // A number becomes a string of a few dozen bytes at most.
                _ => 64,
            };
            let plain = op == Op::Find && !matches!(plain, Value::Nil | Value::Boolean(false));
            Ok(refusal(op, n, &pattern.as_bytes(), plain))
        },
    )?;
    lua.load(
        r#"
local string, check, error = ...
for op, name in ipairs({ "find", "match", "gmatch", "gsub" }) do
  local f = string[name]
  string[name] = function(s, p, a, b)
    local why = check(op - 1, s, p, b)
    if why then error(why, 2) end
    return f(s, p, a, b)
  end
end
"#,
    )
    .set_name("=vipd")
    .call::<()>((
        string.clone(),
        check,
        lua.globals().get::<Function>("error")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(op: Op, n: usize, p: &str) -> u64 {
        work(op, n, p.as_bytes(), false)
    }

    #[test]
    fn everyday_patterns_are_linear() {
        let n = 64 << 10;
        for (op, p) in [
            (Op::Gsub, "%s+"),
            (Op::Gsub, "^%s+"),
            (Op::Match, "^%d+$"),
            (Op::Match, "^(%w+)=(%w*)$"),
            (Op::Find, "needle"),
            (Op::Gmatch, "%a+"),
            (Op::Gmatch, "[^,]+"),
            (Op::Gsub, "x"),
            (Op::Match, "^%s*(.*)"),
        ] {
            let work = w(op, n, p);
            assert!(work <= 8 * (n as u64 + 1), "{p}: {work}");
        }
    }

    #[test]
    fn backtracking_is_polynomial_in_its_quantifiers() {
        // `a*b` on "aaaa…": every start expands to the end and retries.
        let n = 1000u64;
        assert!(w(Op::Find, 1000, "a*b") >= n * n);
        assert!(w(Op::Find, 1000, ".-.-b") >= n * n * n);
        assert!(w(Op::Match, 1000, "^a*b") <= 4 * n);
        // A greedy class followed by a byte it never matches backtracks
        // only once; unanchored, each start still scans.
        assert!(w(Op::Match, 1000, "^%w+=") <= 4 * n);
        assert!(w(Op::Gmatch, 1000, "%w+=") >= n * n);
        assert!(w(Op::Match, 1000, "^[^=]+=") <= 4 * n);
        assert!(w(Op::Gmatch, 1000, "[^&]+=") >= n * n);
        // `?` doubles the work of what follows when that can fail.
        assert!(w(Op::Match, 40, &("a?".repeat(30) + &"a".repeat(30))) >= 1 << 30);
    }

    #[test]
    fn refusals_name_the_call_and_the_pattern() {
        assert_eq!(refusal(Op::Find, 100, b".-.-b", false), None);
        let e = refusal(Op::Find, 60_000, b".-.-b", false).unwrap();
        assert!(
            e.starts_with("string.find: pattern \".-.-b\" on a 60000-byte"),
            "{e}"
        );
        // Plain searches are a substring scan.
        assert_eq!(refusal(Op::Find, 60_000, b".-.-b", true), None);
        // Common idioms on callback-sized text pass.
        assert_eq!(refusal(Op::Match, 500, b"^%s*(.-)%s*$", false), None);
        assert_eq!(refusal(Op::Gmatch, 4096, b"([^&]+)=([^&]*)", false), None);
    }

    /// The byte sets agree with Lua's own matcher on every byte.
    #[test]
    fn class_sets_agree_with_lua() {
        let lua = mlua::Lua::new();
        let matches: mlua::Function = lua
            .load("local b, class = ...; return string.find(string.char(b), '^' .. class .. '$') ~= nil")
            .into_function()
            .unwrap();
        let classes = [
            ".", "a", "%a", "%A", "%c", "%d", "%D", "%g", "%l", "%p", "%s", "%S", "%u", "%w", "%x",
            "%%", "%.", "[abc]", "[^abc]", "[a-f]", "[^%s%d]", "[]]", "[^]]", "[a-]", "[%a_-]",
            "[-a]", "[%]]",
        ];
        for class in classes {
            let (_, items) = items(class.as_bytes());
            let [
                Item::Single {
                    class: range,
                    quantifier: None,
                },
            ] = items[..]
            else {
                panic!("{class}: {items:?}")
            };
            let set = set_of(class.as_bytes(), range);
            for b in 0..=255u8 {
                let lua_says: bool = matches.call((b, class)).unwrap();
                assert_eq!(
                    set.disjoint(Set::of(|x| x == b)),
                    !lua_says,
                    "{class} on byte {b}"
                );
            }
        }
    }

    #[test]
    fn malformed_patterns_are_estimated_not_refused_here() {
        for p in ["%", "[", "[^", "[]", "%b", "%f", "(", "((", "a%"] {
            let _ = work(Op::Match, 10, p.as_bytes(), false);
        }
    }
}
