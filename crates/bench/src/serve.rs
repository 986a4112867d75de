//! A real server for a bench: the engine opened on a configuration and served on a free
//! loopback port, with the handle to stop it.

pub type Started = (
    std::sync::Arc<cascade_server::Engine>,
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), cascade_server::RuntimeError>>,
);

/// Opens an engine and serves it on a free port.
pub async fn start(cfg: cascade_server::Config) -> anyhow::Result<Started> {
    let engine = cascade_server::Engine::open_async(cfg.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cascade_server::serve(
        engine.clone(),
        &cfg,
        listener,
        async {
            let _ = stop_rx.await;
        },
    ));
    Ok((engine, base, stop_tx, server))
}
