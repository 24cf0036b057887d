//! Starting from published weights: a tessera checkpoint, or a timm ViT state dict as
//! timm publishes it (`model.safetensors`, timm's names, no metadata), with the
//! architecture from a preset or read off the tensors' shapes. What is trained from it
//! records where it came from ([`Source`]).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_nn::{VarBuilder, VarMap};
use tessera_tensor::SafeTensorsFile;

use crate::checkpoint::{load_weights, read_config, KIND_KEY};
use crate::{Error, GlobalPool, Hybrid, Result, VisionTransformer, VitConfig, MODEL_KIND};

/// The metadata key under which a model trained from pretrained weights records its
/// [`Source`] (JSON).
pub const SOURCE_KEY: &str = "init_from";

/// How the architecture of a state dict is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch<'a> {
    /// Read off the tensors' shapes ([`infer_config`]); the number of heads, which no
    /// shape shows, from the preset of the same width and depth unless given.
    Infer {
        /// Attention heads, when no preset has the file's width and depth.
        num_heads: Option<usize>,
    },
    /// A preset by timm's or the paper's name ([`VitConfig::preset`]); the input
    /// channels and the classes are the file's.
    Preset(&'a str),
}

/// The format of a pretrained file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// A model or training checkpoint written by tessera.
    Tessera,
    /// A timm state dict (timm's names, no tessera metadata).
    Timm,
}

impl std::fmt::Display for SourceFormat {
    /// `"a tessera checkpoint"` or `"a timm state dict"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceFormat::Tessera => "a tessera checkpoint",
            SourceFormat::Timm => "a timm state dict",
        })
    }
}

/// Where a model's starting weights came from, as its checkpoints record it
/// ([`SOURCE_KEY`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The file, as given.
    pub path: String,
    /// Its format.
    pub format: SourceFormat,
    /// The preset named for it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The input size it was trained at.
    pub img_size: usize,
    /// Its number of classes (0: no head).
    pub num_classes: usize,
    /// Its input channels.
    pub in_chans: usize,
}

/// A model built from a pretrained file.
#[derive(Debug)]
pub struct Pretrained {
    /// The model, exactly as the file holds it.
    pub model: VisionTransformer,
    /// Where it came from.
    pub source: Source,
    /// The file's metadata (a tessera checkpoint's class names, data, ...; empty or
    /// `{"format": "pt"}` for a timm file).
    pub metadata: HashMap<String, String>,
}

