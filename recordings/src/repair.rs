//! Crash repair. A recording interrupted by a crash is a `.part` file whose header
//! still says "no audio". Everything after the header that forms whole stereo frames
//! is real audio written before the crash: keep it, make the header say so, finish it.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;

use crate::layout::PART_SUFFIX;
use crate::wav::{FinishedRecording, HEADER_LEN, finish_file, header};
use crate::{RecordingError, io_error};

/// Repairs `part` (a `.wav.part` file) into its final `.wav` name.
pub fn repair(part: &Path) -> Result<FinishedRecording, RecordingError> {
    let not_ours = |why| RecordingError::NotOurs {
        path: part.display().to_string(),
        why,
    };
    let name = part
        .to_str()
        .ok_or_else(|| not_ours("its name is not UTF-8"))?;
    let final_name = name
        .strip_suffix(PART_SUFFIX)
        .ok_or_else(|| not_ours("it is not a .part file"))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(part)
        .map_err(io_error(part))?;
    let len = file.metadata().map_err(io_error(part))?.len();
    let mut head = vec![0u8; len.min(HEADER_LEN) as usize];
    file.read_exact(&mut head).map_err(io_error(part))?;
    if len < HEADER_LEN {
        // Killed before the first buffer reached the disk: nothing, or part of our
        // own header. An empty recording, still a playable file.
        if head[..] != header(0, 0)[..head.len()] {
            return Err(not_ours("it is shorter than a WAV header and not ours"));
        }
        return finish_file(&mut file, part, Path::new(final_name), 0, None);
    }
    if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(not_ours("it has no RIFF/WAVE header"));
    }
    // A file finished just before the crash has its audio's length in its header
    // (and its metadata after the audio, which is not audio): trust that. Otherwise
    // everything after the header is audio.
    let finished = u64::from(u32::from_le_bytes([head[40], head[41], head[42], head[43]]));
    let data = if finished > 0 && HEADER_LEN + finished <= len {
        finished
    } else {
        len.saturating_sub(HEADER_LEN) / 4 * 4
    };
    finish_file(&mut file, part, Path::new(final_name), data, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordingWriter;
    use crate::layout::RecordingsDir;

    #[test]
    fn an_abandoned_recording_is_repaired_to_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let mut w = RecordingWriter::create(&path).unwrap();
        for _ in 0..100 {
            w.write(&[1000; 160], &[-1000; 160]).unwrap();
        }
        // A crash: the writer's buffer reaches the file, nothing else happens.
        drop(w);
        let part = RecordingsDir::part_path(&path);
        // A torn last frame, as a kill mid-write leaves.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .unwrap();
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .unwrap()
            .write_all(&[1, 2])
            .unwrap();

        let fixed = repair(&part).unwrap();
        assert_eq!(fixed.duration_ms, 2000);
        assert!(!part.exists());
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.duration(), 16000);
    }

    #[test]
    fn a_file_killed_before_its_first_write_becomes_an_empty_recording() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [("empty", &b""[..]), ("torn", &header(0, 0)[..20])] {
            let part = dir.path().join(format!("{name}.wav.part"));
            std::fs::write(&part, bytes).unwrap();
            let fixed = repair(&part).unwrap();
            assert_eq!((fixed.duration_ms, fixed.size_bytes), (0, HEADER_LEN));
            let reader = hound::WavReader::open(dir.path().join(format!("{name}.wav"))).unwrap();
            assert_eq!(reader.duration(), 0);
        }
    }

    #[test]
    fn refuses_files_that_are_not_recordings() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("x.wav.part");
        std::fs::write(&part, b"hello, not a wav file at all").unwrap();
        assert!(matches!(repair(&part), Err(RecordingError::NotOurs { .. })));
        std::fs::write(&part, b"junk").unwrap();
        assert!(matches!(repair(&part), Err(RecordingError::NotOurs { .. })));
    }
}
