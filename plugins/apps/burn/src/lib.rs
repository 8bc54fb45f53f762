//! Example app for deadlines and streams: `/burn` spins forever,
//! `/sleep?ms=N` sleeps N ms (monotonic clock), `/stream?kb=N` streams N KiB
//! of `x` in 4 KiB writes, `/compute-then-sleep?ms=N` computes 100 ms then
//! sleeps N ms, `/panic` traps, anything else answers `awake`.

use app_support::respond;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Burn;

wasip2::http::proxy::export!(Burn);

impl wasip2::exports::http::incoming_handler::Guest for Burn {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if path.starts_with("/panic") {
            panic!("the burn app was asked to panic");
        }
        if path.starts_with("/burn") {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        if let Some(kb) = path.strip_prefix("/stream?kb=").and_then(|n| n.parse::<usize>().ok()) {
            let response = OutgoingResponse::new(Fields::new());
            let Ok(body) = response.body() else { return };
            ResponseOutparam::set(out, Ok(response));
            if let Ok(stream) = body.write() {
                let chunk = [b'x'; 4096];
                for _ in 0..kb / 4 {
                    if stream.blocking_write_and_flush(&chunk).is_err() {
                        return;
                    }
                }
                drop(stream);
            }
            let _ = OutgoingBody::finish(body, None);
            return;
        }
        if let Some(ms) = path.strip_prefix("/compute-then-sleep?ms=").and_then(|n| n.parse::<u64>().ok()) {
            // Past a tick of computing, then waiting on a clock.
            let start = wasip2::clocks::monotonic_clock::now();
            let mut x: u64 = 1;
            while wasip2::clocks::monotonic_clock::now() - start < 100_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        if let Some(ms) = path.strip_prefix("/sleep?ms=").and_then(|n| n.parse::<u64>().ok()) {
            wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        respond(out, 200, "awake\n");
    }
}
