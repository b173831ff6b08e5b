//! Progress of long commands (`sync`, `reconcile`, `match`, `audit verify`,
//! `audit export`): a bar or a counter on stderr when it is a terminal.
//! Otherwise nothing is drawn, so logs and pipes stay clean; only
//! [`Progress::note`] lines are written, as plain lines.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar (known length) or a counter (unknown), or nothing off a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `len` steps of `unit` (`None`: a counter of unknown length).
    pub fn new(len: Option<u64>, unit: &str) -> Progress {
        Progress::drawn_if(std::io::stderr().is_terminal(), len, unit)
    }

    fn drawn_if(terminal: bool, len: Option<u64>, unit: &str) -> Progress {
        let bar = terminal.then(|| {
            let (bar, template) = match len {
                Some(len) => (
                    ProgressBar::new(len),
                    format!("{{spinner}} [{{elapsed}}] {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}"),
                ),
                None => (
                    ProgressBar::no_length(),
                    format!("{{spinner}} [{{elapsed}}] {{pos}} {unit}  {{msg}}"),
                ),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    /// What is being done now (drawn beside the bar only).
    pub fn status(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// The position.
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    /// One more step done.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// A line worth keeping: above the bar on a terminal, else on stderr.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// The listings' progress (`engine::paging::Listed`): the records
    /// read so far, and by which operation.
    pub fn listed(&self) -> impl Fn(&'static str, u64) + Sync + '_ {
        move |operation, records| {
            self.set(records);
            self.status(operation);
        }
    }

    /// Done: the bar is cleared.
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A command that fails part-way leaves no bar behind its error.
        self.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_nothing_is_drawn() {
        let p = Progress::drawn_if(false, Some(10), "links");
        p.status("working");
        p.inc();
        assert!(p.bar.is_none());
        let p = Progress::drawn_if(true, None, "records");
        p.set(5);
        assert_eq!(p.bar.as_ref().map(ProgressBar::position), Some(5));
        (p.listed())("fetch-employees", 12);
        let bar = p.bar.as_ref().unwrap();
        assert_eq!(
            (bar.position(), bar.message().as_str()),
            (12, "fetch-employees")
        );
    }
}
