//! The prompts callers hear: 8 kHz mono 16-bit WAVs, built into the binary from
//! `config/prompts/`, or read from `ivr.prompts_dir` (same file names).

use std::path::Path;
use std::sync::Arc;

#[derive(Clone)]
pub struct Prompts {
    pub recording_notice: Arc<[i16]>,
    pub main_menu: Arc<[i16]>,
    pub service_menu: Arc<[i16]>,
    pub reference_not_recognised: Arc<[i16]>,
    pub not_understood: Arc<[i16]>,
    pub logged: Arc<[i16]>,
    pub your_reference_is: Arc<[i16]>,
    /// No advisor: "leave a message after the tone, or press 1 for a call back".
    pub voicemail: Arc<[i16]>,
    pub callback_booked: Arc<[i16]>,
    pub voicemail_saved: Arc<[i16]>,
    /// Outside a queue's opening hours, before the voicemail prompt.
    pub closed: Arc<[i16]>,
    /// "You are number" N "in the queue", now and then while a caller waits.
    pub position_before: Arc<[i16]>,
    pub position_after: Arc<[i16]>,
    /// "zero" to "nine", for reading a reference back digit by digit.
    pub digits: [Arc<[i16]>; 10],
}

/// A pause between digits read back, so that they are heard apart (250 ms).
const DIGIT_GAP: usize = 2000;

const BUILT_IN: [(&str, &[u8]); 23] = [
    (
        "recording_notice",
        include_bytes!("../../../config/prompts/recording_notice.wav"),
    ),
    (
        "main_menu",
        include_bytes!("../../../config/prompts/main_menu.wav"),
    ),
    (
        "service_menu",
        include_bytes!("../../../config/prompts/service_menu.wav"),
    ),
    (
        "reference_not_recognised",
        include_bytes!("../../../config/prompts/reference_not_recognised.wav"),
    ),
    (
        "not_understood",
        include_bytes!("../../../config/prompts/not_understood.wav"),
    ),
    (
        "logged",
        include_bytes!("../../../config/prompts/logged.wav"),
    ),
    (
        "your_reference_is",
        include_bytes!("../../../config/prompts/your_reference_is.wav"),
    ),
    (
        "voicemail",
        include_bytes!("../../../config/prompts/voicemail.wav"),
    ),
    (
        "callback_booked",
        include_bytes!("../../../config/prompts/callback_booked.wav"),
    ),
    (
        "voicemail_saved",
        include_bytes!("../../../config/prompts/voicemail_saved.wav"),
    ),
    (
        "closed",
        include_bytes!("../../../config/prompts/closed.wav"),
    ),
    (
        "position_before",
        include_bytes!("../../../config/prompts/position_before.wav"),
    ),
    (
        "position_after",
        include_bytes!("../../../config/prompts/position_after.wav"),
    ),
    (
        "digit_0",
        include_bytes!("../../../config/prompts/digit_0.wav"),
    ),
    (
        "digit_1",
        include_bytes!("../../../config/prompts/digit_1.wav"),
    ),
    (
        "digit_2",
        include_bytes!("../../../config/prompts/digit_2.wav"),
    ),
    (
        "digit_3",
        include_bytes!("../../../config/prompts/digit_3.wav"),
    ),
    (
        "digit_4",
        include_bytes!("../../../config/prompts/digit_4.wav"),
    ),
    (
        "digit_5",
        include_bytes!("../../../config/prompts/digit_5.wav"),
    ),
    (
        "digit_6",
        include_bytes!("../../../config/prompts/digit_6.wav"),
    ),
    (
        "digit_7",
        include_bytes!("../../../config/prompts/digit_7.wav"),
    ),
    (
        "digit_8",
        include_bytes!("../../../config/prompts/digit_8.wav"),
    ),
    (
        "digit_9",
        include_bytes!("../../../config/prompts/digit_9.wav"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("ivr.prompts_dir: prompt {name}: {why}")]
pub struct PromptError {
    name: String,
    why: String,
}

impl Prompts {
    /// The built-in prompts, each replaced by `DIR/NAME.wav` where `dir` has one.
    pub fn load(dir: &Path) -> Result<Prompts, PromptError> {
        let mut loaded = Vec::with_capacity(BUILT_IN.len());
        for (name, bytes) in BUILT_IN {
            let file = dir.join(format!("{name}.wav"));
            let audio = if !dir.as_os_str().is_empty() && file.is_file() {
                let data = std::fs::read(&file).map_err(|e| PromptError {
                    name: file.display().to_string(),
                    why: e.to_string(),
                })?;
                decode(&data).map_err(|why| PromptError {
                    name: file.display().to_string(),
                    why,
                })?
            } else {
                decode(bytes).map_err(|why| PromptError {
                    name: name.to_string(),
                    why,
                })?
            };
            loaded.push(audio);
        }
        let mut it = loaded.into_iter();
        let mut next = || it.next().expect("one per prompt");
        Ok(Prompts {
            recording_notice: next(),
            main_menu: next(),
            service_menu: next(),
            reference_not_recognised: next(),
            not_understood: next(),
            logged: next(),
            your_reference_is: next(),
            voicemail: next(),
            callback_booked: next(),
            voicemail_saved: next(),
            closed: next(),
            position_before: next(),
            position_after: next(),
            digits: std::array::from_fn(|_| next()),
        })
    }

    /// "Your reference is" and the reference's digits one by one, as one prompt.
    pub fn reference(&self, reference: crate::domain::Reference) -> Arc<[i16]> {
        let mut audio: Vec<i16> = self.your_reference_is.to_vec();
        self.say_digits(&mut audio, &reference.to_string());
        Arc::from(audio)
    }

    /// "You are number" `n` "in the queue" (a number above 9 is read digit by digit).
    pub fn position(&self, n: usize) -> Arc<[i16]> {
        let mut audio: Vec<i16> = self.position_before.to_vec();
        self.say_digits(&mut audio, &n.to_string());
        audio.extend_from_slice(&self.position_after);
        Arc::from(audio)
    }

    /// Each digit of `text`, a short pause before each and after the last.
    fn say_digits(&self, audio: &mut Vec<i16>, text: &str) {
        for d in text.chars().filter_map(|c| c.to_digit(10)) {
            audio.extend(std::iter::repeat_n(0, DIGIT_GAP));
            audio.extend_from_slice(&self.digits[d as usize]);
        }
        audio.extend(std::iter::repeat_n(0, DIGIT_GAP));
    }
}

/// Music on hold: `path`'s WAV (8 kHz mono 16-bit), or the built-in when empty.
pub fn music_on_hold(path: &Path) -> Result<Arc<[i16]>, PromptError> {
    if path.as_os_str().is_empty() {
        return Ok(super::queue::built_in_music());
    }
    let failed = |why: String| PromptError {
        name: path.display().to_string(),
        why,
    };
    let data = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let audio = decode(&data).map_err(failed)?;
    if audio.len() < 8000 {
        return Err(failed("shorter than a second".into()));
    }
    Ok(audio)
}

fn decode(bytes: &[u8]) -> Result<Arc<[i16]>, String> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.sample_rate != 8000 || spec.bits_per_sample != 16 {
        return Err(format!(
            "must be 8000 Hz mono 16-bit, is {} Hz, {} channel(s), {} bits",
            spec.sample_rate, spec.channels, spec.bits_per_sample
        ));
    }
    reader
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::from)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prompts_load() {
        let p = Prompts::load(Path::new("")).unwrap();
        assert!(
            p.recording_notice.len() > 8000,
            "at least a second of speech"
        );
    }
}
