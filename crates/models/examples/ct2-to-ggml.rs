//! Converts a CTranslate2 Whisper model by hand:
//! `cargo run -p rop-models --example ct2-to-ggml -- model.bin tokenizer.json out.bin`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, tokenizer, out] = args.as_slice() else {
        return Err("usage: ct2-to-ggml MODEL.BIN TOKENIZER.JSON OUT.BIN".into());
    };
    let conversion =
        rop_models::convert::ct2_whisper_to_ggml(model.as_ref(), tokenizer.as_ref(), out.as_ref())?;
    println!("{conversion:#?}");
    Ok(())
}