/// The model in `path`: a tessera checkpoint (model or training file; `arch` may name
/// a preset, which must then agree with the checkpoint) or a timm ViT state dict. Files
/// of other tessera models, files that are not a ViT's weights, a preset that does not
/// fit the tensors, missing or extra tensors and wrong shapes are errors naming the
/// file, the keys and the shapes.
///
/// ```
/// use std::collections::HashMap;
/// use tessera_tensor::Rng;
/// use tessera_vit::{load_pretrained, Arch, SourceFormat, VisionTransformer, VitConfig};
/// let c = VitConfig { img_size: 32, patch_size: 16, num_classes: 10, ..VitConfig::vit_tiny_patch16_224() };
/// let model = VisionTransformer::new(c, &mut Rng::seed(0))?;
/// let dir = std::env::temp_dir().join(format!("tessera-vit-pre-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// // A bare state dict, as timm writes it: names and tensors, no metadata.
/// let path = dir.join("model.safetensors");
/// tessera_nn::Params::vars(&model).save(&path, None)?;
/// let p = load_pretrained(&path, Arch::Infer { num_heads: None })?;
/// assert_eq!(p.source.format, SourceFormat::Timm);
/// assert_eq!(*p.model.config(), c); // 3 heads: the width and depth of vit_tiny
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), tessera_vit::Error>(())
/// ```
pub fn load_pretrained(path: impl AsRef<Path>, arch: Arch<'_>) -> Result<Pretrained> {
    let path = path.as_ref();
    let file = SafeTensorsFile::open(path)?;
    let metadata = file.metadata()?;
    let preset = match arch {
        Arch::Preset(name) => Some((name, VitConfig::preset(name)?)),
        Arch::Infer { .. } => None,
    };
    let source = |format, c: &VitConfig| Source {
        path: path.display().to_string(),
        format,
        preset: preset.map(|(n, _)| n.to_string()),
        img_size: c.img_size,
        num_classes: c.num_classes,
        in_chans: c.in_chans,
    };
    match metadata.get(KIND_KEY).map(String::as_str) {
        Some(MODEL_KIND) => {
            let (model, metadata) = crate::load_model(path)?;
            let c = *model.config();
            if let Some((name, p)) = preset {
                let arch = |c: &VitConfig| {
                    (
                        c.patch_size,
                        c.embed_dim,
                        c.depth,
                        c.num_heads,
                        c.mlp_hidden_dim(),
                    )
                };
                if arch(&p) != arch(&c) {
                    return Err(weights(
                        path,
                        format!(
                            "the checkpoint's model ({}) is not preset {name} ({})",
                            describe(&c),
                            describe(&p)
                        ),
                    ));
                }
            }
            let source = source(SourceFormat::Tessera, &c);
            return Ok(Pretrained {
                model,
                source,
                metadata,
            });
        }
        Some(kind) if kind.starts_with("tessera-") => {
            // read_config words the error the way every checkpoint reader does.
            read_config(path)?;
        }
        _ => {}
    }
    let found = infer_config(&file, None);
    let config = match (preset, arch) {
        (Some((_, p)), _) => {
            // The preset gives the architecture; the file its channels and classes.
            let shapes: HashMap<String, Vec<usize>> = file.shapes().into_iter().collect();
            let dim = |k: &str, i: usize| shapes.get(k).and_then(|s| s.get(i)).copied();
            VitConfig {
                in_chans: dim("patch_embed.proj.weight", 1).unwrap_or(p.in_chans),
                num_classes: dim("head.weight", 0).unwrap_or(0),
                ..p
            }
        }
        (None, Arch::Infer { num_heads }) => infer_config(&file, num_heads)?,
        (None, Arch::Preset(_)) => unreachable!("a preset is resolved above"),
    };
    config.validate()?;
    if let Some((name, _)) = preset {
        // The tensors that fix the shape first, before anything is allocated.
        let shapes: HashMap<String, Vec<usize>> = file.shapes().into_iter().collect();
        let wrong: Vec<String> = key_shapes(&config)
            .into_iter()
            .filter(|(k, s)| shapes.get(k) != Some(s))
            .map(|(k, s)| match shapes.get(&k) {
                Some(f) => format!("{k}: preset has shape {s:?}, file has {f:?}"),
                None => format!("{k} {s:?} is not in the file"),
            })
            .collect();
        if !wrong.is_empty() {
            let hint = match &found {
                Ok(c) => format!("; its tensors are those of {}", describe(c)),
                Err(_) => String::new(),
            };
            return Err(weights(
                path,
                format!("does not fit preset {name} ({}){hint}", wrong.join("; ")),
            ));
        }
    }
    // The shape comes from the file's own tensors (or a preset checked against them
    // above), so the model is about as large as the file; what else is missing or in
    // excess the load reports, key by key.
    let vars = VarMap::new();
    let model = VisionTransformer::build(&VarBuilder::zeros(&vars), config)?;
    if let Err(e) = load_weights(&vars, path) {
        return Err(match (e, preset) {
            (Error::Nn(tessera_nn::Error::Checkpoint { report, .. }), Some((name, _))) => {
                let hint = match &found {
                    Ok(c) => format!("; its tensors are those of {}", describe(c)),
                    Err(_) => String::new(),
                };
                weights(path, format!("does not fit preset {name} ({report}){hint}"))
            }
            (e, _) => e,
        });
    }
    let source = source(SourceFormat::Timm, &config);
    Ok(Pretrained {
        model,
        source,
        metadata,
    })
}

/// The tensors whose shapes fix a configuration: the patch projection (D, C, P), the
/// position embedding (the grid), the first block's MLP and the last block (the depth).
fn key_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, p) = (c.embed_dim, c.patch_size);
    let cin = c.hybrid.map_or(c.in_chans, |h| h.out_channels());
    vec![
        ("patch_embed.proj.weight".into(), vec![d, cin, p, p]),
        ("pos_embed".into(), vec![1, c.num_tokens(), d]),
        (
            "blocks.0.mlp.fc1.weight".into(),
            vec![c.mlp_hidden_dim(), d],
        ),
        (
            format!("blocks.{}.norm1.weight", c.depth.max(1) - 1),
            vec![d],
        ),
    ]
}

/// `D 768, depth 12, heads 12, MLP 3072, patch 16, 224x224, 1000 classes`.
fn describe(c: &VitConfig) -> String {
    format!(
        "D {}, depth {}, heads {}, MLP {}, patch {}, {}x{}, {} classes",
        c.embed_dim,
        c.depth,
        c.num_heads,
        c.mlp_hidden_dim(),
        c.patch_size,
        c.img_size,
        c.img_size,
        c.num_classes
    )
}

fn weights(path: &Path, reason: String) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        reason,
    }
}

