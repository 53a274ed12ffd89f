//! Everything that differs between operating systems lives here: the control endpoint (a Unix
//! socket with file permissions, or a Windows named pipe) and its default path.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;
