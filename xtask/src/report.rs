//! Reading the results that dom0 prints on the console, and the summary.
//!
//! dom0's `/init` prints one line per result (the marker may follow other console output on
//! the same line, so it is searched for anywhere in the line):
//! `E2E-CHECK <name> PASS|FAIL|SKIP <detail>`, `E2E-TEST <binary>::<test> PASS|FAIL|SKIP
//! <detail>`, `E2E-METRIC <name> <value> <unit>`, `E2E-XSBENCH <xenstored> <test-xenstore line>`,
//! `E2E-DONE`.
//!
//! A test reports SKIP (by printing `E2E-SKIP <reason>` and returning) when something it needs is
//! missing. Only the names the report was given as allowed may skip; any other skip counts as
//! a failure, so a test that must run cannot pass by not running.

use std::fmt::Write;

/// How a check or test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and passed.
    Pass,
    /// It failed, or skipped without being allowed to.
    Fail,
    /// It did not run (allowed): something it needs is missing; the detail says what.
    Skip,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`test:` prefix for a Rust test).
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Evidence (for a skip: the reason).
    pub detail: String,
}

/// A measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: String,
    /// Its unit.
    pub unit: String,
}

/// Everything read from a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks and tests, in order.
    pub checks: Vec<Check>,
    /// Peer measurements.
    pub metrics: Vec<Metric>,
    /// `(xenstored, line)` from test-xenstore.
    pub xsbench: Vec<(String, String)>,
    /// Whether dom0 reported that it got to the end.
    pub done: bool,
    /// Names (as in [`Check::name`]) that may skip; every other skip is a failure.
    pub allowed_skips: Vec<String>,
}

fn rest_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

fn parse_result(rest: &str) -> Option<(String, Outcome, String)> {
    let mut it = rest.splitn(3, ' ');
    let name = it.next()?.to_string();
    let outcome = match it.next()? {
        "PASS" => Outcome::Pass,
        "FAIL" => Outcome::Fail,
        "SKIP" => Outcome::Skip,
        _ => return None,
    };
    Some((name, outcome, it.next().unwrap_or("").trim().to_string()))
}

impl Report {
    /// An empty report in which only `allowed_skips` may skip.
    pub fn new(allowed_skips: Vec<String>) -> Self {
        Self {
            allowed_skips,
            ..Self::default()
        }
    }

    /// Records a result; a skip not in [`Report::allowed_skips`] becomes a failure.
    fn push(&mut self, name: String, outcome: Outcome, detail: String) {
        let check = if outcome == Outcome::Skip && !self.allowed_skips.contains(&name) {
            Check {
                name,
                outcome: Outcome::Fail,
                detail: format!("skipped, but must run (not allowed to skip): {detail}"),
            }
        } else {
            Check {
                name,
                outcome,
                detail,
            }
        };
        self.checks.push(check);
    }

