//! The DDPM schedule and step against diffusers' `DDPMScheduler` (fixture `ddpm_linear_1000`,
//! tests/fixtures/README.md): betas and ᾱ in f64 and in diffusers' own f32, and four
//! `step()` results, which the gDDCM move at p = ½ must reproduce (SPEC 2.3: η(½) = 1 is
//! DDIM η = 1, i.e. DDPM's ancestral step, when the codeword is the scheduler's variance noise).

mod support;

use candle_core::{DType, Tensor};
use gddcm::family::{Denoiser, Network, RegressionDenoiser};
use gddcm::marginal::{DdpmSchedule, Marginal, Mixing};

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn worst(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// A "network" that returns the scheduler's `model_output` whatever it is given.
struct Fixed(Tensor);

impl Network for Fixed {
    fn forward(&self, _x: &Tensor, _labels: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.0.clone())
    }
}

#[test]
fn linear_schedule_matches_diffusers() {
    let meta = support::json("ddpm_linear_1000.json");
    let cfg = &meta["constructor_config"];
    assert_eq!(cfg["beta_schedule"], "linear");
    let sched = DdpmSchedule::linear(
        cfg["num_train_timesteps"].as_u64().unwrap() as usize,
        cfg["beta_start"].as_f64().unwrap(),
        cfg["beta_end"].as_f64().unwrap(),
    );
    assert_eq!(sched, DdpmSchedule::cifar10());
    let fx = support::tensors("ddpm_linear_1000");
    let betas: Vec<f64> = (0..1000).map(|i| sched.beta(i)).collect();
    let alpha_bar: Vec<f64> = (0..1000).map(|t| sched.alpha_bar(t as f64)).collect();
    let e = worst(&betas, &f64s(&fx["out.betas"]));
    assert!(e <= 1e-12, "betas vs f64 reference: {e:e}");
    let e = worst(&alpha_bar, &f64s(&fx["out.alphas_cumprod"]));
    assert!(e <= 1e-12, "alphas_cumprod vs f64 reference: {e:e}");
    // diffusers keeps f32 copies (linspace and cumprod in f32): ours are within f32 accuracy.
    let e = worst(&betas, &f64s(&fx["out.betas_f32"]));
    assert!(e <= 1e-6, "betas vs diffusers' f32: {e:e}");
    let e = worst(&alpha_bar, &f64s(&fx["out.alphas_cumprod_f32"]));
    assert!(e <= 1e-6, "alphas_cumprod vs diffusers' f32: {e:e}");
}

/// Runs the four steps in `dtype` against diffusers' results with `suffix` ("": its f32 run;
/// "_f64": the same code on f64 tensors): errors at most `tol`.
fn check_steps(dtype: DType, suffix: &str, tol: f64) {
    let fx = support::tensors("ddpm_linear_1000");
    let x = &fx["in.step_sample"].to_dtype(dtype).unwrap();
    let eps = &fx["in.step_model_output"].to_dtype(dtype).unwrap();
    assert!(x.dim(0).unwrap() > 1, "fixture batch must be > 1");
    let marginal = Marginal::Ddpm(DdpmSchedule::cifar10());
    // diffusers' step clips x0 to [-1, 1] (clip_sample) and recomputes nothing else: the
    // denoiser's [D] clipping does the same and re-derives ε from the clipped x0 (SPEC 1.1).
    let den = RegressionDenoiser::ddpm(Box::new(Fixed(eps.clone())), marginal.clone(), true);
    for t in [0u32, 1, 500, 999] {
        let pred = den.predict(x, t as f64).unwrap();
        let want_x0 = &fx[&format!("out.step_t{t}.pred_original_sample{suffix}")];
        let e = worst(&f64s(&pred.x0), &f64s(want_x0));
        assert!(e <= tol, "{dtype:?}, t = {t}: pred_original_sample{suffix} {e:e} > {tol:e}");
        let c = marginal.step(t as f64, t as f64 - 1.0, t as f64 - 1.0, 0.5, Mixing::BigSigma);
        let z = &fx[&format!("in.step_t{t}.variance_noise")].to_dtype(dtype).unwrap();
        let next = ((&pred.x0 * c.s_new).unwrap() + (&pred.eps * c.eps_coef).unwrap()).unwrap();
        let next = (next + (z * c.noise_std).unwrap()).unwrap();
        let want = &fx[&format!("out.step_t{t}.prev_sample{suffix}")];
        let e = worst(&f64s(&next), &f64s(want));
        eprintln!("{dtype:?} t = {t}: prev_sample{suffix} max |diff| {e:.2e}");
        assert!(e <= tol, "{dtype:?}, t = {t}: prev_sample{suffix} {e:e} > {tol:e}");
        if t == 0 {
            assert_eq!(c.noise_std, 0.0, "the last step adds no noise");
        }
    }
    // The same step at another p is not the scheduler's: the check can fail.
    let c = marginal.step(500.0, 499.0, 499.0, 0.25, Mixing::BigSigma);
    let pred = den.predict(x, 500.0).unwrap();
    let z = &fx["in.step_t500.variance_noise"].to_dtype(dtype).unwrap();
    let next = ((&pred.x0 * c.s_new).unwrap() + (&pred.eps * c.eps_coef).unwrap()).unwrap();
    let next = (next + (z * c.noise_std).unwrap()).unwrap();
    assert!(worst(&f64s(&next), &f64s(&fx["out.step_t500.prev_sample"])) > 1e-3);
}

#[test]
fn p_half_step_is_ddpm_scheduler_step() {
    // In f64 the move is diffusers' step to f64 rounding.
    check_steps(DType::F64, "_f64", 1e-9);
    // In f32 (how the engine runs) against the f64 step, and against diffusers' own f32 run,
    // which is 5.5e-5 off at t = 1 (it recomputes β_t = 1 − ᾱ_t/ᾱ_{t−1} in f32) and whose x0
    // divides by √ᾱ_999 = 0.0064 (fixture JSON, measured_max_abs).
    check_steps(DType::F32, "_f64", 1e-5);
    check_steps(DType::F32, "", 1e-4);
}
