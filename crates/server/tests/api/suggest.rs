//! Suggestions over HTTP: any word of a title, typos, kinds, the safety rules of the feed
//! (hidden, deleted, mature, hidden by the user, the surface's blocklist), changes to the
//! catalog reflected within a second, and bad parameters named.

use crate::*;
use reqwest::Method;

/// `(kind, id)` of each suggestion for `q`.
async fn suggest(s: &TestServer, q: &str) -> Vec<(String, String)> {
    let (st, body) = s.get(&format!("/v1/suggest?{q}")).await;
    assert_eq!(st, 200, "{q}: {body}");
    body["suggestions"]
        .as_array()
        .expect("suggestions")
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap_or_default().to_string(),
                x["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn has(v: &[(String, String)], kind: &str, id: &str) -> bool {
    v.iter().any(|(k, i)| k == kind && i == id)
}

/// Polls until `pred` holds for the suggestions of `q`, for at most `ms`; returns how long.
async fn within(
    s: &TestServer,
    q: &str,
    ms: u64,
    pred: impl Fn(&[(String, String)]) -> bool,
) -> u128 {
    let t = std::time::Instant::now();
    loop {
        if pred(&suggest(s, q).await) {
            return t.elapsed().as_millis();
        }
        assert!(
            t.elapsed().as_millis() < u128::from(ms),
            "{q}: not within {ms} ms"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_follow_the_catalog_and_never_show_what_the_feed_would_not() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = TestServer::start(tmp.path(), |c| {
        c.surfaces.get_mut("feed").expect("feed").blocklist.creators = vec!["c3".into()];
    })
    .await;
    seed_world(&s).await;
    let items = json!({"items": [
        {"id": "sw5", "title": "Star Wars: Episode V – The Empire Strikes Back", "categories": ["Science"], "creator_id": "lucas"},
        {"id": "amelie", "title": "Amélie", "categories": ["Comedy"], "creator_id": "jeunet"},
    ]});
    assert_eq!(s.post("/v1/items", items).await.0, 200);
    // A word inside the title, the last one being typed, diacritics and case folded.
    let got = suggest(&s, "q=empire%20strik").await;
    assert_eq!(
        got.first(),
        Some(&("item".to_string(), "sw5".to_string())),
        "{got:?}"
    );
    assert!(has(&suggest(&s, "q=AMELIE").await, "item", "amelie"));
    // One typo from four characters.
    assert!(has(&suggest(&s, "q=empyre").await, "item", "sw5"));
    // Kinds: categories and creators are suggested (from the next index build, within a
    // second), and only the kinds asked for.
    within(&s, "q=scien&kinds=category", 1000, |v| {
        has(v, "category", "Science")
    })
    .await;
    within(&s, "q=luc&kinds=creator", 1000, |v| !v.is_empty()).await;
    let only = suggest(&s, "q=luc&kinds=creator").await;
    assert_eq!(only, [("creator".to_string(), "lucas".to_string())]);
    // Hidden (i5) and mature (i6) items are never suggested; i7 is.
    let films = suggest(&s, "q=film&n=50&kinds=item").await;
    assert!(has(&films, "item", "i7") && !has(&films, "item", "i5") && !has(&films, "item", "i6"));
    // Mature only for users who opted in.
    let users = json!({"users": [{"id": "adult", "attributes": {"allow_mature": true}}]});
    assert_eq!(s.post("/v1/users", users).await.0, 200);
    assert!(has(
        &suggest(&s, "q=film%206&user_id=adult").await,
        "item",
        "i6"
    ));
    // What a user hid, and a creator a user hid, are not suggested to that user.
    let hide = json!({"events": [
        {"type": "hide", "user_id": "u1", "item_id": "i7"},
        {"type": "hide", "user_id": "u1", "creator_id": "lucas"},
    ]});
    assert_eq!(s.post("/v1/events", hide).await.0, 200);
    let u1 = suggest(&s, "q=film&n=50&user_id=u1").await;
    assert!(!has(&u1, "item", "i7") && has(&u1, "item", "i8"));
    assert!(!has(
        &suggest(&s, "q=empire&user_id=u1").await,
        "item",
        "sw5"
    ));
    assert!(has(
        &suggest(&s, "q=empire&user_id=u2").await,
        "item",
        "sw5"
    ));
    // The surface's blocklist (feed blocks creator c3: i3, i8, ...).
    let feed = suggest(&s, "q=film&n=50&surface=feed").await;
    assert!(!has(&feed, "item", "i3") && has(&feed, "item", "i4"));
    // Catalog changes: a hidden or deleted item goes with the next query; a new or renamed
    // one arrives within a second.
    let (st, _) = s
        .raw(Method::PATCH, "/v1/items/sw5", r#"{"hidden": true}"#)
        .await;
    assert_eq!(st, 200);
    assert!(!has(&suggest(&s, "q=empire").await, "item", "sw5"));
    assert_eq!(s.raw(Method::DELETE, "/v1/items/amelie", "").await.0, 200);
    assert!(!has(&suggest(&s, "q=amelie").await, "item", "amelie"));
    let new = json!({"items": [{"id": "nw", "title": "Nosferatu", "categories": ["Drama"]}]});
    assert_eq!(s.post("/v1/items", new).await.0, 200);
    let ms = within(&s, "q=nosfer", 1000, |v| has(v, "item", "nw")).await;
    eprintln!("new item suggested after {ms} ms");
    let (st, _) = s
        .raw(Method::PATCH, "/v1/items/i9", r#"{"title": "Metropolis"}"#)
        .await;
    assert_eq!(st, 200);
    within(&s, "q=metrop", 1000, |v| has(v, "item", "i9")).await;
    // ...and is no longer found by its old title.
    assert!(!has(&suggest(&s, "q=film%209").await, "item", "i9"));
    // Bad parameters are 400s naming the field; an unknown surface is 404.
    for (q, field) in [
        ("q=", "q"),
        ("q=%20%20", "q"),
        ("q=film&n=0", "n"),
        ("q=film&n=51", "n"),
        ("q=film&kinds=item,song", "kinds"),
        ("q=film&colour=red", "colour"),
    ] {
        let (st, body) = s.get(&format!("/v1/suggest?{q}")).await;
        assert_eq!(st, 400, "{q}: {body}");
        assert_eq!(body["error"]["field"], field, "{q}: {body}");
    }
    let (st, body) = s.get("/v1/suggest").await;
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (400, Some("q")),
        "{body}"
    );
    let (st, body) = s.get("/v1/suggest?q=film&surface=nope").await;
    assert_eq!(
        (st, body["error"]["field"].as_str()),
        (404, Some("surface")),
        "{body}"
    );
    s.stop().await;
}
