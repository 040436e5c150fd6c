//! The life of a call recording in the daemon: the file is started when a call is
//! answered and registered at once; at hangup it is finished (header, sync, rename,
//! SHA-256), completed in the store and linked to the call's contact; after a crash
//! the next start repairs what was left; the sweep deletes what has expired.
//!
//! Recordings are never silently lost: a recorder that cannot write (a full disk, a
//! directory gone or read-only) is found at start and every half minute, makes the
//! daemon not ready and refuses new recordings (the voice channel then neither plays
//! the recording notice nor pretends to record, or refuses calls, by configuration);
//! a write failing mid-call keeps what was written and marks the row; a file a crash
//! left unreadable is marked lost with the reason, and start-up goes on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use contactd_recordings::layout::PART_SUFFIX;
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
    min_free_bytes: u64,
    health: RecorderHealth,
}

/// Whether recordings can be written now, and if not, why. Shared with readiness.
#[derive(Clone, Default)]
pub struct RecorderHealth(Arc<Mutex<Option<String>>>);

impl RecorderHealth {
    /// The problem, if recordings cannot be written now.
    pub fn problem(&self) -> Option<String> {
        self.0.lock().expect("not poisoned").clone()
    }

    fn set(&self, problem: Option<String>) {
        let mut current = self.0.lock().expect("not poisoned");
        if current.is_none()
            && let Some(p) = &problem
        {
            tracing::error!(problem = %p, "recordings cannot be written");
        }
        if current.is_some() && problem.is_none() {
            tracing::info!("recordings can be written again");
        }
        metrics::gauge!("contactd_recorder_healthy").set(if problem.is_none() { 1.0 } else { 0.0 });
        *current = problem;
    }
}

/// Below this much free space the recorder counts as unavailable unless configured
/// otherwise (a call at 8 kHz stereo takes about 2 MB a minute).
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// A recording being written. The call's media clock writes through the sink; the
/// call's handler finishes it once the call has ended.
pub struct ActiveRecording {
    pub id: String,
    pub call_id: String,
    relative: PathBuf,
    started_at: Timestamp,
    writer: Arc<Mutex<Writing>>,
}

/// The writer, until a write fails; then why it failed.
struct Writing {
    writer: Option<RecordingWriter>,
    failure: Option<String>,
}

struct Sink {
    writing: Arc<Mutex<Writing>>,
    health: RecorderHealth,
}

impl FrameSink for Sink {
    fn frame(&mut self, caller: &Frame, sent: &Frame) {
        let mut guard = self.writing.lock().expect("not poisoned");
        if let Some(w) = guard.writer.as_mut()
            && let Err(e) = w.write(caller, sent)
        {
            // A full disk must not end the call; the recording stops here and what
            // was written is still finished and kept, the row saying why it is short.
            metrics::counter!("contactd_recordings_failed_total", "stage" => "write").increment(1);
            let why = format!("write failed mid-call: {e}");
            self.health.set(Some(why.clone()));
            guard.failure = Some(why);
            if let Some(w) = guard.writer.take() {
                let _ = w.finish(None);
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
            min_free_bytes: MIN_FREE_BYTES,
            health: RecorderHealth::default(),
        }
    }

    /// The free space below which recordings count as unavailable.
    pub fn with_min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }

    pub fn dir(&self) -> &RecordingsDir {
        &self.dir
    }

    pub fn health(&self) -> &RecorderHealth {
        &self.health
    }

    /// Checks that recordings can be written: the directory takes a file (written,
    /// synced, removed) and has room. Updates [`RecorderHealth`] and returns the
    /// problem, if any.
    pub async fn check(&self) -> Option<String> {
        let root = self.dir.root().to_path_buf();
        let min_free = self.min_free_bytes;
        let problem = tokio::task::spawn_blocking(move || probe(&root, min_free))
            .await
            .unwrap_or_else(|e| Some(format!("the check failed: {e}")));
        self.health.set(problem.clone());
        problem
    }

