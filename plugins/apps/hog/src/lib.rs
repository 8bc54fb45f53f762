//! Example app for memory limits: `?mb=N` allocates and touches N MiB, then
//! answers how much it held.

use app_support::respond;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Hog;

wasip2::http::proxy::export!(Hog);

impl wasip2::exports::http::incoming_handler::Guest for Hog {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let mb: usize = path.split_once("mb=").and_then(|(_, n)| n.parse().ok()).unwrap_or(1);
        let mut held: Vec<Vec<u8>> = Vec::new();
        for _ in 0..mb {
            held.push(vec![1u8; 1 << 20]);
        }
        let total: usize = held.iter().map(|v| std::hint::black_box(v).len()).sum();
        respond(out, 200, &format!("held {} MiB\n", total >> 20));
    }
}