    /// Takes in one console line.
    pub fn feed(&mut self, line: &str) {
        if let Some(rest) = rest_after(line, "E2E-CHECK ") {
            if let Some((name, outcome, detail)) = parse_result(rest) {
                self.push(name, outcome, detail);
            }
        } else if let Some(rest) = rest_after(line, "E2E-TEST ") {
            if let Some((name, outcome, detail)) = parse_result(rest) {
                self.push(format!("test:{name}"), outcome, detail);
            }
        } else if let Some(rest) = rest_after(line, "E2E-METRIC ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(value)) = (it.next(), it.next()) {
                let unit = it.collect::<Vec<_>>().join(" ");
                self.metrics.push(Metric {
                    name: name.into(),
                    value: value.into(),
                    unit,
                });
            }
        } else if let Some(rest) = rest_after(line, "E2E-XSBENCH ") {
            let (who, text) = rest.split_once(' ').unwrap_or((rest, ""));
            self.xsbench.push((who.to_string(), text.to_string()));
        } else if line.contains("E2E-DONE") {
            self.done = true;
        }
    }

    /// Adds a result found on the host side.
    pub fn add(&mut self, name: &str, pass: bool, detail: impl Into<String>) {
        let outcome = if pass { Outcome::Pass } else { Outcome::Fail };
        self.push(name.into(), outcome, detail.into());
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// Number of passed results.
    pub fn passed(&self) -> usize {
        self.count(Outcome::Pass)
    }

    /// Number of failed results (skips that were not allowed among them).
    pub fn failed(&self) -> usize {
        self.count(Outcome::Fail)
    }

    /// Number of allowed skips.
    pub fn skipped(&self) -> usize {
        self.count(Outcome::Skip)
    }

    /// Whether the run succeeded: something ran, nothing failed, dom0 got to the end.
    pub fn success(&self) -> bool {
        self.failed() == 0 && self.passed() > 0 && self.done
    }

    /// The closing summary: results, measurements, and the `e2e: N passed, M failed, K skipped`
    /// line.
    pub fn summary(&self) -> String {
        let mut s = String::from("\n==== e2e results ====\n");
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(s, "{} {:width$}  {}", c.outcome.label(), c.name, c.detail);
        }
        if !self.metrics.is_empty() {
            s.push_str("\n==== peer measurements (same boot) ====\n");
            let width = self
                .metrics
                .iter()
                .map(|m| m.name.len())
                .max()
                .unwrap_or(0)
                .max(6);
            let _ = writeln!(s, "| {:width$} | {:>10} | unit |", "metric", "value");
            for m in &self.metrics {
                let _ = writeln!(s, "| {:width$} | {:>10} | {} |", m.name, m.value, m.unit);
            }
        }
        if !self.xsbench.is_empty() {
            s.push_str("\n==== test-xenstore ====\n");
            s.push_str(&xsbench_table(&self.xsbench));
        }
        let _ = writeln!(
            s,
            "\ne2e: {} passed, {} failed, {} skipped",
            self.passed(),
            self.failed(),
            self.skipped()
        );
        s
    }
}

/// The average in a test-xenstore result line (`read 1    : avg: 1652476 ns (... .. ...)`).
pub fn parse_xsbench(line: &str) -> Option<(String, u64)> {
    let (name, rest) = line.split_once(": avg:")?;
    let ns = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.trim().to_string(), ns))
}

