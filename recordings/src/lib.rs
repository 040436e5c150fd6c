//! contactd-recordings: the files behind call recordings.
//!
//! - [`wav`]: a stereo 8 kHz 16-bit WAV written as the call goes (left: caller, right:
//!   what the daemon sends), finished into its final name with its SHA-256
//! - [`layout`]: where a recording lives under the recordings directory
//!   (`YYYY/MM/DD/<id>.wav`, `.wav.part` while being written)
//! - [`repair`]: after a crash, an unfinished `.part` file is cut to its last whole
//!   frame, its header made to match, and finished like any other
//!
//! Metadata (expiry, legal hold, who listened) belongs to the daemon's store; this
//! crate only knows files.

pub mod layout;
pub mod repair;
pub mod wav;

pub use layout::RecordingsDir;
pub use repair::repair;
pub use wav::{FinishedRecording, RecordingWriter};

/// Samples per second of every recording (narrow-band telephony).
pub const SAMPLE_RATE: u32 = 8000;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("recording file {path} is not a recording this daemon wrote: {why}")]
    NotOurs { path: String, why: &'static str },
}

pub(crate) fn io_error(
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.display().to_string(),
        source,
    }
}
