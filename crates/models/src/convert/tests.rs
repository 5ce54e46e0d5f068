//! The converter on a tiny synthetic model written here in CTranslate2's
//! layout: 2 + 2 layers, width 8, 2 heads, 4 mel bins.

use std::collections::BTreeMap;

use half::f16;

use super::*;

const D: usize = 8;
const FFN: usize = 16;
const MELS: usize = 4;
const AUDIO_CTX: usize = 6;
const TEXT_CTX: usize = 5;
const VOCAB: usize = 7;
const LAYERS: usize = 2;

/// Values exactly representable in f16, different for every variable.
fn values(name: &str, count: usize) -> Vec<f32> {
    let seed = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    (0..count)
        .map(|i| ((seed as usize + i * 13) % 97) as f32 / 8.0 - 6.0)
        .collect()
}

struct Var {
    shape: Vec<usize>,
    dtype: u8,
    data: Vec<u8>,
}

#[derive(Default)]
struct Ct2Builder {
    vars: BTreeMap<String, Var>,
    aliases: Vec<(String, String)>,
}

impl Ct2Builder {
    fn float(&mut self, name: &str, shape: &[usize], f32_weights: bool) {
        let count = shape.iter().product();
        let mut vals = values(name, count);
        // Whisper's key projection has no bias: CTranslate2 stores zeros.
        let d = shape[0]
            / if name.contains("self_attention/linear_0") {
                3
            } else {
                2
            };
        if name.ends_with("self_attention/linear_0/bias") {
            vals[d..2 * d].iter_mut().for_each(|v| *v = 0.0);
        }
        if name.ends_with("/attention/linear_1/bias") {
            vals[..d].iter_mut().for_each(|v| *v = -0.0);
        }
        let (dtype, data) = if f32_weights {
            (0, vals.iter().flat_map(|v| v.to_le_bytes()).collect())
        } else {
            (
                4,
                vals.iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect(),
            )
        };
        self.vars.insert(
            name.to_owned(),
            Var {
                shape: shape.to_vec(),
                dtype,
                data,
            },
        );
    }

    fn scalar(&mut self, name: &str, dtype: u8, data: &[u8]) {
        self.vars.insert(
            name.to_owned(),
            Var {
                shape: vec![],
                dtype,
                data: data.to_vec(),
            },
        );
    }

    fn whisper(f32_weights: bool) -> Ct2Builder {
        let mut b = Ct2Builder::default();
        let mut f = |name: &str, shape: &[usize]| b.float(name, shape, f32_weights);
        let linear = |f: &mut dyn FnMut(&str, &[usize]), scope: &str, rows: usize, cols: usize| {
            f(&format!("{scope}/weight"), &[rows, cols]);
            f(&format!("{scope}/bias"), &[rows]);
        };
        let norm = |f: &mut dyn FnMut(&str, &[usize]), scope: &str| {
            f(&format!("{scope}/gamma"), &[D]);
            f(&format!("{scope}/beta"), &[D]);
        };
        f("encoder/conv1/weight", &[D, MELS, 3]);
        f("encoder/conv1/bias", &[D]);
        f("encoder/conv2/weight", &[D, D, 3]);
        f("encoder/conv2/bias", &[D]);
        f("encoder/position_encodings/encodings", &[AUDIO_CTX, D]);
        norm(&mut f, "encoder/layer_norm");
        f("decoder/embeddings/weight", &[VOCAB, D]);
        f("decoder/position_encodings/encodings", &[TEXT_CTX, D]);
        norm(&mut f, "decoder/layer_norm");
        for side in ["encoder", "decoder"] {
            for i in 0..LAYERS {
                let layer = format!("{side}/layer_{i}");
                linear(
                    &mut f,
                    &format!("{layer}/self_attention/linear_0"),
                    3 * D,
                    D,
                );
                linear(&mut f, &format!("{layer}/self_attention/linear_1"), D, D);
                norm(&mut f, &format!("{layer}/self_attention/layer_norm"));
                if side == "decoder" {
                    linear(&mut f, &format!("{layer}/attention/linear_0"), D, D);
                    linear(&mut f, &format!("{layer}/attention/linear_1"), 2 * D, D);
                    linear(&mut f, &format!("{layer}/attention/linear_2"), D, D);
                    norm(&mut f, &format!("{layer}/attention/layer_norm"));
                }
                linear(&mut f, &format!("{layer}/ffn/linear_0"), FFN, D);
                linear(&mut f, &format!("{layer}/ffn/linear_1"), D, FFN);
                norm(&mut f, &format!("{layer}/ffn/layer_norm"));
            }
        }
        b.scalar("encoder/num_heads", 2, &2i16.to_le_bytes());
        b.scalar("decoder/num_heads", 2, &2i16.to_le_bytes());
        b.scalar("decoder/activation", 1, &[3]);
        b.scalar("decoder/scale_embeddings", 1, &[0]);
        b.aliases.push((
            "decoder/projection/weight".into(),
            "decoder/embeddings/weight".into(),
        ));
        b
    }

