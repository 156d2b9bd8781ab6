//! The integration tests: one binary, modules by topic. Every test starts its own servers
//! on free loopback ports (`support`) and stops them.

#[path = "../support/mod.rs"]
mod support;

mod faults;
mod kinds;
mod operations;
mod topology;
