//! Training on synthetic ranked lists: the ensemble learns the relevance rule, survives a
//! save/load round trip score for score, and damaged models are refused.

use cascade_gbdt::{Lists, Model, Params, mean_ndcg, train};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Lists of 50 rows, 4 features; relevance depends non-linearly on features 0 and 1, feature 2
/// is noise and feature 3 a constant.
fn lists(n_lists: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut x, mut y, mut off) = (Vec::new(), Vec::new(), vec![0]);
    for _ in 0..n_lists {
        for _ in 0..50 {
            let (a, b, c): (f32, f32, f32) = (rng.random(), rng.random(), rng.random());
            x.extend([a, b, c, 1.0]);
            let score =
                if a > 0.7 { 2.0 } else { 0.0 } + if b > 0.5 && a > 0.4 { 1.0 } else { 0.0 };
            let label = if score + rng.random::<f32>() * 0.5 > 2.2 {
                2.0
            } else if score > 0.5 {
                1.0
            } else {
                0.0
            };
            y.push(label);
        }
        off.push(y.len());
    }
    (x, y, off)
}

fn names() -> Vec<String> {
    ["a", "b", "noise", "constant"].map(String::from).to_vec()
}

#[test]
fn learns_the_relevance_rule_and_beats_a_random_order() {
    let (x, y, off) = lists(300, 1);
    let (vx, vy, voff) = lists(100, 2);
    let (tr, va) = (Lists::new(&x, 4, &y, &off), Lists::new(&vx, 4, &vy, &voff));
    let p = Params {
        trees: 60,
        min_data_in_leaf: 20,
        ..Params::default()
    };
    let (model, report) = train(&tr, Some(&va), &names(), &p, &|_, _| {}).expect("train");
    let scores: Vec<f32> = (0..va.rows()).map(|r| model.predict(va.row(r))).collect();
    let learned = mean_ndcg(&va, &scores, 10);
    let noise: Vec<f32> = (0..va.rows()).map(|r| va.value(r, 2)).collect();
    let random = mean_ndcg(&va, &noise, 10);
    assert!(learned > 0.9, "validation NDCG@10 {learned}");
    assert!(learned > random + 0.3, "{learned} vs random {random}");
    assert!((report.valid_ndcg.expect("valid") - learned).abs() < 1e-6);
    assert!(report.rounds >= 1 && report.rounds <= 60);
    // The noise and constant features are (nearly) never worth a split.
    let uses = |f: u32| model.nodes.iter().filter(|n| n.feature == f).count();
    assert_eq!(uses(3), 0);
    assert!(uses(0) > uses(2), "{} vs {}", uses(0), uses(2));
}

#[test]
fn save_load_keeps_every_score_and_batch_equals_single() {
    let (x, y, off) = lists(100, 3);
    let tr = Lists::new(&x, 4, &y, &off);
    let p = Params {
        trees: 30,
        min_data_in_leaf: 20,
        ..Params::default()
    };
    let (model, _) = train(&tr, None, &names(), &p, &|_, _| {}).expect("train");
    assert_eq!(model.trees(), 30);
    let loaded = Model::from_json(&model.to_json().expect("json")).expect("load");
    assert_eq!(loaded, model);
    // Batch scoring of a subset with a column map equals row-by-row scoring.
    let rows: Vec<u32> = (0..tr.rows() as u32).step_by(7).collect();
    let mut map = Vec::new();
    loaded
        .bind(&["a", "b", "noise", "constant"], &mut map)
        .expect("bind");
    let mut out = vec![0f32; rows.len()];
    loaded.predict_rows(&x, 4, rows.iter().copied(), &map, &mut out);
    for (&r, &o) in rows.iter().zip(&out) {
        assert_eq!(o, model.predict(tr.row(r as usize)));
    }
    // Columns in another order, through the map.
    let permuted: Vec<f32> = x.chunks(4).flat_map(|c| [c[3], c[2], c[1], c[0]]).collect();
    loaded
        .bind(&["constant", "noise", "b", "a"], &mut map)
        .expect("bind");
    let mut out2 = vec![0f32; rows.len()];
    loaded.predict_rows(&permuted, 4, rows.iter().copied(), &map, &mut out2);
    assert_eq!(out, out2);
}

#[test]
fn damaged_or_mismatched_models_are_refused() {
    let (x, y, off) = lists(40, 4);
    let tr = Lists::new(&x, 4, &y, &off);
    let p = Params {
        trees: 5,
        min_data_in_leaf: 20,
        ..Params::default()
    };
    let (model, _) = train(&tr, None, &names(), &p, &|_, _| {}).expect("train");
    let json = model.to_json().expect("json");
    assert!(Model::from_json(&json[..json.len() / 2]).is_err());
    let mut bad = model.clone();
    bad.nodes[0].left = 1_000_000;
    let err = Model::from_json(&bad.to_json().expect("json")).expect_err("refused");
    assert!(err.to_string().contains("out of range"), "{err}");
    let mut nan = model.clone();
    nan.leaves[0] = f32::NAN;
    assert!(nan.validate().is_err());
    let mut old = model.clone();
    old.format = "cascade-gbdt/0".into();
    assert!(old.validate().is_err());
    let mut map = Vec::new();
    let err = model.bind(&["a", "b"], &mut map).expect_err("schema");
    assert!(err.to_string().contains("noise"), "{err}");
}

#[test]
fn bad_inputs_are_named() {
    let x = vec![0f32; 8];
    let y = vec![0f32, 1.0];
    let p = Params::default();
    let err = train(
        &Lists::new(&x, 4, &y, &[0, 3]),
        None,
        &names(),
        &p,
        &|_, _| {},
    )
    .expect_err("offsets");
    assert!(err.to_string().contains("offsets"), "{err}");
    let bad = Params {
        num_leaves: 1,
        ..Params::default()
    };
    let err = train(
        &Lists::new(&x, 4, &y, &[0, 2]),
        None,
        &names(),
        &bad,
        &|_, _| {},
    )
    .expect_err("params");
    assert!(err.to_string().contains("num_leaves"), "{err}");
}

#[test]
fn path_attributions_add_up_to_the_score_and_credit_the_features_that_matter() {
    let (x, y, off) = lists(200, 3);
    let p = Params {
        trees: 40,
        ..Params::default()
    };
    let (model, _) =
        train(&Lists::new(&x, 4, &y, &off), None, &names(), &p, &|_, _| {}).expect("train");
    assert_eq!(model.leaf_counts.len(), model.leaves.len());
    let exp = model.expectations();
    let (mut credit_ab, mut credit_rest) = (0f32, 0f32);
    for r in 0..200 {
        let row = &x[r * 4..r * 4 + 4];
        let mut out = [0f32; 4];
        let bias = model.contributions(&exp, row, &mut out);
        let total: f32 = bias + out.iter().sum::<f32>();
        assert!(
            (total - model.predict(row)).abs() < 1e-3,
            "row {r}: {total} vs {}",
            model.predict(row)
        );
        credit_ab += out[0].abs() + out[1].abs();
        credit_rest += out[2].abs() + out[3].abs();
        // The constant feature never splits, so it never gets credit.
        assert_eq!(out[3], 0.0);
    }
    assert!(
        credit_ab > 3.0 * credit_rest,
        "relevant features {credit_ab} vs noise {credit_rest}"
    );
}
