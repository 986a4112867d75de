//! Model bundles: what is saved loads back identical, and damage is detected.

use cascade_index::bundle::{DataRange, FORMAT, Params, TrainMetrics, models_dir};
use cascade_index::{
    AlsConfig, AnnConfig, AnnIndex, Bundle, BundleError, CoVisitation, Interactions, Manifest,
};

fn bundle(version: &str) -> Bundle {
    let mut t = Vec::new();
    for u in 0..30u32 {
        for i in 0..8u32 {
            t.push((u, (u % 3) * 8 + i, 1.0));
        }
    }
    let data = Interactions::from_triples(30, t);
    let als = AlsConfig {
        factors: 8,
        iterations: 5,
        ..Default::default()
    };
    let emb = cascade_index::als::train(&data, 24, &als, |_| {});
    let ann =
        AnnIndex::build(&emb.items, emb.dim, AnnConfig::default(), |_| true, |_| {}).expect("ann");
    let covis = CoVisitation::from_rows((0..24).map(|i| vec![((i + 1) % 24, 0.5)]).collect());
    Bundle {
        manifest: Manifest {
            format: FORMAT,
            version: version.into(),
            created_at: "2026-11-26T08:00:00Z".into(),
            data: DataRange {
                events: 240,
                users: 30,
                items: 24,
                interactions: 240,
                ..Default::default()
            },
            params: Params {
                als,
                hnsw: Some(AnnConfig::default()),
                ..Default::default()
            },
            metrics: TrainMetrics {
                als_seconds: 0.1,
                ..Default::default()
            },
            files: Vec::new(),
        },
        item_ids: (0..24).map(|i| format!("i{i}")).collect(),
        user_ids: (0..30).map(|u| format!("u{u}")).collect(),
        embeddings: emb,
        covis: covis.clone(),
        item_neighbors: covis,
        ann: Some(ann),
        ranker: None,
    }
}

#[test]
fn save_then_load_gives_back_the_same_bundle() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = models_dir(tmp.path());
    assert!(Bundle::current(&dir).expect("no models yet").is_none());
    let mut b = bundle("v1");
    let path = b.save(&dir).expect("save");
    assert_eq!(Bundle::current(&dir).expect("current"), Some(path.clone()));
    let back = Bundle::load(&path, AnnConfig::default()).expect("load");
    assert_eq!(back.manifest, b.manifest);
    assert_eq!(
        back.manifest.files.len(),
        5,
        "ids, embeddings, covis, neighbours, index"
    );
    assert_eq!(back.embeddings, b.embeddings);
    assert_eq!(back.covis, b.covis);
    assert_eq!(back.item_neighbors, b.item_neighbors);
    assert_eq!(
        (back.item_ids.clone(), back.user_ids.clone()),
        (b.item_ids.clone(), b.user_ids.clone())
    );
    let (a, l) = (b.ann.as_ref().expect("a"), back.ann.as_ref().expect("b"));
    let q = back.embeddings.user(4).expect("user");
    assert_eq!(a.search(q, 5).expect("a"), l.search(q, 5).expect("b"));
    // A second bundle becomes current; the first stays on disk.
    let p2 = bundle("v2").save(&dir).expect("save v2");
    assert_eq!(Bundle::current(&dir).expect("current"), Some(p2));
    assert!(path.join("manifest.json").exists());
    assert!(
        bundle("v2").save(&dir).is_err(),
        "versions are never overwritten"
    );
}

#[test]
fn a_damaged_file_or_a_newer_format_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = bundle("v1").save(&models_dir(tmp.path())).expect("save");
    let f = path.join("embeddings.postcard");
    let mut bytes = std::fs::read(&f).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f, bytes).expect("write");
    let err = Bundle::load(&path, AnnConfig::default()).expect_err("damaged");
    assert!(
        matches!(&err, BundleError::Invalid { msg, .. } if msg == "checksum mismatch"),
        "{err}"
    );

    // The index file is checked while it is read.
    let path = bundle("v1b").save(&models_dir(tmp.path())).expect("save");
    let f = path.join("items.hnsw");
    let mut bytes = std::fs::read(&f).expect("read");
    let at = bytes.len() - 3;
    bytes[at] ^= 0x55;
    std::fs::write(&f, bytes).expect("write");
    let err = Bundle::load(&path, AnnConfig::default()).expect_err("damaged index");
    assert!(err.to_string().ends_with("checksum mismatch"), "{err}");

    let path = bundle("v2").save(&models_dir(tmp.path())).expect("save");
    let mf = path.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mf).expect("r")).expect("j");
    m["format"] = (FORMAT + 1).into();
    std::fs::write(&mf, serde_json::to_vec(&m).expect("j")).expect("w");
    let err = Bundle::load(&path, AnnConfig::default()).expect_err("newer");
    assert!(
        err.to_string().contains("newer than this build reads"),
        "{err}"
    );
}

fn ranker() -> cascade_gbdt::Model {
    let x: Vec<f32> = (0..400).map(|i| (i % 17) as f32).collect();
    let y: Vec<f32> = x
        .iter()
        .map(|&v| if v > 12.0 { 1.0 } else { 0.0 })
        .collect();
    let off: Vec<usize> = (0..=10).map(|q| q * 40).collect();
    let p = cascade_gbdt::Params {
        trees: 5,
        min_data_in_leaf: 5,
        ..Default::default()
    };
    let lists = cascade_gbdt::Lists::new(&x, 1, &y, &off);
    cascade_gbdt::train(&lists, None, &["f".to_string()], &p, &|_, _| {})
        .expect("train")
        .0
}

#[test]
fn the_ranker_travels_with_the_bundle_and_a_damaged_one_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut b = bundle("v-ranker");
    let model = ranker();
    b.ranker = Some(model.clone());
    let dir = b.save(tmp.path()).expect("save");
    let loaded = Bundle::load(&dir, AnnConfig::default()).expect("load");
    let got = loaded.ranker.expect("ranker");
    assert_eq!(got, model);
    for v in [0.0f32, 13.0, 16.0] {
        assert_eq!(got.predict(&[v]), model.predict(&[v]));
    }
    // Flip one byte of the model: the bundle is refused, naming the file.
    let path = dir.join("ranker.json");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let err = Bundle::load(&dir, AnnConfig::default()).expect_err("damaged");
    assert!(err.to_string().contains("ranker.json"), "{err}");
}
