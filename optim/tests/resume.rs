//! Resume in a fresh process: 20 steps, save the model and the optimizer state, then a
//! new process (this test binary, run again on the ignored `resume_child` test) rebuilds
//! everything from the files and trains 20 more steps: the parameters equal those of 40
//! steps straight, bit for bit.

use tessera_nn::{load_checkpoint, mse_loss, save_checkpoint, Linear, Module, Params, Var, VarMap};
use tessera_optim::{Adam, Optimizer};
use tessera_tensor::{load_safetensors, save_safetensors, Rng, Tensor};

struct Mlp(Linear, Linear, VarMap);

impl Params for Mlp {
    fn vars(&self) -> &VarMap {
        &self.2
    }
}

/// `nn.Sequential(Linear(4, 8), Tanh(), Linear(8, 2))`, named as PyTorch names it.
fn mlp_from(seed: u64) -> Mlp {
    let ((a, b), vars) = VarMap::build(&mut Rng::seed(seed), |vb| {
        Ok((
            Linear::new(&vb.pp("0"), 4, 8, true)?,
            Linear::new(&vb.pp("2"), 8, 2, true)?,
        ))
    })
    .unwrap();
    Mlp(a, b, vars)
}

fn mlp() -> Mlp {
    mlp_from(42)
}

fn train(model: &Mlp, opt: &mut Adam, steps: usize) {
    let mut rng = Rng::seed(7);
    let x = Var::constant(Tensor::rand(&[16, 4], -1.0, 1.0, &mut rng));
    let y = Var::constant(Tensor::rand(&[16, 2], -1.0, 1.0, &mut rng));
    let params = model.named_parameters();
    for _ in 0..steps {
        for (_, p) in &params {
            p.zero_grad();
        }
        let h = model.0.forward(&x).unwrap().tanh();
        mse_loss(&model.1.forward(&h).unwrap(), &y)
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&params).unwrap();
    }
}

#[test]
fn resumed_training_equals_uninterrupted_training() {
    let straight = mlp();
    let mut opt = Adam::adamw(1e-2);
    train(&straight, &mut opt, 40);

    let dir = tempfile::tempdir().unwrap();
    let (model_path, opt_path) = (
        dir.path().join("model.safetensors"),
        dir.path().join("optim.safetensors"),
    );
    {
        let first = mlp();
        let mut opt = Adam::adamw(1e-2);
        train(&first, &mut opt, 20);
        save_checkpoint(&model_path, &first, None).unwrap();
        let state = opt.state();
        save_safetensors(&opt_path, state.iter().map(|(k, v)| (k.as_str(), v)), None).unwrap();
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "resume_child",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env("TESSERA_RESUME_DIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the resuming process failed");
    let resumed = mlp();
    let final_path = dir.path().join("final.safetensors");
    assert!(load_checkpoint(&final_path, &resumed, true)
        .unwrap()
        .is_clean());
    for ((name, a), (_, b)) in straight
        .named_parameters()
        .iter()
        .zip(resumed.named_parameters())
    {
        assert_eq!(a.value().to_vec(), b.value().to_vec(), "{name}");
    }
}

/// The second half, run by `resumed_training_equals_uninterrupted_training` in its own
/// process (does nothing when run directly).
#[test]
#[ignore = "run in a child process by resumed_training_equals_uninterrupted_training"]
fn resume_child() {
    let Some(dir) = std::env::var_os("TESSERA_RESUME_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let resumed = mlp_from(999);
    assert!(
        load_checkpoint(dir.join("model.safetensors"), &resumed, true)
            .unwrap()
            .is_clean()
    );
    let mut opt = Adam::adamw(1e-2);
    opt.load_state(&load_safetensors(dir.join("optim.safetensors")).unwrap())
        .unwrap();
    train(&resumed, &mut opt, 20);
    save_checkpoint(dir.join("final.safetensors"), &resumed, None).unwrap();
}
