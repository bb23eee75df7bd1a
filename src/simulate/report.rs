//! What `vipd test` prints, and the JUnit XML it writes for CI systems.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::expect::Failure;
use super::file::Loaded;
use super::world::World;
use crate::units::HumanDuration;

/// How many of an account's latest orders a failure shows the story of.
const TRACES: usize = 3;

/// One test's result.
#[derive(Debug)]
pub struct Outcome {
    pub file: PathBuf,
    pub name: String,
    pub failures: Vec<Reported>,
    /// The ledger at the end.
    pub orders: Vec<crate::ledger::Order>,
    /// Simulated time the test ran.
    pub simulated: Duration,
    /// Wall time it took.
    pub wall: Duration,
}

/// A failure, where in the file it was checked, and the stories of the
/// orders concerned.
#[derive(Debug)]
pub struct Reported {
    /// `file:line:col` of the step or `expect:`.
    pub at: String,
    pub failure: Failure,
    /// The traces of the account's latest orders, as text.
    pub traces: String,
}

impl Reported {
    /// `f`, found at `at`, with the traces of its account's latest orders.
    pub async fn of(world: &World, at: String, f: Failure) -> Reported {
        let mut traces = String::new();
        if let Some(account) = &f.account {
            match crate::engine::trace::account(&*world.store, account, TRACES).await {
                Ok(list) => {
                    for t in list {
                        traces.push_str(&t.render());
                    }
                }
                Err(e) => traces = format!("(its orders could not be read: {e})\n"),
            }
        }
        Reported {
            at,
            failure: f,
            traces,
        }
    }

    /// A test that could not be set up or run to its end.
    pub fn setup(loaded: &Loaded, i: usize, why: String) -> Reported {
        Reported {
            at: loaded.where_is(&["tests", &i.to_string()]),
            failure: Failure {
                expected: "the test to run".into(),
                actual: why,
                account: None,
            },
            traces: String::new(),
        }
    }

    /// The failure in one line.
    pub fn line(&self) -> String {
        format!(
            "{}: expected {}; got {}",
            self.at, self.failure.expected, self.failure.actual
        )
    }
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report of this test: one line if it passed; each failure with
    /// the stories of the orders concerned if not.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}  {}: {} ({} simulated in {:.2} s)\n",
            if self.passed() { "ok  " } else { "FAIL" },
            self.file.display(),
            self.name,
            HumanDuration(self.simulated),
            self.wall.as_secs_f64()
        );
        for r in &self.failures {
            let _ = writeln!(out, "  {}", r.line());
            for line in r.traces.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
        out
    }
}

/// The outcomes as JUnit XML: a suite per file, a case per test.
pub fn junit(outcomes: &[Outcome]) -> String {
    let mut files: Vec<&PathBuf> = outcomes.iter().map(|o| &o.file).collect();
    files.dedup();
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"vipd test\">\n",
    );
    for file in files {
        let cases: Vec<&Outcome> = outcomes.iter().filter(|o| o.file == *file).collect();
        let failed = cases.iter().filter(|o| !o.passed()).count();
        let time: f64 = cases.iter().map(|o| o.wall.as_secs_f64()).sum();
        let suite = xml(&file.display().to_string());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failed}\" time=\"{time:.3}\">",
            cases.len()
        );
        for o in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{suite}\" name=\"{}\" time=\"{:.3}\"",
                xml(&o.name),
                o.wall.as_secs_f64()
            );
            if o.passed() {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            for r in &o.failures {
                let _ = writeln!(
                    out,
                    "      <failure message=\"{}\">{}</failure>",
                    xml(&r.line()),
                    xml(&r.traces)
                );
            }
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Text escaped for XML attributes and content; characters XML 1.0 cannot
/// hold are dropped.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(file: &str, name: &str, failed: bool) -> Outcome {
        Outcome {
            file: file.into(),
            name: name.into(),
            failures: if failed {
                vec![Reported {
                    at: format!("{file}:3:5"),
                    failure: Failure {
                        expected: "1 orders of <alice>".into(),
                        actual: "0 & \"none\"".into(),
                        account: None,
                    },
                    traces: "order k\u{1}\n".into(),
                }]
            } else {
                vec![]
            },
            orders: vec![],
            simulated: Duration::from_secs(86_400),
            wall: Duration::from_millis(120),
        }
    }

    /// A suite per file, a case per test, a failure's message and traces
    /// escaped; nothing XML cannot hold.
    #[test]
    fn junit_has_a_suite_per_file_and_escapes_what_it_quotes() {
        let x = junit(&[
            outcome("a.test.yaml", "one", false),
            outcome("a.test.yaml", "two", true),
            outcome("b.test.yaml", "three", false),
        ]);
        assert_eq!(x.matches("<testsuite ").count(), 2, "{x}");
        assert_eq!(x.matches("<testcase ").count(), 3, "{x}");
        assert!(
            x.contains("name=\"a.test.yaml\" tests=\"2\" failures=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("message=\"a.test.yaml:3:5: expected 1 orders of &lt;alice&gt;; got 0 &amp; &quot;none&quot;\""),
            "{x}"
        );
        assert!(!x.contains('\u{1}'), "{x}");
    }
}
