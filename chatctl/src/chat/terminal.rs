//! The terminal in TUI mode: raw mode and the alternate screen on, and restored on every way
//! out: normal return and errors (the guard's drop), panics (ratatui's panic hook, installed by
//! `ratatui::try_init`, restores before the message is printed), and SIGTERM/SIGHUP/SIGINT
//! (flags the loop checks, so it returns through the guard).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ratatui::crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use ratatui::crossterm::execute;
use ratatui::DefaultTerminal;

use crate::exit::Failure;

pub struct Screen {
    pub terminal: DefaultTerminal,
    stop: Arc<AtomicBool>,
}

impl Screen {
    pub fn open() -> Result<Screen, Failure> {
        let stop = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        let signals = [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGINT,
        ];
        #[cfg(not(unix))]
        let signals = [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT];
        for sig in signals {
            signal_hook::flag::register(sig, stop.clone())
                .map_err(|e| Failure::io("installing signal handlers", e))?;
        }
        let terminal =
            ratatui::try_init().map_err(|e| Failure::io("setting up the terminal", e))?;
        // A paste arrives as one event (its newlines stay in the input line, not sent one by
        // one as Enter presses would be).
        let _ = execute!(std::io::stdout(), EnableBracketedPaste);
        Ok(Screen { terminal, stop })
    }

    /// A signal asked us to end.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn bell(&mut self) {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x07").and_then(|_| out.flush());
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), DisableBracketedPaste);
        ratatui::restore();
    }
}
