//! Where recordings live: `ROOT/YYYY/MM/DD/<id>.wav`, dated by the call's start (UTC),
//! so a day's calls share a directory and expiry walks whole days.

use std::path::{Path, PathBuf};

use crate::{RecordingError, io_error};

/// The suffix of a recording still being written.
pub const PART_SUFFIX: &str = ".part";

#[derive(Debug, Clone)]
pub struct RecordingsDir {
    root: PathBuf,
}

impl RecordingsDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RecordingsDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of recording `id` relative to the root, for the store.
    pub fn relative_path(id: &str, year: i32, month: u8, day: u8) -> PathBuf {
        PathBuf::from(format!("{year:04}/{month:02}/{day:02}/{id}.wav"))
    }

    pub fn absolute(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }

    /// The name the file has while it is being written.
    pub fn part_path(final_path: &Path) -> PathBuf {
        let mut s = final_path.as_os_str().to_owned();
        s.push(PART_SUFFIX);
        PathBuf::from(s)
    }

    /// The recording's file as it is on disk now (finished, or still `.part`), if any.
    pub fn existing(&self, relative: &Path) -> Option<PathBuf> {
        let path = self.absolute(relative);
        [path.clone(), Self::part_path(&path)]
            .into_iter()
            .find(|p| p.is_file())
    }

    /// Deletes a recording's file (finished or not). A file already gone is not an
    /// error: deletion is what was wanted.
    pub fn delete(&self, relative: &Path) -> Result<(), RecordingError> {
        let path = self.absolute(relative);
        for p in [Self::part_path(&path), path.clone()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&p)(e)),
            }
        }
        Ok(())
    }
}