/// The configuration of the timm ViT state dict `file`, read off its tensors' shapes:
/// the patch projection gives `D`, the channels and `P`; the blocks the depth and the
/// MLP width; the position embedding the patch grid and so the image size; `fc_norm`
/// mean pooling; the head the classes (0 without one); a `patch_embed.backbone.stem`
/// tessera's hybrid stem. The number of heads shows in no shape: it is `num_heads`, or
/// that of the preset with the same width and depth, or an error saying so.
pub fn infer_config(file: &SafeTensorsFile, num_heads: Option<usize>) -> Result<VitConfig> {
    let path = file.path();
    let shapes: HashMap<String, Vec<usize>> = file.shapes().into_iter().collect();
    let bad = |reason: String| weights(path, reason);
    let shape = |k: &str| shapes.get(k).map(Vec::as_slice);
    let proj = "patch_embed.proj.weight";
    let Some(&[d, cin, p, pw]) = shape(proj) else {
        let mut names: Vec<&String> = shapes.keys().collect();
        names.sort();
        let some: Vec<&str> = names.iter().take(4).map(|s| s.as_str()).collect();
        let more = if names.len() > 4 { ", ..." } else { "" };
        return Err(bad(match shape(proj) {
            Some(s) => format!("{proj} has shape {s:?}; a patch projection is [D, C, P, P]"),
            None => format!(
                "no {proj:?}: not the weights of a Vision Transformer (the file holds {} \
                 tensors: {}{more})",
                names.len(),
                some.join(", ")
            ),
        }));
    };
    if p != pw {
        return Err(bad(format!(
            "{proj} has shape {:?}: patches of {p}x{pw} are not square",
            [d, cin, p, pw]
        )));
    }
    let (in_chans, hybrid) = match shape("patch_embed.backbone.stem.conv.weight") {
        Some(&[width, c, 7, 7]) => {
            let stages = (0..)
                .take_while(|i| {
                    shapes.contains_key(&format!("patch_embed.backbone.stages.{i}.conv.weight"))
                })
                .count();
            let h = Hybrid { width, stages };
            if h.out_channels() != cin {
                return Err(bad(format!(
                    "the hybrid stem of width {width} with {stages} stages gives {} channels; \
                     {proj} takes {cin}",
                    h.out_channels()
                )));
            }
            (c, Some(h))
        }
        Some(s) => {
            return Err(bad(format!(
                "patch_embed.backbone.stem.conv.weight has shape {s:?}; the hybrid stem's \
                 first convolution is [width, C, 7, 7]"
            )))
        }
        None if shapes
            .keys()
            .any(|k| k.starts_with("patch_embed.backbone.")) =>
        {
            return Err(bad(
                "its patch embedding has a CNN backbone other than tessera's hybrid stem \
                 (timm's ResNet hybrids, such as vit_base_r50_s16_384, are not built here)"
                    .to_string(),
            ))
        }
        None => (cin, None),
    };
    let depth = (0..)
        .take_while(|i| shapes.contains_key(&format!("blocks.{i}.attn.qkv.weight")))
        .count();
    let Some(&[mlp, _]) = shape("blocks.0.mlp.fc1.weight") else {
        return Err(bad(
            "no blocks.0.mlp.fc1.weight [MLP, D]: no encoder block of timm's layout".to_string(),
        ));
    };
    let class_token = shapes.contains_key("cls_token");
    let global_pool = match (shapes.contains_key("fc_norm.weight"), class_token) {
        (false, _) => GlobalPool::Token,
        (true, false) => GlobalPool::Avg,
        (true, true) => {
            return Err(bad(
                "mean pooling with a class token (fc_norm and cls_token) is not a model \
                 tessera builds"
                    .to_string(),
            ))
        }
    };
    let Some(&[1, tokens, _]) = shape("pos_embed") else {
        return Err(bad("no pos_embed [1, T, D]".to_string()));
    };
    let n = tokens.saturating_sub(usize::from(class_token));
    let grid = n.isqrt();
    if grid * grid != n || n == 0 {
        return Err(bad(format!(
            "pos_embed has {tokens} positions: {n} patch positions are not a square grid"
        )));
    }
    let img_size = grid * p * hybrid.map_or(1, |h| h.reduction());
    let num_classes = match shape("head.weight") {
        Some(&[k, _]) => k,
        _ => 0,
    };
    let num_heads = match num_heads {
        Some(h) => h,
        None => VitConfig::presets()
            .iter()
            .map(|p| (p.config)())
            .find(|c| c.embed_dim == d && c.depth == depth)
            .map(|c| c.num_heads)
            .ok_or_else(|| {
                bad(format!(
                    "the number of attention heads shows in no tensor, and no preset has \
                     width {d} and depth {depth}: name a preset or give the heads"
                ))
            })?,
    };
    let config = VitConfig {
        img_size,
        patch_size: p,
        in_chans,
        embed_dim: d,
        depth,
        num_heads,
        mlp_ratio: 4.0,
        mlp_dim: (mlp != 4 * d).then_some(mlp),
        num_classes,
        global_pool,
        eps: 1e-6,
        hybrid,
    };
    config.validate()?;
    Ok(config)
}