    fn bytes(&self, version: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        out.extend_from_slice(&version.to_le_bytes());
        string(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
        for (name, var) in &self.vars {
            string(&mut out, name);
            out.push(var.shape.len() as u8);
            for dim in &var.shape {
                out.extend_from_slice(&(*dim as u32).to_le_bytes());
            }
            out.push(var.dtype);
            out.extend_from_slice(&(var.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&var.data);
        }
        out.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
        for (alias, target) in &self.aliases {
            string(&mut out, alias);
            string(&mut out, target);
        }
        out
    }

    /// Rows `rows` of a 2-D variable, as the f16 bits the file must carry.
    fn f16_rows(&self, name: &str, rows: std::ops::Range<usize>) -> Vec<u8> {
        let var = &self.vars[name];
        let cols: usize = var.shape[1..].iter().product();
        var.data[rows.start * cols * 2..rows.end * cols * 2].to_vec()
    }

    fn f32_values(&self, name: &str, range: std::ops::Range<usize>) -> Vec<u8> {
        let var = &self.vars[name];
        var.data[range.start * 2..range.end * 2]
            .chunks(2)
            .flat_map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32().to_le_bytes())
            .collect()
    }
}

const TOKENIZER: &str = r#"{
  "added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": true}],
  "model": {"type": "BPE", "vocab": {
    "hello": 3, "!": 0, "Ġ": 1, "ĠÐ¿": 2, "": 4, "<|endoftext|>": 5
  }}
}"#;

struct Ggml {
    hparams: Vec<i32>,
    mel_dims: (i32, i32),
    mel: Vec<f32>,
    tokens: Vec<Vec<u8>>,
    /// name → (dims as written, ftype, data)
    tensors: Vec<(String, Vec<i32>, i32, Vec<u8>)>,
}

