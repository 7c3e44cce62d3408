//! A hello-world `wasi:http/incoming-handler`: every request gets 200 with the body
//! `hello`. The benchmark serves it on the test host next to the app to show what the
//! host and a fresh instance per request cost on their own.

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

/// The component's handler.
struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".to_owned(), b"text/plain".to_vec())])
            .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = body.write().expect("the stream is taken once");
        stream
            .blocking_write_and_flush(b"hello")
            .expect("the host accepts the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("the body is complete");
    }
}
