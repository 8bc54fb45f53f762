//! The router as an HTTP proxy against nginx, in front of the same fast
//! backend (see `common/versus_nginx.rs` for what each side does). One run,
//! printed; run with `cargo bench --bench router` (`cargo bench --bench
//! apps` runs it too, for its summary).

mod common;

#[tokio::main]
async fn main() {
    common::versus_nginx::measure(std::env::var_os("TORII_BENCH_HOLD").is_some()).await;
}
