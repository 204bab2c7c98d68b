//! The one table of key spellings that differ from our field paths.
//!
//! Our module tree mirrors diffusers/transformers key names, so almost every key loads 1:1.
//! The exceptions live here, each with the reason:
//! - legacy VAE attention (`query`/`key`/`value`/`proj_attn`, stored as 1×1 convs), which
//!   diffusers renames on load (`_convert_deprecated_attention_blocks`);
//! - buffers that some checkpoints persist but no model reads (`position_ids`).

/// Legacy VAE attention names → current diffusers names (1×1 conv weights become linear).
pub fn legacy_vae_attention(key: &str, shape: &[usize]) -> Option<(String, Vec<usize>)> {
    const RENAMES: [(&str, &str); 4] = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    if !key.contains(".attentions.") {
        return None;
    }
    let (from, to) = RENAMES.iter().find(|(from, _)| key.contains(from))?;
    let new_key = key.replacen(from, to, 1);
    let new_shape = match shape {
        [o, i, 1, 1] => vec![*o, *i],
        other => other.to_vec(),
    };
    Some((new_key, new_shape))
}

/// Buffers that checkpoints may carry and no model reads; consumed without loading.
pub const IGNORED_BUFFERS: [&str; 1] = ["text_model.embeddings.position_ids"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_legacy_vae_attention() {
        let (k, s) = legacy_vae_attention(
            "decoder.mid_block.attentions.0.proj_attn.weight",
            &[8, 8, 1, 1],
        )
        .unwrap();
        assert_eq!(k, "decoder.mid_block.attentions.0.to_out.0.weight");
        assert_eq!(s, vec![8, 8]);
        let (k, s) = legacy_vae_attention("encoder.mid_block.attentions.0.key.bias", &[8]).unwrap();
        assert_eq!(k, "encoder.mid_block.attentions.0.to_k.bias");
        assert_eq!(s, vec![8]);
        assert!(
            legacy_vae_attention("decoder.mid_block.attentions.0.to_q.weight", &[8, 8]).is_none()
        );
        assert!(legacy_vae_attention("decoder.conv_in.weight", &[8, 4, 3, 3]).is_none());
    }
}
