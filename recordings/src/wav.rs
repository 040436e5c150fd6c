//! A stereo 16-bit PCM WAV written frame by frame. The header is written first with
//! sizes of zero and corrected when the call ends (or by [`crate::repair`] after a
//! crash), so the audio is on disk as the call goes, never held in memory. What
//! happened in the call (its legs with advisors) goes after the audio, in the file's
//! own metadata: a `LIST`/`INFO` chunk whose comment (`ICMT`, what players show as
//! "comment") is the daemon's JSON.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::layout::RecordingsDir;
use crate::{RecordingError, SAMPLE_RATE, io_error};

pub(crate) const HEADER_LEN: u64 = 44;
const CHANNELS: u16 = 2;
const BYTES_PER_FRAME: u64 = 4;

/// About half a second of audio: what a crash can lose at most.
const BUFFER_BYTES: usize = 16 * 1024;

/// A recording in progress.
pub struct RecordingWriter {
    file: BufWriter<File>,
    part: PathBuf,
    final_path: PathBuf,
    frames: u64,
}

/// A finished recording file and what the store keeps about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedRecording {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub duration_ms: u64,
    pub sha256: String,
}

/// The header of a file with `data_bytes` of audio and `after` bytes of chunks
/// after it.
pub(crate) fn header(data_bytes: u32, after: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let byte_rate = SAMPLE_RATE * u32::from(CHANNELS) * 2;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8]
        .copy_from_slice(&(36u32.saturating_add(data_bytes).saturating_add(after)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&(CHANNELS * 2).to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

impl RecordingWriter {
    /// Starts `final_path` (absolute) as `<final_path>.part`, creating its directory.
    pub fn create(final_path: &Path) -> Result<Self, RecordingError> {
        let part = RecordingsDir::part_path(final_path);
        if let Some(dir) = final_path.parent() {
            // Recordings are personal data: only the daemon's user may list or read them.
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(dir)
            .map_err(io_error(dir))?;
        }
        let file = std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().write(true).create_new(true),
            0o600,
        )
        .open(&part)
        .map_err(io_error(&part))?;
        let mut file = BufWriter::with_capacity(BUFFER_BYTES, file);
        file.write_all(&header(0, 0)).map_err(io_error(&part))?;
        Ok(RecordingWriter {
            file,
            part,
            final_path: final_path.to_path_buf(),
            frames: 0,
        })
    }

    /// Appends equal-length left (caller) and right (sent) samples.
    pub fn write(&mut self, left: &[i16], right: &[i16]) -> Result<(), RecordingError> {
        debug_assert_eq!(left.len(), right.len());
        let mut buf = [0u8; 4];
        for (l, r) in left.iter().zip(right) {
            buf[..2].copy_from_slice(&l.to_le_bytes());
            buf[2..].copy_from_slice(&r.to_le_bytes());
            self.file.write_all(&buf).map_err(io_error(&self.part))?;
        }
        self.frames += left.len() as u64;
        Ok(())
    }

    pub fn duration_ms(&self) -> u64 {
        self.frames * 1000 / u64::from(SAMPLE_RATE)
    }

    /// Corrects the header, adds `comment` (the call's events) as the file's
    /// metadata, syncs, renames to the final name and hashes the file.
    pub fn finish(self, comment: Option<&str>) -> Result<FinishedRecording, RecordingError> {
        let RecordingWriter {
            file,
            part,
            final_path,
            frames,
        } = self;
        let mut file = file
            .into_inner()
            .map_err(|e| io_error(&part)(e.into_error()))?;
        finish_file(
            &mut file,
            &part,
            &final_path,
            frames * BYTES_PER_FRAME,
            comment,
        )
    }
}

/// A `LIST` chunk of type `INFO` holding `comment` as `ICMT` (NUL-terminated,
/// padded to an even length as RIFF wants).
fn info_chunk(comment: &str) -> Vec<u8> {
    let mut text = comment.as_bytes().to_vec();
    text.push(0);
    let icmt_len = text.len() as u32;
    if text.len() % 2 == 1 {
        text.push(0);
    }
    let mut chunk = Vec::with_capacity(text.len() + 20);
    chunk.extend_from_slice(b"LIST");
    chunk.extend_from_slice(&(4 + 8 + text.len() as u32).to_le_bytes());
    chunk.extend_from_slice(b"INFO");
    chunk.extend_from_slice(b"ICMT");
    chunk.extend_from_slice(&icmt_len.to_le_bytes());
    chunk.extend_from_slice(&text);
    chunk
}

/// The audio's length as a finished file's header gives it, if it is one.
pub fn data_bytes_in_header(path: &Path) -> Option<u64> {
    let mut head = [0u8; HEADER_LEN as usize];
    File::open(path).ok()?.read_exact(&mut head).ok()?;
    (&head[0..4] == b"RIFF" && &head[36..40] == b"data")
        .then(|| u64::from(u32::from_le_bytes([head[40], head[41], head[42], head[43]])))
}

/// Writes the real sizes into the header, syncs, renames and hashes.
pub(crate) fn finish_file(
    file: &mut File,
    part: &Path,
    final_path: &Path,
    data_bytes: u64,
    comment: Option<&str>,
) -> Result<FinishedRecording, RecordingError> {
    let data_bytes32 = u32::try_from(data_bytes).map_err(|_| RecordingError::NotOurs {
        path: part.display().to_string(),
        why: "longer than a WAV file can describe",
    })?;
    let metadata = comment.map(info_chunk).unwrap_or_default();
    file.set_len(HEADER_LEN + data_bytes)
        .map_err(io_error(part))?;
    file.seek(SeekFrom::End(0)).map_err(io_error(part))?;
    file.write_all(&metadata).map_err(io_error(part))?;
    file.seek(SeekFrom::Start(0)).map_err(io_error(part))?;
    file.write_all(&header(data_bytes32, metadata.len() as u32))
        .map_err(io_error(part))?;
    file.sync_all().map_err(io_error(part))?;
    std::fs::rename(part, final_path).map_err(io_error(part))?;
    if let Some(dir) = final_path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    let sha256 = hash_file(final_path)?;
    Ok(FinishedRecording {
        path: final_path.to_path_buf(),
        size_bytes: HEADER_LEN + data_bytes + metadata.len() as u64,
        duration_ms: data_bytes / BYTES_PER_FRAME * 1000 / u64::from(SAMPLE_RATE),
        sha256,
    })
}

pub fn hash_file(path: &Path) -> Result<String, RecordingError> {
    let mut f = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_playable_stereo_wav() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2026/11/23/call.wav");
        let mut w = RecordingWriter::create(&path).unwrap();
        let left: Vec<i16> = (0..8000).map(|i| (i % 100) as i16).collect();
        let right = vec![-7i16; 8000];
        for (l, r) in left.chunks(160).zip(right.chunks(160)) {
            w.write(l, r).unwrap();
        }
        let comment = r#"{"legs":[]}"#;
        let done = w.finish(Some(comment)).unwrap();
        assert_eq!(done.duration_ms, 1000);
        // The metadata: "LIST", size, "INFO", "ICMT", size, 12 bytes with the NUL.
        assert_eq!(done.size_bytes, 44 + 8000 * 4 + 8 + 4 + 8 + 12);
        assert_eq!(data_bytes_in_header(&path), Some(8000 * 4));
        assert!(!RecordingsDir::part_path(&path).exists());
        let mut reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(samples.len(), 16000);
        assert_eq!(&samples[..4], &[0, -7, 1, -7]);
        assert_eq!(done.sha256, hash_file(&path).unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
            bytes.len() - 8,
            "the RIFF size covers the metadata"
        );
        let tail = &bytes[44 + 8000 * 4..];
        assert_eq!(&tail[..4], b"LIST");
        assert_eq!(&tail[8..16], b"INFOICMT");
        assert_eq!(&tail[20..31], comment.as_bytes());
    }

    #[test]
    fn an_odd_comment_is_padded_to_an_even_chunk() {
        let chunk = info_chunk("odd");
        assert_eq!(chunk.len() % 2, 0);
        assert_eq!(u32::from_le_bytes(chunk[16..20].try_into().unwrap()), 4);
        assert_eq!(
            u32::from_le_bytes(chunk[4..8].try_into().unwrap()) as usize,
            chunk.len() - 8
        );
    }
}