/// The parameters of each of timm's layer-decay groups (`param_groups_layer_decay` with
/// the ViT's `group_matcher`) with its learning-rate factor `decay^(depth + 1 - layer)`:
/// layer 0 is the patch embedding (with any hybrid stem), the class token and the
/// position embedding; block `i` is layer `i + 1`, and the final `norm` goes with the
/// last block; the head (and `fc_norm`) are layer `depth + 1` (factor 1).
pub fn layer_decay_scales(model: &VisionTransformer, decay: f64) -> Vec<(String, f64)> {
    let depth = model.config().depth;
    let prefix = model.param_name("x");
    let prefix = prefix.strip_suffix('x').unwrap_or_default();
    let layer = |name: &str| -> usize {
        let name = name.strip_prefix(prefix).unwrap_or(name);
        if name.starts_with("patch_embed") || name == "cls_token" || name == "pos_embed" {
            0
        } else if name.starts_with("norm.") {
            // timm's matcher puts the final norm with the last block.
            depth
        } else if let Some(rest) = name.strip_prefix("blocks.") {
            rest.split('.')
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .map_or(depth + 1, |i| i + 1)
        } else {
            depth + 1
        }
    };
    use tessera_nn::Params;
    model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| {
            let l = layer(&n);
            (n, decay.powi((depth + 1 - l) as i32))
        })
        .collect()
}

/// The names of the head's parameters (what trains when the backbone is frozen).
pub(crate) fn head_names(model: &VisionTransformer) -> BTreeSet<String> {
    use tessera_nn::Params;
    let head = model.param_name("head");
    let below = format!("{head}.");
    model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| *n == head || n.starts_with(&below))
        .collect()
}

/// What a fine-tuning run needs of a pretrained model (the paper's section 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FineTune {
    /// The input size (a different one resamples the position embeddings).
    pub img_size: usize,
    /// The images' channels (a different count adapts the first convolution).
    pub in_chans: usize,
    /// The classes of the new task (a different count gets a new, zero head).
    pub num_classes: usize,
    /// A new zero head even where the count of classes is the same (a new label set).
    pub new_head: bool,
}

impl FineTune {
    /// Adapts `model` to the task: resamples the position embeddings to `img_size` as
    /// timm's `resample_abs_pos_embed` ([`VisionTransformer::resample_pos_embed`]),
    /// adapts the first convolution to `in_chans` as timm's `adapt_input_conv`
    /// ([`VisionTransformer::adapt_in_chans`]) and attaches a zero-initialised head of
    /// `num_classes` outputs ([`VisionTransformer::zero_head`]) where the count differs
    /// or `new_head` asks for it. Returns what it changed, one line each.
    ///
    /// ```
    /// use tessera_tensor::Rng;
    /// use tessera_vit::{FineTune, VisionTransformer, VitConfig};
    /// let c = VitConfig { img_size: 32, patch_size: 16, num_classes: 1000, ..VitConfig::vit_tiny_patch16_224() };
    /// let mut model = VisionTransformer::new(c, &mut Rng::seed(0))?;
    /// let task = FineTune { img_size: 48, in_chans: 1, num_classes: 10, new_head: false };
    /// let changes = task.apply(&mut model)?;
    /// assert_eq!(changes.len(), 3);
    /// assert_eq!((model.config().img_size, model.config().in_chans, model.config().num_classes), (48, 1, 10));
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn apply(&self, model: &mut VisionTransformer) -> Result<Vec<String>> {
        let mut changes = Vec::new();
        let c = *model.config();
        if self.img_size != c.img_size {
            model.resample_pos_embed(self.img_size)?;
            let g = model.config().grid();
            changes.push(format!(
                "position embeddings resampled from {0}x{0} to {g}x{g} patches (images {1}x{1} -> {2}x{2})",
                c.grid(),
                c.img_size,
                self.img_size
            ));
        }
        if self.in_chans != c.in_chans {
            model.adapt_in_chans(self.in_chans)?;
            changes.push(format!(
                "first convolution adapted from {} to {} input channels",
                c.in_chans, self.in_chans
            ));
        }
        if self.new_head || self.num_classes != c.num_classes {
            model.zero_head(self.num_classes)?;
            changes.push(format!(
                "new zero-initialised head of {} classes (was {})",
                self.num_classes, c.num_classes
            ));
        }
        Ok(changes)
    }
}
