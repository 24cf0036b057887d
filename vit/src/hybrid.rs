//! The hybrid model's CNN (the paper's section 3.1; see [`Hybrid`]): a ResNet stem and
//! stages of convolution, batch norm and ReLU, whose feature map the patch embedding
//! cuts into patches.

use tessera_nn::{BatchNorm2d, Conv2d, Init, MaxPool2d, Module, Var, VarBuilder};
use tessera_tensor::Window2d;

use crate::config::Hybrid;

/// A convolution without bias, batch norm and ReLU (`conv`, `norm`).
///
/// # Shapes
/// `[B, in, H, W] -> [B, out, H/stride, W/stride]`.
#[derive(Debug)]
struct ConvBn {
    conv: Conv2d,
    norm: BatchNorm2d,
}

impl ConvBn {
    /// He (fan-out) initialisation, as ResNets use.
    fn new(
        vb: &VarBuilder,
        (i, o, k, s): (usize, usize, usize, usize),
    ) -> tessera_nn::Result<ConvBn> {
        Ok(ConvBn {
            conv: Conv2d::with_init(
                &vb.pp("conv"),
                [i, o, k, s, k / 2],
                Init::KaimingNormalFanOut,
                None,
            )?,
            norm: BatchNorm2d::new(&vb.pp("norm"), o)?,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Var) -> tessera_nn::Result<Var> {
        self.forward_t(x, false)
    }

    fn forward_t(&self, x: &Var, train: bool) -> tessera_nn::Result<Var> {
        Ok(self.norm.forward_t(&self.conv.forward(x)?, train)?.relu())
    }
}

/// The CNN of a hybrid ViT: stem (`stem.conv`, `stem.norm`), a 3×3 stride-2 max-pool,
/// stages (`stages.{i}.conv`, `stages.{i}.norm`), under timm's `patch_embed.backbone`.
///
/// # Shapes
/// `[B, C, H, W] -> [B, out_channels, H/reduction, W/reduction]` ([`Hybrid`]).
#[derive(Debug)]
pub(crate) struct Backbone {
    stem: ConvBn,
    pool: MaxPool2d,
    stages: Vec<ConvBn>,
}

impl Backbone {
    pub(crate) fn new(vb: &VarBuilder, h: Hybrid, in_chans: usize) -> tessera_nn::Result<Backbone> {
        let convs = h.convs(in_chans);
        let stages = vb.pp("stages");
        Ok(Backbone {
            stem: ConvBn::new(&vb.pp("stem"), convs[0])?,
            pool: MaxPool2d {
                window: Window2d::square(3).with_stride(2).with_padding(1),
            },
            stages: convs[1..]
                .iter()
                .enumerate()
                .map(|(i, &c)| ConvBn::new(&stages.pp(i), c))
                .collect::<tessera_nn::Result<_>>()?,
        })
    }
}

impl Backbone {
    /// The stem's convolution, the first to see the image.
    pub(crate) fn first_conv_mut(&mut self) -> &mut Conv2d {
        &mut self.stem.conv
    }
}

impl Module for Backbone {
    fn forward(&self, x: &Var) -> tessera_nn::Result<Var> {
        self.forward_t(x, false)
    }

    fn forward_t(&self, x: &Var, train: bool) -> tessera_nn::Result<Var> {
        let mut x = self.pool.forward(&self.stem.forward_t(x, train)?)?;
        for s in &self.stages {
            x = s.forward_t(&x, train)?;
        }
        Ok(x)
    }
}
