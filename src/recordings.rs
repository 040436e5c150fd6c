//! The life of a call recording in the daemon: the file is started when a call is
//! answered and registered at once; at hangup it is finished (header, sync, rename,
//! SHA-256), completed in the store and linked to the call's contact; after a crash
//! the next start repairs what was left; the sweep deletes what has expired.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use contactd_recordings::{
    FinishedRecording, RecordingError, RecordingWriter, RecordingsDir, repair,
};
use contactd_sip::{Frame, FrameSink};

use crate::domain::{Actor, Timestamp};
use crate::store::recordings::Completion;
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct Recorder {
    store: Store,
    dir: RecordingsDir,
    retention_days: i64,
}

/// A recording being written. The call's media clock writes through the sink; the
/// call's handler finishes it once the call has ended.
pub struct ActiveRecording {
    pub id: String,
    pub call_id: String,
    relative: PathBuf,
    started_at: Timestamp,
    writer: Arc<Mutex<Option<RecordingWriter>>>,
}

struct Sink(Arc<Mutex<Option<RecordingWriter>>>);

impl FrameSink for Sink {
    fn frame(&mut self, caller: &Frame, sent: &Frame) {
        let mut guard = self.0.lock().expect("not poisoned");
        if let Some(w) = guard.as_mut()
            && let Err(e) = w.write(caller, sent)
        {
            // A full disk must not end the call; the recording stops here and what
            // was written is still finished and kept.
            tracing::error!(error = %e, "recording write failed; recording stops");
            if let Some(w) = guard.take() {
                let _ = w.finish();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error(transparent)]
    File(#[from] RecordingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a sweep did (or, dry, would do).
#[derive(Debug, Default)]
pub struct SweepReport {
    pub purged: Vec<String>,
    pub kept_on_hold: i64,
    pub failed: Vec<String>,
}

impl Recorder {
    pub fn new(store: Store, dir: impl Into<PathBuf>, retention_days: u32) -> Self {
        Recorder {
            store,
            dir: RecordingsDir::new(dir),
            retention_days: i64::from(retention_days),
        }
    }

    pub fn dir(&self) -> &RecordingsDir {
        &self.dir
    }

    /// Creates the file of a call answered at `answered_at`.
    pub fn begin(
        &self,
        call_id: &str,
        answered_at: SystemTime,
    ) -> Result<ActiveRecording, RecordingError> {
        let id = crate::store::new_id();
        let started_at = Timestamp::from_system_time(answered_at);
        let date = time::OffsetDateTime::from_unix_timestamp(started_at.millis() / 1000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .date();
        let relative =
            RecordingsDir::relative_path(&id, date.year(), date.month() as u8, date.day());
        let writer = RecordingWriter::create(&self.dir.absolute(&relative))?;
        Ok(ActiveRecording {
            id,
            call_id: call_id.to_string(),
            relative,
            started_at,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    pub fn sink(recording: &ActiveRecording) -> Box<dyn FrameSink> {
        Box::new(Sink(recording.writer.clone()))
    }

    pub async fn register(&self, r: &ActiveRecording) -> Result<(), StoreError> {
        let expires = r.started_at.plus_days(self.retention_days);
        self.store
            .register_recording(
                &r.id,
                &r.call_id,
                &path_text(&r.relative),
                r.started_at,
                expires,
            )
            .await
    }

    /// Finishes the file and the row, then links it to the call's contact (if intake
    /// recorded one). Call only after the call has ended.
    pub async fn finish(&self, r: ActiveRecording) -> Result<(), RecorderError> {
        let writer = r.writer.lock().expect("not poisoned").take();
        let finished = match writer {
            Some(w) => tokio::task::spawn_blocking(move || w.finish())
                .await
                .map_err(|e| RecordingError::Io {
                    path: r.id.clone(),
                    source: std::io::Error::other(e),
                })??,
            // The writer gave up after a write error and finished what it had.
            None => finished_from_disk(&self.dir.absolute(&r.relative))?,
        };
        self.complete(&r.id, &r.call_id, &finished, false).await
    }

    async fn complete(
        &self,
        id: &str,
        call_id: &str,
        f: &FinishedRecording,
        repaired: bool,
    ) -> Result<(), RecorderError> {
        let completion = Completion {
            ended_at: Timestamp::now(),
            duration_ms: f.duration_ms as i64,
            size_bytes: f.size_bytes as i64,
            sha256: &f.sha256,
            repaired,
        };
        self.store.complete_recording(id, &completion).await?;
        if let Some((contact, request)) = self.store.contact_of_call(call_id).await? {
            self.store.link_recording(id, &contact, &request).await?;
        }
        Ok(())
    }

    /// After a crash: every recording still marked as being written is repaired to
    /// the audio on disk and completed; `.part` files nobody registered are
    /// registered and repaired too. Returns how many were repaired.
    pub async fn repair_unfinished(&self) -> Result<usize, RecorderError> {
        let mut repaired = 0;
        for (id, call_id, path) in self.store.unfinished_recordings().await? {
            let absolute = self.dir.absolute(Path::new(&path));
            let part = RecordingsDir::part_path(&absolute);
            let finished = if part.exists() {
                tokio::task::spawn_blocking(move || repair(&part))
                    .await
                    .map_err(|e| RecordingError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e),
                    })??
            } else {
                // Renamed before the crash, never completed in the store.
                finished_from_disk(&absolute)?
            };
            tracing::warn!(recording = %id, duration_ms = finished.duration_ms, "repaired a recording left by a crash");
            self.complete(&id, &call_id, &finished, true).await?;
            repaired += 1;
        }
        let known: Vec<String> = self.store.recording_paths().await?;
        for part in find_parts(self.dir.root()) {
            let Ok(relative) = part.strip_prefix(self.dir.root()) else {
                continue;
            };
            let relative = path_text(relative);
            let relative = relative
                .trim_end_matches(contactd_recordings::layout::PART_SUFFIX)
                .to_string();
            if known.contains(&relative) {
                continue;
            }
            let started = Timestamp::now();
            let id = self
                .store
                .register_orphan_recording(
                    &relative,
                    started,
                    started.plus_days(self.retention_days),
                )
                .await?;
            let finished = tokio::task::spawn_blocking(move || repair(&part))
                .await
                .map_err(|e| RecordingError::Io {
                    path: relative.clone(),
                    source: std::io::Error::other(e),
                })??;
            tracing::warn!(recording = %id, "registered and repaired an unregistered recording file");
            self.complete(&id, &id, &finished, true).await?;
            repaired += 1;
        }
        Ok(repaired)
    }

    /// Deletes the files of recordings past their expiry and not on legal hold; the
    /// rows stay, marked purged, each deletion audited.
    pub async fn sweep(&self, dry_run: bool) -> Result<SweepReport, RecorderError> {
        let now = Timestamp::now();
        let (expired, kept_on_hold) = self.store.expired_recordings(now).await?;
        let mut report = SweepReport {
            kept_on_hold,
            ..Default::default()
        };
        for r in expired {
            if dry_run {
                report.purged.push(r.id);
                continue;
            }
            // The row first, conditional on no hold having been placed since: a file
            // is never deleted under a hold.
            if !self.store.mark_purged(&Actor::System, &r.id).await? {
                continue;
            }
            match self.dir.delete(Path::new(&r.path)) {
                Ok(()) => report.purged.push(r.id),
                Err(e) => {
                    tracing::error!(recording = %r.id, error = %e, "could not delete an expired recording");
                    report.failed.push(r.id);
                }
            }
        }
        Ok(report)
    }
}

fn finished_from_disk(path: &Path) -> Result<FinishedRecording, RecordingError> {
    let size = std::fs::metadata(path)
        .map_err(|e| RecordingError::Io {
            path: path.display().to_string(),
            source: e,
        })?
        .len();
    Ok(FinishedRecording {
        path: path.to_path_buf(),
        size_bytes: size,
        duration_ms: size.saturating_sub(44) / 4 * 1000
            / u64::from(contactd_recordings::SAMPLE_RATE),
        sha256: contactd_recordings::wav::hash_file(path)?,
    })
}

/// Paths are stored with `/` whatever the platform.
fn path_text(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `.wav.part` files under the recordings directory (YYYY/MM/DD/ depth).
fn find_parts(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 3 {
                dirs.push((path, depth + 1));
            } else if path.to_string_lossy().ends_with(".wav.part") {
                found.push(path);
            }
        }
    }
    found
}
