//! Progress bars for long work: on stderr, and hidden when stderr is not a terminal (CI, pipes).
//! One helper so every long step (generate, validate, backtest) looks and behaves the same.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: u64, msg: &'static str, unit: &str) -> ProgressBar {
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template(&format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed}}"))
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}
