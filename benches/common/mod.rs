//! Running a bench's reference implementation as a child process.

use std::process::Command;

/// Runs `cmd` and parses the last line of its stdout as JSON; on any failure prints why
/// (naming `what` and `hint`) and returns `None`.
pub fn run_json(cmd: &mut Command, what: &str, hint: &str) -> Option<serde_json::Value> {
    match cmd.output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let line = text.lines().last().unwrap_or_default();
            let parsed = serde_json::from_str(line).ok();
            if parsed.is_none() {
                println!("{what} printed no JSON: {text}");
            }
            parsed
        }
        Ok(o) => {
            println!(
                "{what} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            println!("{what} not run ({e}); {hint}");
            None
        }
    }
}
