//! Shared helpers for the criterion benchmarks in `benches/benches/` and the
//! `xs-load` tool: same-run xenstored peers ([`cpeer`], [`echo`]), a small
//! independent wire codec ([`frame`]) and a load generator ([`load`]).

pub mod cpeer;
pub mod echo;
pub mod frame;
pub mod load;
