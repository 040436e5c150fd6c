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
}

const BUILT_IN: [(&str, &[u8]); 6] = [
    (
        "recording_notice",
        include_bytes!("../../config/prompts/recording_notice.wav"),
    ),
    (
        "main_menu",
        include_bytes!("../../config/prompts/main_menu.wav"),
    ),
    (
        "service_menu",
        include_bytes!("../../config/prompts/service_menu.wav"),
    ),
    (
        "reference_not_recognised",
        include_bytes!("../../config/prompts/reference_not_recognised.wav"),
    ),
    (
        "not_understood",
        include_bytes!("../../config/prompts/not_understood.wav"),
    ),
    ("logged", include_bytes!("../../config/prompts/logged.wav")),
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
        })
    }
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