    /// Creates the file of a call answered at `answered_at`; refused while the
    /// recorder is unavailable.
    pub fn begin(
        &self,
        call_id: &str,
        answered_at: SystemTime,
    ) -> Result<ActiveRecording, RecordingError> {
        if let Some(problem) = self.health.problem() {
            return Err(RecordingError::Io {
                path: self.dir.root().display().to_string(),
                source: std::io::Error::other(problem),
            });
        }
        let id = crate::store::new_id();
        let started_at = Timestamp::from_system_time(answered_at);
        let date = time::OffsetDateTime::from_unix_timestamp(started_at.millis() / 1000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .date();
        let relative =
            RecordingsDir::relative_path(&id, date.year(), date.month() as u8, date.day());
        let writer = RecordingWriter::create(&self.dir.absolute(&relative)).inspect_err(|e| {
            metrics::counter!("contactd_recordings_failed_total", "stage" => "create").increment(1);
            self.health
                .set(Some(format!("cannot create a recording: {e}")));
        })?;
        metrics::counter!("contactd_recordings_started_total").increment(1);
        Ok(ActiveRecording {
            id,
            call_id: call_id.to_string(),
            relative,
            started_at,
            writer: Arc::new(Mutex::new(Writing {
                writer: Some(writer),
                failure: None,
            })),
        })
    }

    pub fn sink(&self, recording: &ActiveRecording) -> Box<dyn FrameSink> {
        Box::new(Sink {
            writing: recording.writer.clone(),
            health: self.health.clone(),
        })
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

    /// Finishes the file, with the call's `legs` with advisors in its metadata, and
    /// the row, then links it to the call's contact (if intake recorded one). Call
    /// only after the call has ended.
    pub async fn finish(
        &self,
        r: ActiveRecording,
        legs: &[crate::domain::recording::CallLeg],
    ) -> Result<(), RecorderError> {
        let comment = legs_comment(r.started_at, legs);
        let (writer, failure) = {
            let mut w = r.writer.lock().expect("not poisoned");
            (w.writer.take(), w.failure.take())
        };
        let finished = match writer {
            Some(w) => blocking(&r.id, move || w.finish(Some(&comment))).await,
            // The writer gave up after a write error and finished what it had (or
            // could not even do that: then the part file is repaired).
            None => {
                let path = self.dir.absolute(&r.relative);
                let part = RecordingsDir::part_path(&path);
                if part.is_file() {
                    blocking(&r.id, move || repair(&part)).await
                } else {
                    finished_from_disk(&path)
                }
            }
        };
        match finished {
            Ok(f) => {
                metrics::counter!("contactd_recordings_written_total").increment(1);
                self.complete(&r.id, &r.call_id, &f, false, failure.as_deref())
                    .await
            }
            Err(e) => {
                let why = failure.unwrap_or_else(|| format!("cannot finish: {e}"));
                metrics::counter!("contactd_recordings_failed_total", "stage" => "finish")
                    .increment(1);
                self.store.mark_recording_lost(&r.id, &why).await?;
                Err(e.into())
            }
        }
    }

    async fn complete(
        &self,
        id: &str,
        call_id: &str,
        f: &FinishedRecording,
        repaired: bool,
        failure: Option<&str>,
    ) -> Result<(), RecorderError> {
        let completion = Completion {
            ended_at: Timestamp::now(),
            duration_ms: f.duration_ms as i64,
            size_bytes: f.size_bytes as i64,
            sha256: &f.sha256,
            repaired,
            failure,
        };
        self.store
            .complete_recording(id, call_id, &completion)
            .await?;
        Ok(())
    }

    /// After a crash: every recording still marked as being written is repaired to
    /// the audio on disk and completed; `.part` files nobody registered are
    /// registered and repaired too. A file that cannot be repaired (gone, or not a
    /// recording) is marked lost with the reason: start-up always goes on. Returns how
    /// many were repaired.
    pub async fn repair_unfinished(&self) -> Result<usize, RecorderError> {
        let mut repaired = 0;
        for (id, call_id, path) in self.store.unfinished_recordings().await? {
            let finished = match self.dir.existing(Path::new(&path)) {
                Some(file) if file.to_string_lossy().ends_with(PART_SUFFIX) => {
                    blocking(&id, move || repair(&file)).await
                }
                // Renamed before the crash, never completed in the store.
                Some(file) => finished_from_disk(&file),
                None => Err(RecordingError::NotOurs {
                    path: path.clone(),
                    why: "its file is not in recordings.dir",
                }),
            };
            match finished {
                Ok(f) => {
                    tracing::warn!(recording = %id, duration_ms = f.duration_ms, "repaired a recording left by a crash");
                    metrics::counter!("contactd_recordings_repaired_total").increment(1);
                    self.complete(&id, &call_id, &f, true, None).await?;
                    repaired += 1;
                }
                Err(e) => {
                    tracing::error!(recording = %id, error = %e, "a recording left by a crash is lost");
                    metrics::counter!("contactd_recordings_failed_total", "stage" => "repair")
                        .increment(1);
                    self.store
                        .mark_recording_lost(&id, &format!("after a crash: {e}"))
                        .await?;
                }
            }
        }
        let known: Vec<String> = self.store.recording_paths().await?;
        for part in find_parts(self.dir.root()) {
            let Ok(relative) = part.strip_prefix(self.dir.root()) else {
                continue;
            };
            let relative = path_text(relative);
            let relative = relative.trim_end_matches(PART_SUFFIX).to_string();
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
            match blocking(&id, move || repair(&part)).await {
                Ok(f) => {
                    tracing::warn!(recording = %id, "registered and repaired an unregistered recording file");
                    metrics::counter!("contactd_recordings_repaired_total").increment(1);
                    self.complete(&id, &id, &f, true, None).await?;
                    repaired += 1;
                }
                Err(e) => {
                    tracing::error!(recording = %id, error = %e, "an unregistered recording file is unreadable");
                    self.store
                        .mark_recording_lost(&id, &format!("after a crash: {e}"))
                        .await?;
                }
            }
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
            // A file that is not where it should be is an error to look into (a
            // recordings directory unmounted or moved), never a deletion.
            if self.dir.existing(Path::new(&r.path)).is_none() {
                tracing::error!(recording = %r.id, "an expired recording's file is not in recordings.dir; not marked purged");
                metrics::counter!("contactd_recordings_sweep_errors_total").increment(1);
                report.failed.push(r.id);
                continue;
            }
            if dry_run {
                report.purged.push(r.id);
                continue;
            }
            let dir = &self.dir;
            let relative = Path::new(&r.path);
            let deleted = self
                .store
                .purge_recording(&Actor::System, &r.id, || {
                    dir.delete(relative)?;
                    match dir.existing(relative) {
                        None => Ok(()),
                        Some(p) => Err(RecordingError::NotOurs {
                            path: p.display().to_string(),
                            why: "still there after deleting it",
                        }),
                    }
                })
                .await?;
            match deleted {
                Ok(true) => {
                    metrics::counter!("contactd_recordings_swept_total").increment(1);
                    report.purged.push(r.id);
                }
                // A legal hold was placed meanwhile.
                Ok(false) => report.kept_on_hold += 1,
                Err(e) => {
                    tracing::error!(recording = %r.id, error = %e, "could not delete an expired recording");
                    metrics::counter!("contactd_recordings_sweep_errors_total").increment(1);
                    report.failed.push(r.id);
                }
            }
        }
        Ok(report)
    }
}

/// What a recording's metadata says of the call: each leg with an advisor, its
/// moments in ms from the start of the recording. At most [`LEGS_IN_METADATA`].
fn legs_comment(started_at: Timestamp, legs: &[crate::domain::recording::CallLeg]) -> String {
    let at = |t: Timestamp| (t.millis() - started_at.millis()).max(0);
    let legs: Vec<serde_json::Value> = legs
        .iter()
        .take(LEGS_IN_METADATA)
        .map(|l| {
            serde_json::json!({
                "advisor_id": l.advisor_id,
                "offered_ms": at(l.offered_at),
                "answered_ms": l.answered_at.map(at),
                "ended_ms": l.ended_at.map(at),
                "outcome": l.outcome,
                "transferred_to": l.transferred_to,
            })
        })
        .collect();
    serde_json::json!({ "recorded_by": "contactd", "legs": legs }).to_string()
}

/// A call offered round and round for its whole wait has a leg per offer: the
/// metadata keeps the first this many (the store keeps them all).
const LEGS_IN_METADATA: usize = 200;

fn finished_from_disk(path: &Path) -> Result<FinishedRecording, RecordingError> {
    let size = std::fs::metadata(path)
        .map_err(|e| RecordingError::Io {
            path: path.display().to_string(),
            source: e,
        })?
        .len();
    let audio = contactd_recordings::wav::data_bytes_in_header(path)
        .filter(|d| 44 + d <= size)
        .unwrap_or(size.saturating_sub(44));
    Ok(FinishedRecording {
        path: path.to_path_buf(),
        size_bytes: size,
        duration_ms: audio / 4 * 1000 / u64::from(contactd_recordings::SAMPLE_RATE),
        sha256: contactd_recordings::wav::hash_file(path)?,
    })
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    id: &str,
    work: impl FnOnce() -> Result<T, RecordingError> + Send + 'static,
) -> Result<T, RecordingError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RecordingError::Io {
            path: id.to_string(),
            source: std::io::Error::other(e),
        })?
}

/// Whether a file can be written in `root`, and room for recordings: `None` if so.
fn probe(root: &Path, min_free: u64) -> Option<String> {
    use std::io::Write;
    let file = root.join(format!(".probe-{}", std::process::id()));
    let written = (|| {
        std::fs::create_dir_all(root)?;
        let mut f = std::fs::File::create(&file)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&file);
    if let Err(e) = written {
        return Some(format!("cannot write in {}: {e}", root.display()));
    }
    match nix::sys::statvfs::statvfs(root) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            (free < min_free).then(|| {
                format!(
                    "{} has {} MiB free, below recordings.min_free_mb ({} MiB)",
                    root.display(),
                    free / (1024 * 1024),
                    min_free / (1024 * 1024)
                )
            })
        }
        Err(e) => Some(format!("cannot read free space of {}: {e}", root.display())),
    }
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
