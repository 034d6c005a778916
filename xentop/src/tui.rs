//! The terminal view (to come).

use std::time::Duration;

use xentop::format::Options;
use xentop::Collector;

/// Runs the terminal view.
pub fn run(
    _collector: &Collector,
    _opts: Options,
    _delay: Duration,
    _iterations: Option<u32>,
) -> Result<(), String> {
    Err("the terminal view is not built yet; use -b".into())
}
