//! The README's Quick start, run as written against a real server: the code below is the
//! README's, word for word but for the server's address (the test checks that), so the
//! first thing a newcomer copies is known to work.

use crate::support::RedisServer;

/// The README's Quick start, with the URL a parameter.
// README: begin
fn quick_start(url: &str) -> Result<(), redis_mutex::Error> {
    use redis_mutex::{Pool, RedisMutex};
    use std::time::Duration;

    let pool = Pool::new(url)?;
    let mutex = RedisMutex::builder(pool, "nightly-report")
        .expire(Duration::from_secs(30)) // a crashed holder frees it after 30 s...
        .auto_renewal(true) // ...a live one keeps it as long as it needs
        .build()?;

    let guard = mutex.lock()?;
    // ... only one thread of the whole fleet runs this at a time ...
    guard.ensure_held()?; // before each step that must not run twice
    guard.unlock()?; // or just drop the guard
    Ok(())
}
// README: end

/// The statements of a block of Rust code, trimmed, without blank lines and without the
/// lines that only frame them (`fn`, closing braces and the `// README` markers).
fn statements(code: &str) -> Vec<String> {
    code.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("fn ") && !l.starts_with("// README") && *l != "}"
        })
        .map(|l| l.replace("Pool::new(url)", "Pool::new(\"redis://127.0.0.1:6379/\")"))
        .collect()
}

#[test]
fn the_quick_start_is_the_readmes_and_runs() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let block = &readme[start..];
    let code_start = block.find("```rust").expect("a rust block");
    let code = &block[code_start..];
    let code = &code[code.find('\n').unwrap() + 1..];
    let code = &code[..code.find("```").unwrap()];
    let this = include_str!("readme.rs");
    let ours = &this[this.find("// README: begin").unwrap()..this.find("// README: end").unwrap()];
    assert_eq!(
        statements(ours),
        statements(code),
        "tests/readme.rs no longer runs the README's Quick start: make them the same"
    );

    let server = RedisServer::start();
    quick_start(&server.url()).expect("the Quick start runs");
}
