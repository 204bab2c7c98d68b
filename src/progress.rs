//! The command line's progress display: one bar style for every long-running command.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` units named `unit` (`step`, `image`, …), with elapsed time, ETA and a
/// free-form message; `len` may be set later (`set_length`).
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {unit} {{pos}}/{{len}} [{{bar:30}}] {{elapsed_precise}} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// A spinner with a message, for work of unknown length.
pub fn spinner(message: impl Into<std::borrow::Cow<'static, str>>) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
