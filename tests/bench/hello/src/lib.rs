//! A hello-world `wasi:http/incoming-handler`: every request gets 200 with the body
//! `hello`. The benchmark serves it on the test host next to the app to show what the
//! host and a fresh instance per request cost on their own.
//!
//! `GET /chain/N` (N > 0) first calls `/chain/N-1` on itself by local service chaining
//! (`http://hello.spin.internal`) and answers with that answer's body: N + 1 fresh instances
//! and N chained calls per request, and no other work. The benchmark uses it for the
//! ceiling the shop's topology puts on its throughput (a placed order is several chained
//! instances).

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

wasip2::http::proxy::export!(Hello);

/// The component's handler.
struct Hello;

/// The host the component calls itself on.
const SELF_AUTHORITY: &str = "hello.spin.internal";

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let hops = request
            .path_with_query()
            .and_then(|path| path.strip_prefix("/chain/")?.parse::<u32>().ok())
            .unwrap_or(0);
        let (status, body) = if hops == 0 {
            (200, b"hello".to_vec())
        } else {
            match call_self(hops - 1) {
                Ok(body) => (200, body),
                Err(reason) => (502, reason.into_bytes()),
            }
        };
        let headers = Fields::from_list(&[("content-type".to_owned(), b"text/plain".to_vec())])
            .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).expect("a valid status");
        let outgoing = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = outgoing.write().expect("the stream is taken once");
        stream
            .blocking_write_and_flush(&body)
            .expect("the host accepts the body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("the body is complete");
    }
}

/// `GET http://hello.spin.internal/chain/{hops}`: the answer's body, or why there is none.
fn call_self(hops: u32) -> Result<Vec<u8>, String> {
    let request = OutgoingRequest::new(Fields::new());
    let path = format!("/chain/{hops}");
    request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(SELF_AUTHORITY)))
        .and_then(|()| request.set_path_with_query(Some(&path)))
        .map_err(|()| "cannot build the chained request".to_owned())?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no answer")?
        .map_err(|()| "answer taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    if response.status() != 200 {
        return Err(format!("chained call answered {}", response.status()));
    }
    let incoming = response.consume().map_err(|()| "body taken twice")?;
    let stream = incoming.stream().map_err(|()| "stream taken twice")?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok(body)
}