/// Lays test-xenstore's averages side by side, one column per xenstored, with the ratio of the
/// second to the first when there are two. Lines that are not results are listed as they are.
fn xsbench_table(lines: &[(String, String)]) -> String {
    let mut daemons: Vec<&str> = Vec::new();
    let mut tests: Vec<String> = Vec::new();
    let mut other = String::new();
    for (d, l) in lines {
        if !daemons.contains(&d.as_str()) {
            daemons.push(d);
        }
        match parse_xsbench(l) {
            Some((t, _)) if !tests.contains(&t) => tests.push(t),
            Some(_) => {}
            None => {
                let _ = writeln!(other, "   [{d}] {l}");
            }
        }
    }
    let avg = |d: &str, t: &str| {
        lines
            .iter()
            .filter(|(w, _)| w == d)
            .filter_map(|(_, l)| parse_xsbench(l))
            .find(|(n, _)| n == t)
            .map(|(_, ns)| ns)
    };
    let mut s = String::from("| test-xenstore (avg per op) |");
    for d in &daemons {
        let _ = write!(s, " {d} (us) |");
    }
    if daemons.len() == 2 {
        let _ = write!(s, " {}/{} |", daemons[1], daemons[0]);
    }
    s.push('\n');
    for t in &tests {
        let _ = write!(s, "| {t:26} |");
        let vals: Vec<Option<u64>> = daemons.iter().map(|d| avg(d, t)).collect();
        for v in &vals {
            match v {
                Some(ns) => {
                    let _ = write!(s, " {:>9.1} |", *ns as f64 / 1000.0);
                }
                None => s.push_str("         - |"),
            }
        }
        if let [Some(a), Some(b)] = vals[..] {
            let _ = write!(s, " {:>6.2} |", b as f64 / a.max(1) as f64);
        }
        s.push('\n');
    }
    s + &other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read_anywhere_in_a_line() {
        let mut r = Report::default();
        r.feed("E2E-CHECK xl-info PASS xen_version : 4.17.7");
        r.feed(
            "[   12.3] random kernel text E2E-TEST xtask-real_xen::xc_version_is_4_17 FAIL rc=101",
        );
        r.feed("E2E-METRIC xl-create-to-first-console-line 5120 ms");
        r.feed("E2E-XSBENCH c read 1 byte: 120 us");
        r.feed("E2E-CHECK malformed MAYBE x");
        r.feed("E2E-RUN x::y");
        assert!(!r.done);
        r.feed("E2E-DONE uptime=50.2");
        assert!(r.done);
        assert_eq!(r.checks.len(), 2);
        assert_eq!(
            r.checks[0],
            Check {
                name: "xl-info".into(),
                outcome: Outcome::Pass,
                detail: "xen_version : 4.17.7".into()
            }
        );
        assert_eq!(r.checks[1].name, "test:xtask-real_xen::xc_version_is_4_17");
        assert_eq!(r.checks[1].outcome, Outcome::Fail);
        assert_eq!(
            r.metrics[0],
            Metric {
                name: "xl-create-to-first-console-line".into(),
                value: "5120".into(),
                unit: "ms".into()
            }
        );
        assert_eq!(
            r.xsbench[0],
            ("c".to_string(), "read 1 byte: 120 us".to_string())
        );
        assert_eq!((r.passed(), r.failed()), (1, 1));
        assert!(!r.success());
    }

    #[test]
    fn test_xenstore_averages_are_compared_side_by_side() {
        assert_eq!(
            parse_xsbench("read 1    : avg: 1652476 ns (546174 ns .. 14163942 ns)"),
            Some(("read 1".to_string(), 1652476))
        );
        assert_eq!(parse_xsbench("usage: test-xenstore"), None);
        let lines: Vec<(String, String)> = [
            ("c", "read 1    : avg: 2000 ns (1 ns .. 3 ns)"),
            ("c", "ta err    : avg: 8000 ns (1 ns .. 3 ns)"),
            ("ours", "read 1    : avg: 1000 ns (1 ns .. 3 ns)"),
            ("ours", "connection refused"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let t = xsbench_table(&lines);
        assert!(t.contains("| c (us) | ours (us) | ours/c |"), "{t}");
        assert!(
            t.contains("| read 1                     |       2.0 |       1.0 |   0.50 |"),
            "{t}"
        );
        assert!(
            t.contains("| ta err                     |       8.0 |         - |"),
            "{t}"
        );
        assert!(t.contains("[ours] connection refused"), "{t}");
    }

    #[test]
    fn summary_ends_with_the_line_ci_reads() {
        let mut r = Report::default();
        r.add("build:x", true, "");
        r.feed("E2E-DONE");
        assert!(r.success());
        let s = r.summary();
        assert_eq!(s.lines().last(), Some("e2e: 1 passed, 0 failed, 0 skipped"));
        let mut none = Report::default();
        none.feed("E2E-DONE");
        assert!(!none.success(), "a run with no result is not a success");
    }

    #[test]
    fn only_allowed_tests_may_skip() {
        let pvh = "test:xenctrl-real_xen::pvh";
        let mut r = Report::new(vec![pvh.to_string()]);
        r.feed("E2E-TEST xenctrl-real_xen::pvh SKIP no HVM support on this host");
        r.feed("E2E-TEST xenctrl-real_xen::pv PASS");
        r.feed("E2E-CHECK guest-disk SKIP no loop device");
        r.feed("E2E-DONE");
        assert_eq!(r.checks[0].outcome, Outcome::Skip);
        assert_eq!(r.checks[0].detail, "no HVM support on this host");
        // A skip that was not allowed is a failure, with the reason kept.
        assert_eq!(r.checks[2].outcome, Outcome::Fail);
        assert!(r.checks[2].detail.contains("must run"), "{:?}", r.checks[2]);
        assert!(r.checks[2].detail.contains("no loop device"));
        assert_eq!((r.passed(), r.failed(), r.skipped()), (1, 1, 1));
        assert!(!r.success());
        let s = r.summary();
        assert!(s.contains("SKIP test:xenctrl-real_xen::pvh"), "{s}");
        assert_eq!(s.lines().last(), Some("e2e: 1 passed, 1 failed, 1 skipped"));

        let mut ok = Report::new(vec![pvh.to_string()]);
        ok.feed("E2E-TEST xenctrl-real_xen::pvh SKIP no HVM");
        ok.feed("E2E-TEST xenctrl-real_xen::pv PASS");
        ok.feed("E2E-DONE");
        assert!(ok.success(), "an allowed skip does not fail the run");
        let mut all_skipped = Report::new(vec![pvh.to_string()]);
        all_skipped.feed("E2E-TEST xenctrl-real_xen::pvh SKIP no HVM");
        all_skipped.feed("E2E-DONE");
        assert!(!all_skipped.success(), "nothing passed");
    }
}
