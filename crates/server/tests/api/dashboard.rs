//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver with fantoccini) against a real server with API keys: the login,
//! every page, live figures equal to the API's, activate and roll back, an editorial edit,
//! screenshots saved under `target/dashboard-screenshots/`. Runs where chromedriver is
//! installed (`.ci/run` installs it and sets `CASCADE_TEST_CHROMEDRIVER`, which makes a
//! missing driver a failure, not a skip).

use super::models::{save_bundle, touch};
use super::{TestServer, seed_world};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "dashboard-admin-key-1";
const READ: &str = "dashboard-read-key-1";

fn chromedriver() -> Option<String> {
    let wanted = std::env::var("CASCADE_TEST_CHROMEDRIVER").ok();
    let path = wanted
        .clone()
        .unwrap_or_else(|| "/usr/bin/chromedriver".to_string());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        wanted.is_none(),
        "CASCADE_TEST_CHROMEDRIVER={path} does not exist"
    );
    eprintln!("no chromedriver: skipping the browser test (.ci/run installs it)");
    None
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Waits until the page has rendered `page` (and, if given, `css` exists).
async fn page(c: &Client, page: &str, css: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = c
            .execute(
                "const m = document.getElementById('main');
                 return m.getAttribute('data-page') === arguments[0]
                   && (arguments[1] === null || !!document.querySelector(arguments[1]));",
                vec![json!(page), json!(css)],
            )
            .await
            .expect("script");
        if ok == json!(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "page {page} ({css:?}) never rendered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

async fn admin_get(s: &TestServer, path: &str) -> Value {
    let r = s
        .client
        .get(format!("{}{path}", s.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200, "{path}");
    r.json().await.expect("json")
}

async fn active(s: &TestServer) -> String {
    let m = admin_get(s, "/v1/admin/models").await;
    m["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|x| x["active"] == true)
        .and_then(|x| x["version"].as_str())
        .expect("an active model")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_apis_figures_and_drives_models_and_editorial() {
    let Some(driver) = chromedriver() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    // A world and two bundles, written while the server is open; then served with keys.
    let s = TestServer::start(tmp.path(), |_| {}).await;
    seed_world(&s).await;
    let a = save_bundle(&s, None);
    touch(&s, 1).await;
    let b = save_bundle(&s, None);
    assert_ne!(a, b);
    s.stop().await;
    let s = TestServer::start(tmp.path(), |c| {
        c.auth.admin_keys = vec![ADMIN.into()];
        c.auth.read_keys = vec![READ.into()];
        c.faults.enabled = true;
    })
    .await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let _driver = Driver(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = tempfile::tempdir().expect("profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())]}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let c = loop {
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        match builder
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver: {e}"),
        }
    };

    // Without the admin key every data call is refused, and the page asks for the key.
    c.goto(&format!("{}/dashboard#/overview", s.base))
        .await
        .expect("goto");
    let status = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/admin/metrics/history').then((r) => done(r.status));",
            vec![],
        )
        .await
        .expect("fetch");
    assert_eq!(status, json!(401));
    let key = c
        .wait()
        .for_element(Locator::Css("#login[open] #login-key"))
        .await
        .expect("login");
    // A read key is refused and said so; the admin key signs in.
    key.send_keys(READ).await.expect("type");
    click(&c, "#login-submit").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&c, "#login-error").await.contains("admin key") {
        assert!(Instant::now() < deadline, "a read key was not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = c.find(Locator::Css("#login-key")).await.expect("key");
    key.send_keys(ADMIN).await.expect("type");
    click(&c, "#login-submit").await;
    page(&c, "overview", Some("[data-kpi=events]")).await;
    let url = c.current_url().await.expect("url").to_string();
    assert!(!url.contains(ADMIN), "the key is never in a URL: {url}");

    // Overview: the figures are the API's; the live charts fill as samples arrive.
    for k in 0..6 {
        let (st, _) = s
            .get(&format!("/v1/recommendations/home?user_id=u{k}&n=5"))
            .await;
        assert_eq!(st, 401, "reads need a key here");
        let r = s
            .client
            .get(format!(
                "{}/v1/recommendations/home?user_id=u{k}&n=5",
                s.base
            ))
            .bearer_auth(READ)
            .send()
            .await
            .expect("recs");
        assert_eq!(r.status().as_u16(), 200);
    }
    let health = s.get("/healthz").await.1;
    assert_eq!(
        text(&c, "[data-kpi=items]").await,
        health["items"].to_string()
    );
    assert_eq!(
        text(&c, "[data-kpi=users]").await,
        health["users"].to_string()
    );
    // Traffic while a few samples accumulate (one per 2 s), so the charts draw lines.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for k in 0..5 {
            let surface = ["home", "feed"][k % 2];
            let _ = s
                .client
                .get(format!(
                    "{}/v1/recommendations/{surface}?user_id=u{k}&n=5",
                    s.base
                ))
                .bearer_auth(READ)
                .send()
                .await;
        }
        let hist = admin_get(&s, "/v1/admin/metrics/history").await;
        let samples = hist["samples"].as_array().expect("samples");
        let served = samples.len() >= 4
            && samples
                .iter()
                .any(|x| x["surfaces"]["home"]["per_s"].as_f64() > Some(0.0));
        let shown = c
            .find_all(Locator::Css("[data-chart='Latency home (ms)'] polyline"))
            .await
            .expect("chart")
            .len();
        if served && shown == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the overview never charted the served requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load_ms = c
        .execute(
            "return performance.getEntriesByType('navigation')[0].duration;",
            vec![],
        )
        .await
        .expect("timing")
        .as_f64()
        .expect("ms");
    assert!(load_ms < 1000.0, "the page took {load_ms} ms to load");
    eprintln!("dashboard load: {load_ms:.0} ms");
    shot(&c, "overview").await;

    // Models: activate the inactive bundle, then roll back, each confirmed.
    c.goto(&format!("{}/dashboard#/models", s.base))
        .await
        .expect("goto");
    page(&c, "models", Some("#models [data-version]")).await;
    let before = active(&s).await;
    let other = if before == a { b.clone() } else { a.clone() };
    let row = format!("#models tr[data-version='{other}']");
    click(&c, &format!("{row} button.activate")).await;
    c.accept_alert().await.expect("confirm");
    page(&c, "models", Some(&format!("{row} [data-active=true]"))).await;
    assert_eq!(active(&s).await, other);
    shot(&c, "models").await;
    click(&c, "#rollback").await;
    c.accept_alert().await.expect("confirm");
    page(
        &c,
        "models",
        Some(&format!(
            "#models tr[data-version='{before}'] [data-active=true]"
        )),
    )
    .await;
    assert_eq!(active(&s).await, before);

    // Drift: one row per signal of the API.
    c.goto(&format!("{}/dashboard#/drift", s.base))
        .await
        .expect("goto");
    page(&c, "drift", Some("#signals")).await;
    let drift = admin_get(&s, "/v1/admin/drift?window_s=300").await;
    let rows = c
        .find_all(Locator::Css("#signals tr[data-signal]"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), drift["signals"].as_array().map_or(0, Vec::len));
    // A signal with bins opens its reference-vs-live histogram, every bin of it.
    if let Some(sig) = drift["signals"].as_array().and_then(|v| {
        v.iter()
            .find(|s| s["bins"].as_array().is_some_and(|b| b.len() > 1))
    }) {
        let name = sig["name"].as_str().expect("name");
        click(&c, &format!("#signals tr[data-signal='{name}']")).await;
        page(&c, "drift", Some("#histogram")).await;
        let rows = c.find_all(Locator::Css("#bins tr")).await.expect("bins");
        assert_eq!(rows.len(), 1 + sig["bins"].as_array().map_or(0, Vec::len));
        shot(&c, "drift").await;
    }

    // Experiments: none configured here, and the page says so.
    c.goto(&format!("{}/dashboard#/experiments", s.base))
        .await
        .expect("goto");
    page(&c, "experiments", None).await;
    assert!(text(&c, "#main").await.contains("No experiment"));

    // A user: profile and history as the API reads them back, live lists per surface.
    c.goto(&format!("{}/dashboard#/users/u4", s.base))
        .await
        .expect("goto");
    page(&c, "users", Some("[data-surface=home] [data-item]")).await;
    let u = admin_get(&s, "/v1/users/u4").await;
    assert!(
        text(&c, "#profile")
            .await
            .contains(&format!("{} items interacted with", u["interacted_items"]))
    );
    let events = admin_get(&s, "/v1/users/u4/events?n=30").await;
    let rows = c.find_all(Locator::Css("#history tr")).await.expect("rows");
    assert_eq!(rows.len(), events["events"].as_array().map_or(0, Vec::len));
    for surface in ["home", "feed"] {
        let items = c
            .find_all(Locator::Css(&format!(
                "[data-surface={surface}] [data-item]"
            )))
            .await
            .expect("items");
        assert_eq!(items.len(), 10, "{surface}");
    }
    assert!(!text(&c, "[data-surface=home] .reason").await.is_empty());
    shot(&c, "user").await;

    // An item: its counts are the API's.
    c.goto(&format!("{}/dashboard#/items/i3", s.base))
        .await
        .expect("goto");
    page(&c, "items", Some("[data-count=likes]")).await;
    let it = admin_get(&s, "/v1/items/i3").await;
    assert_eq!(
        text(&c, "[data-count=likes]").await,
        it["counts"]["likes"].to_string()
    );
    let src = admin_get(&s, "/v1/admin/items/i3/sources").await;
    let popular = text(&c, "#sources [data-source=popular]").await;
    match src["popular"]["rank"].as_u64() {
        Some(r) => assert!(popular.contains(&format!("#{r} of")), "{popular}"),
        None => assert!(popular.contains("not in"), "{popular}"),
    }
    let similar = text(&c, "#sources [data-source=similar]").await;
    assert!(similar.contains(&format!("{} neighbours", src["covisitation_neighbors"])));
    shot(&c, "item").await;

    // Catalog: create a curated list, then edit its title.
    c.goto(&format!("{}/dashboard#/catalog", s.base))
        .await
        .expect("goto");
    page(&c, "catalog", Some("#editorial-form")).await;
    for (name, value) in [
        ("id", "dash-picks"),
        ("title", "Picked on the dashboard"),
        ("items", "i1, i2"),
    ] {
        c.find(Locator::Css(&format!("#editorial-form [name={name}]")))
            .await
            .expect("field")
            .send_keys(value)
            .await
            .expect("type");
    }
    click(&c, "#editorial-form button[type=submit]").await;
    page(&c, "catalog", Some("#editorial tr[data-list=dash-picks]")).await;
    let lists = admin_get(&s, "/v1/admin/editorial").await;
    let saved = lists["lists"]
        .as_array()
        .expect("lists")
        .iter()
        .find(|l| l["id"] == "dash-picks")
        .cloned()
        .expect("saved");
    assert_eq!(saved["items"], json!(["i1", "i2"]));
    click(&c, "#editorial tr[data-list=dash-picks] button").await;
    let title = c
        .find(Locator::Css("#editorial-form [name=title]"))
        .await
        .expect("title");
    title.clear().await.expect("clear");
    title
        .send_keys("Edited on the dashboard")
        .await
        .expect("type");
    click(&c, "#editorial-form button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lists = admin_get(&s, "/v1/admin/editorial").await;
        if lists["lists"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["title"] == "Edited on the dashboard"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the edit never reached the API");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page(&c, "catalog", Some("#faults")).await;
    shot(&c, "catalog").await;
    c.close().await.expect("close");
    s.stop().await;
}