fn parse_ggml(bytes: &[u8]) -> Ggml {
    let mut at = 0;
    let i32_ = |at: &mut usize| {
        let v = i32::from_le_bytes(bytes[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    };
    assert_eq!(i32_(&mut at) as u32, 0x6767_6d6c);
    let hparams: Vec<i32> = (0..11).map(|_| i32_(&mut at)).collect();
    let mel_dims = (i32_(&mut at), i32_(&mut at));
    let mel = (0..mel_dims.0 * mel_dims.1)
        .map(|_| f32::from_bits(i32_(&mut at) as u32))
        .collect();
    let n_tokens = i32_(&mut at);
    let mut tokens = Vec::new();
    for _ in 0..n_tokens {
        let len = i32_(&mut at) as usize;
        tokens.push(bytes[at..at + len].to_vec());
        at += len;
    }
    let mut tensors = Vec::new();
    while at < bytes.len() {
        let n_dims = i32_(&mut at);
        let name_len = i32_(&mut at) as usize;
        let ftype = i32_(&mut at);
        let dims: Vec<i32> = (0..n_dims).map(|_| i32_(&mut at)).collect();
        let name = String::from_utf8(bytes[at..at + name_len].to_vec()).unwrap();
        at += name_len;
        let len = dims.iter().product::<i32>() as usize * if ftype == 1 { 2 } else { 4 };
        tensors.push((name, dims, ftype, bytes[at..at + len].to_vec()));
        at += len;
    }
    Ggml {
        hparams,
        mel_dims,
        mel,
        tokens,
        tensors,
    }
}

fn convert_bytes(model: &[u8], tokenizer: &str) -> Result<(Conversion, Vec<u8>), ConvertError> {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.bin");
    let tokenizer_path = dir.path().join("tokenizer.json");
    let out = dir.path().join("ggml.bin");
    std::fs::write(&model_path, model).unwrap();
    std::fs::write(&tokenizer_path, tokenizer).unwrap();
    let conversion = ct2_whisper_to_ggml(&model_path, &tokenizer_path, &out)?;
    Ok((conversion, std::fs::read(out).unwrap()))
}

#[test]
fn converts_a_tiny_model() {
    let model = Ct2Builder::whisper(false);
    let (conversion, bytes) = convert_bytes(&model.bytes(6), TOKENIZER).unwrap();
    assert_eq!(conversion.bytes, bytes.len() as u64);
    let ggml = parse_ggml(&bytes);

    let d = D as i32;
    assert_eq!(
        ggml.hparams,
        [
            VOCAB as i32,
            AUDIO_CTX as i32,
            d,
            2,
            2,
            TEXT_CTX as i32,
            d,
            2,
            2,
            MELS as i32,
            1
        ]
    );
    assert_eq!(ggml.mel_dims, (MELS as i32, 201));
    assert_eq!(ggml.mel, mel::mel_filters(16_000, 400, MELS));
    assert_eq!(
        ggml.tokens,
        [&b"!"[..], b" ", " п".as_bytes(), b"hello", b""]
    );
    assert_eq!(conversion.tokens, 5);

    let names: Vec<&str> = ggml.tensors.iter().map(|t| t.0.as_str()).collect();
    let per_encoder_block = 7 + 2 + 4 + 2;
    let per_decoder_block = per_encoder_block + 7 + 2;
    assert_eq!(
        names.len(),
        1 + 4 + LAYERS * per_encoder_block + 2 + 2 + LAYERS * per_decoder_block + 2
    );
    assert_eq!(conversion.tensors, names.len());
    assert_eq!(
        names[..12],
        [
            "encoder.positional_embedding",
            "encoder.conv1.weight",
            "encoder.conv1.bias",
            "encoder.conv2.weight",
            "encoder.conv2.bias",
            "encoder.blocks.0.attn.query.weight",
            "encoder.blocks.0.attn.query.bias",
            "encoder.blocks.0.attn.key.weight",
            "encoder.blocks.0.attn.value.weight",
            "encoder.blocks.0.attn.value.bias",
            "encoder.blocks.0.attn.out.weight",
            "encoder.blocks.0.attn.out.bias",
        ]
    );
    let decoder_start = names
        .iter()
        .position(|n| *n == "decoder.positional_embedding")
        .unwrap();
    assert_eq!(
        names[decoder_start - 2..decoder_start],
        ["encoder.ln_post.weight", "encoder.ln_post.bias"]
    );
    assert_eq!(names[decoder_start + 1], "decoder.token_embedding.weight");
    assert_eq!(
        names[names.len() - 2..],
        ["decoder.ln.weight", "decoder.ln.bias"]
    );
    let block: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("decoder.blocks.1."))
        .collect();
    assert_eq!(
        block,
        [
            "attn.query.weight",
            "attn.query.bias",
            "attn.key.weight",
            "attn.value.weight",
            "attn.value.bias",
            "attn.out.weight",
            "attn.out.bias",
            "attn_ln.weight",
            "attn_ln.bias",
            "cross_attn.query.weight",
            "cross_attn.query.bias",
            "cross_attn.key.weight",
            "cross_attn.value.weight",
            "cross_attn.value.bias",
            "cross_attn.out.weight",
            "cross_attn.out.bias",
            "cross_attn_ln.weight",
            "cross_attn_ln.bias",
            "mlp.0.weight",
            "mlp.0.bias",
            "mlp.2.weight",
            "mlp.2.bias",
            "mlp_ln.weight",
            "mlp_ln.bias",
        ]
    );
    assert!(!names.iter().any(|n| n.ends_with("key.bias")));

    let tensor = |name: &str| {
        ggml.tensors
            .iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    // Dims reversed, weights f16, vectors and embeddings of positions f32.
    let conv1 = tensor("encoder.conv1.weight");
    assert_eq!((conv1.1.as_slice(), conv1.2), (&[3, MELS as i32, d][..], 1));
    assert_eq!(conv1.3, model.vars["encoder/conv1/weight"].data);
    let conv_bias = tensor("encoder.conv2.bias");
    assert_eq!((conv_bias.1.as_slice(), conv_bias.2), (&[1, d][..], 0));
    assert_eq!(conv_bias.3, model.f32_values("encoder/conv2/bias", 0..D));
    let positions = tensor("decoder.positional_embedding");
    assert_eq!(
        (positions.1.as_slice(), positions.2),
        (&[d, TEXT_CTX as i32][..], 0)
    );
    assert_eq!(
        positions.3,
        model.f32_values("decoder/position_encodings/encodings", 0..TEXT_CTX * D)
    );
    let embedding = tensor("decoder.token_embedding.weight");
    assert_eq!(
        (embedding.1.as_slice(), embedding.2),
        (&[d, VOCAB as i32][..], 1)
    );
    let ln = tensor("decoder.blocks.0.mlp_ln.weight");
    assert_eq!((ln.1.as_slice(), ln.2), (&[d][..], 0));
    let mlp = tensor("encoder.blocks.1.mlp.2.weight");
    assert_eq!((mlp.1.as_slice(), mlp.2), (&[FFN as i32, d][..], 1));

    // Q|K|V of self attention split by rows.
    let fused = "encoder/layer_1/self_attention/linear_0";
    for (part, name) in ["query", "key", "value"].iter().enumerate() {
        let t = tensor(&format!("encoder.blocks.1.attn.{name}.weight"));
        assert_eq!((t.1.as_slice(), t.2), (&[d, d][..], 1));
        assert_eq!(
            t.3,
            model.f16_rows(&format!("{fused}/weight"), part * D..(part + 1) * D)
        );
    }
    assert_eq!(
        tensor("encoder.blocks.1.attn.value.bias").3,
        model.f32_values(&format!("{fused}/bias"), 2 * D..3 * D)
    );
    assert_eq!(
        tensor("encoder.blocks.1.attn.query.bias").3,
        model.f32_values(&format!("{fused}/bias"), 0..D)
    );
    // K|V of cross attention.
    let kv = "decoder/layer_0/attention/linear_1";
    assert_eq!(
        tensor("decoder.blocks.0.cross_attn.key.weight").3,
        model.f16_rows(&format!("{kv}/weight"), 0..D)
    );
    assert_eq!(
        tensor("decoder.blocks.0.cross_attn.value.weight").3,
        model.f16_rows(&format!("{kv}/weight"), D..2 * D)
    );
    assert_eq!(
        tensor("decoder.blocks.0.cross_attn.value.bias").3,
        model.f32_values(&format!("{kv}/bias"), D..2 * D)
    );
    assert_eq!(
        tensor("decoder.blocks.0.cross_attn.query.weight").3,
        model.vars["decoder/layer_0/attention/linear_0/weight"].data
    );
    assert_eq!(
        tensor("decoder.blocks.0.cross_attn.out.weight").3,
        model.vars["decoder/layer_0/attention/linear_2/weight"].data
    );
    assert_eq!(
        tensor("decoder.blocks.0.cross_attn_ln.bias").3,
        model.f32_values("decoder/layer_0/attention/layer_norm/beta", 0..D)
    );
}

#[test]
fn output_is_deterministic_and_independent_of_the_weight_type() {
    let f16_model = Ct2Builder::whisper(false).bytes(6);
    let (_, first) = convert_bytes(&f16_model, TOKENIZER).unwrap();
    let (_, second) = convert_bytes(&f16_model, TOKENIZER).unwrap();
    assert_eq!(first, second);
    // The same values stored as f32 (exact in f16) give the same file.
    let (_, from_f32) = convert_bytes(&Ct2Builder::whisper(true).bytes(6), TOKENIZER).unwrap();
    assert_eq!(first, from_f32);
    // Binary version 5 has the same layout.
    let (_, v5) = convert_bytes(&Ct2Builder::whisper(false).bytes(5), TOKENIZER).unwrap();
    assert_eq!(first, v5);
}

#[test]
fn heads_default_to_width_over_64_without_the_scalar() {
    let mut model = Ct2Builder::whisper(false);
    model.vars.remove("encoder/num_heads");
    model.vars.remove("decoder/num_heads");
    // Width 8 < 64: no head count can be derived.
    let error = convert_bytes(&model.bytes(6), TOKENIZER).unwrap_err();
    assert!(error.to_string().contains("голов"), "{error}");
}

#[test]
fn rejects_what_it_cannot_convert() {
    let error =
        |bytes: &[u8], tokenizer: &str| convert_bytes(bytes, tokenizer).unwrap_err().to_string();

    let good = Ct2Builder::whisper(false).bytes(6);
    let message = error(&good[..good.len() - 100], TOKENIZER);
    assert!(message.contains("обрывается"), "{message}");

    let message = error(&7u32.to_le_bytes(), TOKENIZER);
    assert!(message.contains("версия"), "{message}");

    let mut quantized = Ct2Builder::whisper(false);
    let var = quantized
        .vars
        .get_mut("decoder/layer_1/ffn/linear_0/weight")
        .unwrap();
    var.dtype = 1;
    var.data.truncate(var.data.len() / 2);
    let message = error(&quantized.bytes(6), TOKENIZER);
    assert!(message.contains("квантованная"), "{message}");

    let mut biased = Ct2Builder::whisper(false);
    let var = biased
        .vars
        .get_mut("encoder/layer_0/self_attention/linear_0/bias")
        .unwrap();
    var.data[D * 2 + 2] = 0x3c;
    let message = error(&biased.bytes(6), TOKENIZER);
    assert!(message.contains("смещение"), "{message}");

    let mut missing = Ct2Builder::whisper(false);
    missing.vars.remove("decoder/layer_1/ffn/layer_norm/beta");
    let message = error(&missing.bytes(6), TOKENIZER);
    assert!(
        message.contains("decoder/layer_1/ffn/layer_norm/beta"),
        "{message}"
    );

    let message = error(&good, r#"{"model": {"vocab": {"a": 0, "c": 2}}}"#);
    assert!(message.contains("не подряд"), "{message}");
    let message = error(&good, r#"{"model": {"vocab": {"п": 0}}}"#);
    assert!(message.contains("байтовой"), "{message}");
    let message = error(&good, "[]");
    assert!(message.contains("model.vocab"), "{message}");
}
